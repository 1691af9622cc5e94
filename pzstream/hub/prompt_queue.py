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
    # bytes cap: a queued sequence's ``nbytes`` (a segment's frame) counts while any of it is queued;
    # beyond the cap the oldest sequences go whole (counted in ``evicted`` and ``evicted_for_bytes``)
    capacity_bytes: int | None = None
    _bytes: int = 0
    evicted_for_bytes: int = 0

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
        self._bytes += getattr(items, "nbytes", 0)
        self.added += n
        self._evict_beyond_capacity()

    def _evict_beyond_capacity(self) -> None:
        while self._size > self.capacity:
            oldest = self._chunks[0]
            drop = min(self._size - self.capacity, len(oldest[0]) - oldest[1])
            oldest[1] += drop
            self._size -= drop
            self.evicted += drop
            if oldest[1] == len(oldest[0]):
                self._bytes -= getattr(self._chunks.popleft()[0], "nbytes", 0)
        while self.capacity_bytes is not None and self._bytes > self.capacity_bytes and len(self._chunks) > 1:
            items, first = self._chunks.popleft()
            self._size -= len(items) - first
            self.evicted += len(items) - first
            self.evicted_for_bytes += len(items) - first
            self._bytes -= getattr(items, "nbytes", 0)

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
        self._size = self._bytes = 0
        self.taken += len(picked)
        self.skipped += size - len(picked)
        return out

    def snapshot(self) -> tuple[list[tuple[object, int]], dict[str, int]]:
        """What a checkpoint keeps: the queued chunks as (sequence, index of its oldest item still
        queued), oldest first, and the counters."""
        return ([(items, first) for items, first in self._chunks],
                {"added": self.added, "evicted": self.evicted, "taken": self.taken, "skipped": self.skipped})

    def restore(self, chunks: list[tuple[object, int]], counters: dict[str, int]) -> None:
        """Put back a ``snapshot`` (into this queue's capacity: the oldest beyond it are evicted)."""
        self._chunks.clear()
        self._size = self._bytes = 0
        for items, first in chunks:
            if not 0 <= first < len(items):
                raise ValueError(f"a queued chunk of {len(items)} items cannot start at {first}")
            self._chunks.append([items, first])
            self._size += len(items) - first
            self._bytes += getattr(items, "nbytes", 0)
        self.added, self.evicted = int(counters["added"]), int(counters["evicted"])
        self.taken, self.skipped = int(counters["taken"]), int(counters["skipped"])
        self._evict_beyond_capacity()

    def summary(self) -> dict[str, int]:
        return {"size": self._size, "added": self.added, "evicted": self.evicted, "taken": self.taken,
                "skipped": self.skipped, "capacity": self.capacity, "fire_threshold": self.fire_threshold,
                "bytes": self._bytes, "evicted_for_bytes": self.evicted_for_bytes}
