"""The world model as the search sees it: root and recurrent functions over opaque int64 handles.

A handle names one imagined state: the token inputs that lead to it, the
transformer's KV cache over them, and the root whose candidate list the
imagined tree reuses (an imagined text state has no valid-action list of its
own).  A recurrent step therefore costs two single-token transformer passes
(the action token, then the predicted next latent) on top of the parent's
cache, batched over parents of different depths by padding the caches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from .support import logits_to_scalar
from .targets import Episode
from .world_model import KV, WorldModel


class RootOutput(NamedTuple):
    """prior_logits float32 [B, K] (NEG on padding), value float32 [B], handle int64 [B], legal bool [B, K]."""

    prior_logits: np.ndarray
    value: np.ndarray
    handle: np.ndarray
    legal: np.ndarray


class RecurrentOutput(NamedTuple):
    """reward float32 [B], value float32 [B], prior_logits float32 [B, K] (root's candidates), handle int64 [B]."""

    reward: np.ndarray
    value: np.ndarray
    prior_logits: np.ndarray
    handle: np.ndarray


@dataclass(frozen=True)
class _Root:
    act: torch.Tensor     # [K, D] action tokens of the root's candidates
    keys: torch.Tensor    # [K, D] policy keys of the root's candidates


@dataclass(frozen=True)
class _Node:
    tokens: torch.Tensor  # [L, D] token inputs (kept to rebuild the cache when it outgrows max_tokens)
    valid: torch.Tensor   # bool [L] (missing history is masked)
    kv: KV                # per layer (k, v), each [H, L, D/H]
    root: _Root


class SearchAdapter:
    def __init__(self, model: WorldModel, device: str | torch.device = "cpu"):
        self.model = model
        self.cfg = model.cfg
        self.device = torch.device(device)
        self._nodes: dict[int, _Node] = {}
        self._next = 0

    def reset(self) -> None:
        """Forget every handle (call after each search)."""
        self._nodes.clear()
        self._next = 0

    def node_tokens(self, handle: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(token inputs [L, D], valid bool [L]) of a handle: for checking the cache against a full forward."""
        n = self._nodes[int(handle)]
        return n.tokens, n.valid

    def _store(self, node: _Node) -> int:
        h = self._next
        self._next += 1
        self._nodes[h] = node
        return h

    def _heads(self, h_obs: torch.Tensor, roots: Sequence[_Root]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """obs hidden [B, D] -> value [B], prior logits [B, K], legal [B, K] over each root's candidates."""
        b, d = h_obs.shape
        k = max(r.keys.shape[0] for r in roots)
        keys = h_obs.new_zeros(b, k, d)
        legal = torch.zeros(b, k, dtype=torch.bool, device=h_obs.device)
        for i, r in enumerate(roots):
            keys[i, :r.keys.shape[0]] = r.keys
            legal[i, :r.keys.shape[0]] = True
        m = self.model
        value = logits_to_scalar(m.value_logits(h_obs), self.cfg.value_support, self.cfg.h_eps)
        return value, m.policy_logits(h_obs, keys, legal), legal

    @torch.no_grad()
    def root(self, histories: Sequence[Sequence[tuple[str, str]]], observations: Sequence[str],
             candidates: Sequence[Sequence[str]]) -> RootOutput:
        """Encode B real states; histories[b]: (observation, action_text) pairs before observations[b]."""
        m, cfg = self.model.eval(), self.cfg
        c, b = cfg.context_steps, len(observations)
        if not (len(histories) == len(candidates) == b) or any(len(x) == 0 for x in candidates):
            raise ValueError("root needs one history and a non-empty candidate list per observation")
        hists = [list(hh)[len(hh) - c:] if c else [] for hh in histories]
        cands = [list(cc)[:cfg.max_candidates] for cc in candidates]
        texts = list(dict.fromkeys([o for hh in hists for o, _ in hh] + [a for hh in hists for _, a in hh]
                                   + list(observations) + [x for cc in cands for x in cc]))
        at = {t: i for i, t in enumerate(texts)}
        obs_lat, act_tok, keys = m.embed_texts(texts)
        n_tok = 2 * c + 1
        x = obs_lat.new_zeros(b, n_tok, cfg.latent_dim)
        valid = torch.zeros(b, n_tok, dtype=torch.bool, device=x.device)
        for i, hh in enumerate(hists):
            first = 2 * (c - len(hh))  # history is right-aligned so the root sits at slot 2C
            for j, (o, a) in enumerate(hh):
                x[i, first + 2 * j] = obs_lat[at[o]]
                x[i, first + 2 * j + 1] = act_tok[at[a]]
            x[i, -1] = obs_lat[at[observations[i]]]
            valid[i, first:] = True
        h, kv = m.transformer(x, torch.arange(n_tok, device=x.device), valid)
        roots = [_Root(act=act_tok[[at[t] for t in cc]], keys=keys[[at[t] for t in cc]]) for cc in cands]
        value, prior, legal = self._heads(h[:, -1], roots)
        handles = [self._store(_Node(x[i], valid[i], [(k[i], v[i]) for k, v in kv], roots[i])) for i in range(b)]
        return RootOutput(prior.float().cpu().numpy(), value.float().cpu().numpy(),
                          np.asarray(handles, dtype=np.int64), legal.cpu().numpy())

    def _trimmed(self, node: _Node) -> _Node:
        """A node whose cache has no room for two more tokens, rebuilt on its last C pairs + obs at slots 0..2C."""
        keep = 2 * self.cfg.context_steps + 1
        tokens, valid = node.tokens[-keep:], node.valid[-keep:]
        _, kv = self.model.transformer(tokens[None], torch.arange(keep, device=tokens.device), valid[None])
        return _Node(tokens, valid, [(k[0], v[0]) for k, v in kv], node.root)

    @torch.no_grad()
    def recurrent(self, parent_handles: np.ndarray, actions: np.ndarray) -> RecurrentOutput:
        """Imagine one step from each parent; actions[b] indexes the candidate list of the parent's root."""
        m, cfg = self.model.eval(), self.cfg
        parents = [self._nodes[int(h)] for h in np.asarray(parent_handles).reshape(-1)]
        acts = [int(a) for a in np.asarray(actions).reshape(-1)]
        if len(acts) != len(parents):
            raise ValueError(f"{len(parents)} parent handles but {len(acts)} actions")
        parents = [p if p.tokens.shape[0] + 2 <= cfg.max_tokens else self._trimmed(p) for p in parents]
        for p, a in zip(parents, acts):
            if not 0 <= a < p.root.act.shape[0]:
                raise ValueError(f"action {a} outside the root's {p.root.act.shape[0]} candidates")
        b, lens = len(parents), [p.tokens.shape[0] for p in parents]
        lmax = max(lens)
        # right-pad the parents' caches to lmax; the padding is masked as keys
        past: KV = []
        for layer in range(cfg.n_layers):
            ks, vs = [], []
            for p, n in zip(parents, lens):
                k, v = p.kv[layer]
                ks.append(torch.nn.functional.pad(k, (0, 0, 0, lmax - n)))
                vs.append(torch.nn.functional.pad(v, (0, 0, 0, lmax - n)))
            past.append((torch.stack(ks), torch.stack(vs)))
        valid = torch.zeros(b, lmax + 2, dtype=torch.bool, device=self.device)
        for i, p in enumerate(parents):
            valid[i, :lens[i]] = p.valid
        valid[:, lmax:] = True
        pos = torch.tensor(lens, device=self.device)[:, None]
        a_tok = torch.stack([p.root.act[a] for p, a in zip(parents, acts)])[:, None]   # [B, 1, D]
        h_a, kv = m.transformer(a_tok, pos, valid[:, :lmax + 1], past)
        reward = logits_to_scalar(m.reward_logits(h_a[:, 0]), cfg.reward_support, cfg.h_eps)
        z = m.next_latent(h_a)                                                        # [B, 1, D]
        h_o, kv = m.transformer(z, pos + 1, valid, kv)
        roots = [p.root for p in parents]
        value, prior, _ = self._heads(h_o[:, 0], roots)
        handles = []
        for i, (p, n) in enumerate(zip(parents, lens)):
            idx = torch.cat([torch.arange(n), torch.tensor([lmax, lmax + 1])]).to(self.device)
            handles.append(self._store(_Node(
                tokens=torch.cat([p.tokens, a_tok[i], z[i]]), valid=torch.cat([p.valid, valid[i, lmax:]]),
                kv=[(k[i][:, idx], v[i][:, idx]) for k, v in kv], root=p.root)))
        return RecurrentOutput(reward.float().cpu().numpy(), value.float().cpu().numpy(),
                               prior.float().cpu().numpy(), np.asarray(handles, dtype=np.int64))


def model_value_fn(model: WorldModel, chunk: int = 64) -> Callable[[Episode], np.ndarray]:
    """A `build_windows` value_fn: bootstrap values from `model` (e.g. the trainer's target model).

    Each step's value is the model's root value given that step's real history
    (up to context_steps pairs before it, within the stitched chunk).
    """
    def values(ep: Episode) -> np.ndarray:
        adapter, c, out = SearchAdapter(model), model.cfg.context_steps, []
        for s in range(0, len(ep), chunk):
            steps = range(s, min(s + chunk, len(ep)))
            hist = [[(ep.observations[i], ep.action_text[i]) for i in range(max(0, t - c), t)] for t in steps]
            out.append(adapter.root(hist, [ep.observations[t] for t in steps], [ep.candidates[t] for t in steps]).value)
            adapter.reset()
        return np.concatenate(out).astype(np.float32)

    return values
