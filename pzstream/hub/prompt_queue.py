"""Replay storage on the hub: a bounded buffer of game segments, per game and overall."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from pzstream.stream.wire import Segment


@dataclass
class GameShelf:
    """What the buffer holds and has evicted for one game."""

    segments: int = 0
    steps: int = 0
    evicted_segments: int = 0
    evicted_steps: int = 0


@dataclass
class ReplayBuffer:
    """Segments in arrival order, evicting the oldest (of any game) beyond ``capacity_steps``.

    Eviction is counted per game, never silent.
    """

    capacity_steps: int
    _fifo: deque[Segment] = field(default_factory=deque)
    shelves: dict[str, GameShelf] = field(default_factory=dict)
    steps: int = 0

    def __post_init__(self) -> None:
        if self.capacity_steps < 1:
            raise ValueError("capacity_steps must be >= 1")

    def add(self, seg: Segment) -> None:
        shelf = self.shelves.setdefault(seg.header.game, GameShelf())
        self._fifo.append(seg)
        shelf.segments += 1
        shelf.steps += seg.n_steps
        self.steps += seg.n_steps
        while self.steps > self.capacity_steps and len(self._fifo) > 1:
            old = self._fifo.popleft()
            gone = self.shelves[old.header.game]
            gone.segments -= 1
            gone.steps -= old.n_steps
            gone.evicted_segments += 1
            gone.evicted_steps += old.n_steps
            self.steps -= old.n_steps

    def __len__(self) -> int:
        return len(self._fifo)

    def segments(self, game: str | None = None) -> list[Segment]:
        """Stored segments, oldest first, optionally of one game."""
        return [s for s in self._fifo if game is None or s.header.game == game]

    def summary(self) -> dict[str, object]:
        return {
            "segments": len(self._fifo),
            "steps": self.steps,
            "capacity_steps": self.capacity_steps,
            "per_game": {g: vars(s).copy() for g, s in sorted(self.shelves.items())},
        }


@dataclass
class PromptQueue:
    """The hub's bounded queue of PPO prompt samples (``pzstream.orz.samples.PromptSample``).

    ``add`` never blocks: beyond ``capacity`` the oldest samples are evicted and counted.
    ``ready`` says the queue holds ``fire_threshold`` samples; ``take`` then hands out
    ``n`` of them drawn uniformly (so an episode mixes games in proportion to the stream) and
    empties the queue, counting the rest as ``skipped``: each episode learns from fresh data.
    """

    capacity: int
    fire_threshold: int
    _items: deque = field(default_factory=deque)
    added: int = 0
    evicted: int = 0
    taken: int = 0
    skipped: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.fire_threshold <= self.capacity:
            raise ValueError(f"need 1 <= fire_threshold ({self.fire_threshold}) <= capacity ({self.capacity})")

    def add(self, sample: object) -> None:
        self._items.append(sample)
        self.added += 1
        if len(self._items) > self.capacity:
            self._items.popleft()
            self.evicted += 1

    def __len__(self) -> int:
        return len(self._items)

    def ready(self) -> bool:
        return len(self._items) >= self.fire_threshold

    def take(self, n: int, rng) -> list:
        """``n`` samples drawn without replacement (all if fewer), oldest first; the queue is emptied."""
        items = list(self._items)
        self._items.clear()
        picked = sorted(rng.sample(range(len(items)), min(n, len(items))))
        self.taken += len(picked)
        self.skipped += len(items) - len(picked)
        return [items[i] for i in picked]

    def summary(self) -> dict[str, int]:
        return {"size": len(self._items), "added": self.added, "evicted": self.evicted, "taken": self.taken,
                "skipped": self.skipped, "capacity": self.capacity, "fire_threshold": self.fire_threshold}
