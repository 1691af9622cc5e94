"""Synthetic segments for the world-model tests."""
from __future__ import annotations

import numpy as np

from pzstream.stream.wire import Segment, SegmentHeader


def make_segment(rewards, dones=None, root_values=None, *, episode_id=0, step0=0, collector="c0", k=3,
                 game="g", tag="") -> Segment:
    t = len(rewards)
    dones = np.zeros(t, bool) if dones is None else np.asarray(dones, bool)
    root = np.full(t, np.nan, np.float32) if root_values is None else np.asarray(root_values, np.float32)
    offsets = np.arange(t + 1, dtype=np.int32) * k
    cands = [f"act{j} s{step0 + i}{tag}" for i in range(t) for j in range(k)]
    idx = np.array([i % k for i in range(t)], np.int32)
    visits = np.full(t * k, 1.0 / k, np.float32)
    header = SegmentHeader(game=game, collector_id=collector, seq=0, episode_id=episode_id, step0=step0,
                           wm_version=0, llm_version=0, t_start=0.0, t_end=0.0)
    return Segment(header=header, observations=[f"room {step0 + i}{tag}" for i in range(t)], cand_offsets=offsets,
                   candidates=cands, action_index=idx, action_text=[cands[i * k + idx[i]] for i in range(t)],
                   reward=np.asarray(rewards, np.float32), score=np.zeros(t, np.int32), done=dones,
                   visits=visits, prior=visits.copy(), root_value=root)
