"""Segments -> training windows -> padded tensor batches (pure functions, no model).

Segments of one episode (same game, collector_id, episode_id) are first
stitched into `Episode`s in step0 order, so a window may cross segment
boundaries; a gap (a missing segment) starts a new Episode, because steps on
either side of it are not consecutive.  A `Window` is (episode, t0): the
unroll covers steps t0..t0+U, the context the C steps before t0.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..stream.wire import Segment
from .config import WorldModelConfig


@dataclass(frozen=True, eq=False)
class Episode:
    """L consecutive steps of one episode, stitched from segments.

    step0: episode step index of row 0; candidates[t] / visits[t]: step t's
    candidate texts / visit distribution (float32 [K_t]); done[t]: the episode
    ended after step t (only ever the last row); value_target float32 [L]:
    n-step targets (filled by `build_windows`).
    """

    key: tuple[str, str, int]  # (game, collector_id, episode_id)
    step0: int
    observations: list[str]
    candidates: list[list[str]]
    action_index: np.ndarray
    action_text: list[str]
    reward: np.ndarray
    done: np.ndarray
    visits: list[np.ndarray]
    root_value: np.ndarray
    value_target: np.ndarray

    def __len__(self) -> int:
        return len(self.observations)


@dataclass(frozen=True, eq=False)
class Window:
    episode: Episode
    t0: int


@dataclass(frozen=True, eq=False)
class Batch:
    """B windows as tensors.  S = C + U + 1 steps, the unroll is steps C..C+U.

    texts: unique strings of the batch (index 0 is ""); obs_idx long [B, S] and
    act_idx long [B, S-1]: indices into texts; step_valid bool [B, S]: the step
    exists (not missing history, not past the episode/chunk end);
    cand_idx long [B, U+1, K], cand_mask bool [B, U+1, K]: candidates of the
    unroll steps; visits float32 [B, U+1, K]: target policy (0 on padding);
    action long [B, U+1]: chosen candidate (-1 where the step is missing);
    reward float32 [B, U]; value_target float32 [B, U+1].
    """

    texts: tuple[str, ...]
    obs_idx: torch.Tensor
    act_idx: torch.Tensor
    step_valid: torch.Tensor
    cand_idx: torch.Tensor
    cand_mask: torch.Tensor
    visits: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    value_target: torch.Tensor

    @property
    def unroll_valid(self) -> torch.Tensor:
        """bool [B, U+1]: the unroll step exists."""
        return self.step_valid[:, self.step_valid.shape[1] - self.value_target.shape[1]:]

    def to(self, device: str | torch.device) -> "Batch":
        return Batch(self.texts, *(getattr(self, f).to(device) for f in (
            "obs_idx", "act_idx", "step_valid", "cand_idx", "cand_mask", "visits", "action", "reward",
            "value_target")))


# ----------------------------------------------------------------- stitching


def stitch(segments: Sequence[Segment]) -> list[Episode]:
    """Group segments by episode, order by step0, drop duplicates, join consecutive ones."""
    groups: dict[tuple[str, str, int], list[Segment]] = defaultdict(list)
    for s in segments:
        groups[(s.header.game, s.header.collector_id, s.header.episode_id)].append(s)
    out: list[Episode] = []
    for key, segs in groups.items():
        segs.sort(key=lambda s: s.header.step0)
        run: list[Segment] = []
        for s in segs:
            end = run[-1].header.step0 + run[-1].n_steps if run else None
            if run and s.header.step0 < end:
                continue  # a duplicate (resent segment) or an overlap: keep what we have
            if run and (s.header.step0 != end or bool(run[-1].done[-1])):
                out.append(_join(key, run))
                run = []
            run.append(s)
        if run:
            out.append(_join(key, run))
    return out


def _join(key: tuple[str, str, int], segs: list[Segment]) -> Episode:
    cands, visits = [], []
    for s in segs:
        off = s.cand_offsets
        for t in range(s.n_steps):
            cands.append(list(s.candidates[off[t]:off[t + 1]]))
            visits.append(np.asarray(s.visits[off[t]:off[t + 1]], dtype=np.float32))
    cat = lambda name, dt: np.concatenate([np.asarray(getattr(s, name), dtype=dt) for s in segs])  # noqa: E731
    n = sum(s.n_steps for s in segs)
    return Episode(key=key, step0=segs[0].header.step0,
                   observations=[o for s in segs for o in s.observations], candidates=cands,
                   action_index=cat("action_index", np.int64), action_text=[a for s in segs for a in s.action_text],
                   reward=cat("reward", np.float32), done=cat("done", bool), visits=visits,
                   root_value=cat("root_value", np.float32), value_target=np.zeros(n, np.float32))


# ----------------------------------------------------------------- value targets


def n_step_values(reward: np.ndarray, done: np.ndarray, bootstrap: np.ndarray, n: int, discount: float) -> np.ndarray:
    """n-step returns over one stitched chunk: reward, done, bootstrap [L] -> z float32 [L].

    z_t = sum_{i<m} discount^i r_{t+i} + discount^m bootstrap_{t+m}, m = n, except:
    - an episode end (done) at t+i < t+n: sum rewards through t+i, no bootstrap;
    - the chunk ends (no done) before t+n: m = L-1-t, bootstrap from the last step
      (its reward is not yet part of the sum: it belongs after the bootstrap state).
    """
    big_l = len(reward)
    z = np.zeros(big_l, np.float64)
    for t in range(big_l):
        acc = 0.0
        for m in range(n):
            j = t + m
            if j == big_l - 1 and not done[j]:
                z[t] = acc + discount ** m * float(bootstrap[j])  # chunk cut: bootstrap at the last step
                break
            acc += discount ** m * float(reward[j])
            if done[j]:
                z[t] = acc
                break
        else:  # n rewards summed without reaching the chunk's last step, so t + n < L
            z[t] = acc + discount ** n * float(bootstrap[t + n])
    return z.astype(np.float32)


def root_value_bootstrap(ep: Episode) -> np.ndarray:
    """Default bootstrap: the search's root value where finite, else 0."""
    return np.nan_to_num(ep.root_value, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def build_windows(segments: Sequence[Segment], cfg: WorldModelConfig,
                  value_fn: Callable[[Episode], np.ndarray] | None = None) -> list[Window]:
    """Every step of every stitched episode starts one window; fills Episode.value_target.

    value_fn(episode) -> float32 [L] bootstrap values (e.g. from a target model);
    default `root_value_bootstrap`.
    """
    windows = []
    for ep in stitch(segments):
        boot = (value_fn or root_value_bootstrap)(ep)
        ep.value_target[:] = n_step_values(ep.reward, ep.done, boot, cfg.td_steps, cfg.discount)
        windows.extend(Window(ep, t) for t in range(len(ep)))
    return windows


# ----------------------------------------------------------------- collate


def collate(windows: Sequence[Window], cfg: WorldModelConfig) -> Batch:
    """Pad B windows into a Batch; candidates beyond cfg.max_candidates are dropped (visits renormalised)."""
    c, u = cfg.context_steps, cfg.unroll_steps
    s_len, b = c + u + 1, len(windows)
    k = 1
    for w in windows:
        for t in range(w.t0, min(w.t0 + u + 1, len(w.episode))):
            k = max(k, min(len(w.episode.candidates[t]), cfg.max_candidates))
    index: dict[str, int] = {"": 0}
    idx = lambda text: index.setdefault(text, len(index))  # noqa: E731
    obs_idx = np.zeros((b, s_len), np.int64)
    act_idx = np.zeros((b, s_len - 1), np.int64)
    step_valid = np.zeros((b, s_len), bool)
    cand_idx = np.zeros((b, u + 1, k), np.int64)
    cand_mask = np.zeros((b, u + 1, k), bool)
    visits = np.zeros((b, u + 1, k), np.float32)
    action = np.full((b, u + 1), -1, np.int64)
    reward = np.zeros((b, u), np.float32)
    value = np.zeros((b, u + 1), np.float32)
    for j, w in enumerate(windows):
        ep = w.episode
        for s in range(s_len):
            i = w.t0 - c + s
            if not 0 <= i < len(ep):
                continue
            step_valid[j, s] = True
            obs_idx[j, s] = idx(ep.observations[i])
            if s < s_len - 1:
                act_idx[j, s] = idx(ep.action_text[i])
            t = s - c
            if t < 0:
                continue
            cands = ep.candidates[i][:k]
            cand_idx[j, t, :len(cands)] = [idx(x) for x in cands]
            cand_mask[j, t, :len(cands)] = True
            v = ep.visits[i][:k]
            visits[j, t, :len(v)] = v / max(float(v.sum()), 1e-8)
            a = int(ep.action_index[i])
            action[j, t] = a if a < k else -1
            value[j, t] = ep.value_target[i]
            if t < u:
                reward[j, t] = ep.reward[i]
    return Batch(texts=tuple(index), obs_idx=torch.from_numpy(obs_idx), act_idx=torch.from_numpy(act_idx),
                 step_valid=torch.from_numpy(step_valid), cand_idx=torch.from_numpy(cand_idx),
                 cand_mask=torch.from_numpy(cand_mask), visits=torch.from_numpy(visits),
                 action=torch.from_numpy(action), reward=torch.from_numpy(reward),
                 value_target=torch.from_numpy(value))
