"""The trainer's replay: a bounded store of accepted segments and the training windows built from them."""
from __future__ import annotations

import random
import sys
from collections import deque

from pzstream.stream import wire

SEGMENT_OBJECT_BYTES = 1024  # a decoded segment's header, lists and array objects, beside their contents


def segment_nbytes(seg: wire.Segment) -> int:
    """Bytes a decoded segment holds: its strings as Python objects (a one-character candidate
    costs ~50 bytes, so this can be many times the frame's size), its arrays' elements, and a
    fixed allowance for the objects around them."""
    strings = sum(sys.getsizeof(s) for column in (seg.observations, seg.candidates, seg.action_text) for s in column)
    arrays = sum(a.nbytes for a in (seg.cand_offsets, seg.action_index, seg.reward, seg.score, seg.done, seg.visits,
                                    seg.prior, seg.root_value))
    lists = 8 * (2 * len(seg.observations) + len(seg.candidates))  # the lists' pointers
    return strings + arrays + lists + SEGMENT_OBJECT_BYTES + len(seg.header.game) + len(seg.header.collector_id)


class SegmentReplay:
    """The trainer's bounded store of segments and the training windows built from them.

    Bounded twice: at most ``capacity_steps`` steps and ``capacity_bytes`` bytes
    (``segment_nbytes``); beyond either the oldest segments go (counted in ``evicted_steps``,
    ``evicted_bytes`` and ``evicted_for_bytes``). The newest segment always stays, so one
    segment larger than the byte cap is kept alone. The windows of the last rebuild may still
    hold evicted segments' data until the next one (the trainer rebuilds every few updates).

    Windows are rebuilt from the stored segments when new data has arrived (stitching episodes
    across segments); a window is usable once its n-step value target is complete: its
    episode has ended or enough later steps exist.
    """

    def __init__(self, capacity_steps: int, capacity_bytes: int | None = None):
        if capacity_steps < 1 or (capacity_bytes is not None and capacity_bytes < 1):
            raise ValueError(f"replay capacities must be >= 1 (steps {capacity_steps}, bytes {capacity_bytes})")
        self.capacity_steps = capacity_steps
        self.capacity_bytes = capacity_bytes
        self.segments: deque[wire.Segment] = deque()
        self._sizes: deque[int] = deque()
        self.steps = 0
        self.nbytes = 0
        self.evicted_steps = 0
        self.evicted_bytes = 0
        self.evicted_for_bytes = 0  # segments that went for the byte cap (the step cap alone would have kept them)
        self.windows: list = []
        self._dirty = False

    def add(self, seg: wire.Segment) -> None:
        size = segment_nbytes(seg)
        self.segments.append(seg)
        self._sizes.append(size)
        self.steps += seg.n_steps
        self.nbytes += size
        while len(self.segments) > 1 and (self.steps > self.capacity_steps or self._over_bytes()):
            self.evicted_for_bytes += self.steps <= self.capacity_steps
            old, old_size = self.segments.popleft(), self._sizes.popleft()
            self.steps -= old.n_steps
            self.nbytes -= old_size
            self.evicted_steps += old.n_steps
            self.evicted_bytes += old_size
        self._dirty = True

    def _over_bytes(self) -> bool:
        return self.capacity_bytes is not None and self.nbytes > self.capacity_bytes

    def rebuild(self, wm_cfg) -> None:
        from pzstream.model.targets import build_windows

        if not self._dirty:
            return
        horizon = wm_cfg.td_steps + wm_cfg.unroll_steps
        self.windows = [w for w in build_windows(list(self.segments), wm_cfg)
                        if bool(w.episode.done[-1]) or w.t0 + horizon < len(w.episode)]
        self._dirty = False

    def sample(self, n: int, rng: random.Random) -> list:
        return [self.windows[rng.randrange(len(self.windows))] for _ in range(n)]
