"""The trainer's replay: a bounded store of accepted segments and the training windows built from them."""
from __future__ import annotations

import random
from collections import deque

from pzstream.stream import wire


class SegmentReplay:
    """The trainer's bounded store of segments and the training windows built from them.

    Windows are rebuilt from the stored segments when new data has arrived (stitching episodes
    across segments); a window is usable once its n-step value target is complete: its
    episode has ended or enough later steps exist.
    """

    def __init__(self, capacity_steps: int):
        self.capacity_steps = capacity_steps
        self.segments: deque[wire.Segment] = deque()
        self.steps = 0
        self.evicted_steps = 0
        self.windows: list = []
        self._dirty = False

    def add(self, seg: wire.Segment) -> None:
        self.segments.append(seg)
        self.steps += seg.n_steps
        while self.steps > self.capacity_steps and len(self.segments) > 1:
            old = self.segments.popleft()
            self.steps -= old.n_steps
            self.evicted_steps += old.n_steps
        self._dirty = True

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
