"""The hub's bounded queue of PPO prompt samples."""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class PromptQueue:
    """The hub's bounded queue of PPO prompt samples (``pzstream.orz.samples.PromptSample``).

    ``add`` never blocks: beyond ``capacity`` the oldest samples are evicted and counted.
    ``ready`` says the queue holds ``fire_threshold`` samples; ``take`` then hands out
    ``n`` of them drawn uniformly (so an episode mixes games in proportion to the stream) and
    empties the queue, counting the rest as ``skipped``: each episode learns from fresh data.

    ``extend`` queues a whole sequence at once (``len`` and ``[i]``, e.g. a segment's
    ``SegmentSteps``): only the items ``take`` picks are ever read, so a sample that is built
    on access costs nothing while it waits or when it is evicted or skipped.
    """

    capacity: int
    fire_threshold: int
    _chunks: deque = field(default_factory=deque)  # [sequence, index of its oldest item still queued]
    _size: int = 0
    added: int = 0
    evicted: int = 0
    taken: int = 0
    skipped: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.fire_threshold <= self.capacity:
            raise ValueError(f"need 1 <= fire_threshold ({self.fire_threshold}) <= capacity ({self.capacity})")

    def add(self, sample: object) -> None:
        self.extend((sample,))

    def extend(self, items: Sequence) -> None:
        n = len(items)
        if not n:
            return
        self._chunks.append([items, 0])
        self._size += n
        self.added += n
        while self._size > self.capacity:
            oldest = self._chunks[0]
            drop = min(self._size - self.capacity, len(oldest[0]) - oldest[1])
            oldest[1] += drop
            self._size -= drop
            self.evicted += drop
            if oldest[1] == len(oldest[0]):
                self._chunks.popleft()

    def __len__(self) -> int:
        return self._size

    def ready(self) -> bool:
        return self._size >= self.fire_threshold

    def take(self, n: int, rng) -> list:
        """``n`` samples drawn without replacement (all if fewer), oldest first; the queue is emptied."""
        size = self._size
        picked = sorted(rng.sample(range(size), min(n, size)))
        out, base, chunks = [], 0, iter(self._chunks)
        items, first = next(chunks, (None, 0))
        for i in picked:
            while i >= base + len(items) - first:
                base += len(items) - first
                items, first = next(chunks)
            out.append(items[first + i - base])
        self._chunks.clear()
        self._size = 0
        self.taken += len(picked)
        self.skipped += size - len(picked)
        return out

    def summary(self) -> dict[str, int]:
        return {"size": self._size, "added": self.added, "evicted": self.evicted, "taken": self.taken,
                "skipped": self.skipped, "capacity": self.capacity, "fire_threshold": self.fire_threshold}
