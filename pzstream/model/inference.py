"""The world model as the search sees it: root and recurrent functions over opaque int64 handles.

A handle names one imagined state: the token inputs that lead to it, the
transformer's KV cache over them, and the root whose candidate list the
imagined tree reuses (an imagined text state has no valid-action list of its
own).  A recurrent step therefore costs two single-token transformer passes
(the action token, then the predicted next latent) on top of the parent's
cache, batched over parents of different depths by padding the caches: the
children's rows of the node store get one copy of their parents' caches, and
the passes write the new keys and values there and attend to them in place
(``WorldModel.extend``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from .graphs import step_graphs
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


class SearchAdapter:
    """Root and recurrent steps of the world model for the search, batched over roots.

    Every node of a search lives in one preallocated store (token inputs, key mask, length,
    root, and each layer's keys and values, all ``[capacity, max_tokens, ...]``), so a
    recurrent step gathers its parents' caches and writes its children's with a few indexed
    copies whatever the batch size; nothing per node runs in Python. The store is kept
    (and grown by doubling) across searches; ``reset`` only forgets the handles.
    Invariant: a node's ``valid`` is False at and after its length (stale keys stay masked).
    """

    def __init__(self, model: WorldModel, device: str | torch.device = "cpu", graphs: bool = False):
        self.model = model
        self.cfg = model.cfg
        self.device = torch.device(device)
        self._n = 0        # nodes in use; handles are 0 .. _n - 1
        self._cap = 0
        self._roots = 0    # roots in use
        self._root_cap = 0
        self._lens = np.zeros(0, dtype=np.int64)
        self._root_host = np.zeros(0, dtype=np.int64)  # _root_of on the host: a step looks it up without a device sync
        self.graphs = step_graphs(self, graphs)  # the recurrent step as CUDA graphs (search.cuda_graphs)

    def reset(self) -> None:
        """Forget every handle (call after each search)."""
        self._n = 0
        self._roots = 0

    def node_tokens(self, handle: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(token inputs [L, D], valid bool [L]) of a handle: for checking the cache against a full forward."""
        h = self._check(np.asarray([handle]))[0]
        n = int(self._lens[h])
        return self._tokens[h, :n], self._valid[h, :n]

    # ---------------------------------------------------------------- the node store

    def _check(self, handles: np.ndarray) -> np.ndarray:
        h = np.asarray(handles, dtype=np.int64).reshape(-1)
        if h.size and (h.min() < 0 or h.max() >= self._n):
            raise KeyError(f"unknown search handle(s) {h[(h < 0) | (h >= self._n)].tolist()[:4]} (reset since?)")
        return h

    def _grow_nodes(self, need: int) -> None:
        if self._n + need <= self._cap:
            return
        cap = max(64, 2 * self._cap, self._n + need)
        cfg, dev, dt = self.cfg, self.device, self._dtype()
        t, d, hh = cfg.max_tokens, cfg.latent_dim, cfg.n_heads

        def grown(old: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            new = torch.zeros((cap, *shape), dtype=dtype, device=dev)
            if old is not None and self._n:
                new[:self._n] = old[:self._n]
            return new

        first = self._cap == 0
        self._tokens = grown(None if first else self._tokens, (t, d), dt)
        self._valid = grown(None if first else self._valid, (t,), torch.bool)
        self._root_of = grown(None if first else self._root_of, (), torch.long)
        self._k = [grown(None if first else self._k[i], (hh, t, d // hh), dt) for i in range(cfg.n_layers)]
        self._v = [grown(None if first else self._v[i], (hh, t, d // hh), dt) for i in range(cfg.n_layers)]
        lens, root_host = np.zeros(cap, dtype=np.int64), np.zeros(cap, dtype=np.int64)
        lens[:self._n], root_host[:self._n] = self._lens[:self._n], self._root_host[:self._n]
        self._lens, self._root_host, self._cap = lens, root_host, cap

    def _grow_roots(self, need: int) -> None:
        if self._roots + need <= self._root_cap:
            return
        cap = max(16, 2 * self._root_cap, self._roots + need)
        k, d, dev, dt = self.cfg.max_candidates, self.cfg.latent_dim, self.device, self._dtype()
        act, keys = torch.zeros(cap, k, d, dtype=dt, device=dev), torch.zeros(cap, k, d, dtype=dt, device=dev)
        legal, n_cand = torch.zeros(cap, k, dtype=torch.bool, device=dev), np.zeros(cap, dtype=np.int64)
        if self._root_cap:
            act[:self._roots], keys[:self._roots] = self._act[:self._roots], self._keys[:self._roots]
            legal[:self._roots], n_cand[:self._roots] = self._legal[:self._roots], self._n_cand[:self._roots]
        self._act, self._keys, self._legal, self._n_cand, self._root_cap = act, keys, legal, n_cand, cap

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _alloc(self, b: int, lens: np.ndarray, root_of: np.ndarray) -> tuple[slice, np.ndarray]:
        """B new nodes of lengths ``lens`` under roots ``root_of``: their rows of the store and handles."""
        self._grow_nodes(b)
        n0 = self._n
        self._root_of[n0:n0 + b] = torch.as_tensor(root_of, device=self.device)
        self._root_host[n0:n0 + b] = root_of
        self._lens[n0:n0 + b] = np.asarray(lens)
        self._n += b
        return slice(n0, n0 + b), np.arange(n0, n0 + b, dtype=np.int64)

    def _put(self, tokens: torch.Tensor, valid: torch.Tensor, kv: KV, lens: np.ndarray,
             root_of: np.ndarray) -> np.ndarray:
        """Store B nodes whose first lens[b] positions are tokens/valid/kv[b, :lens[b]]: their handles."""
        b, length = tokens.shape[0], tokens.shape[1]
        new, handles = self._alloc(b, lens, root_of)
        self._tokens[new, :length] = tokens
        self._valid[new] = False
        lens_t = torch.as_tensor(np.asarray(lens), device=self.device)
        keep = torch.arange(length, device=self.device)[None] < lens_t[:, None]
        self._valid[new, :length] = valid & keep
        for i, (k, v) in enumerate(kv):
            self._k[i][new, :, :length] = k
            self._v[i][new, :, :length] = v
        return handles

    def _heads(self, h_obs: torch.Tensor, roots: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """obs hidden [B, D] -> value [B], prior logits [B, k], legal [B, k] over each root's candidates."""
        m = self.model
        legal = self._legal[roots, :k]
        value = logits_to_scalar(m.value_logits(h_obs), self.cfg.value_support, self.cfg.h_eps)
        return value, m.policy_logits(h_obs, self._keys[roots, :k], legal), legal

    def _eval(self) -> WorldModel:
        if self.model.training:
            self.model.eval()
        return self.model

    # ---------------------------------------------------------------- the search's two functions

    @torch.no_grad()
    def root(self, histories: Sequence[Sequence[tuple[str, str]]], observations: Sequence[str],
             candidates: Sequence[Sequence[str]]) -> RootOutput:
        """Encode B real states; histories[b]: (observation, action_text) pairs before observations[b]."""
        m, cfg = self._eval(), self.cfg
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
        slots_o, rows_o, slots_a, rows_a, valid_from = [], [], [], [], []
        for i, hh in enumerate(hists):
            first = 2 * (c - len(hh))  # history is right-aligned so the root sits at slot 2C
            for j, (o, a) in enumerate(hh):
                rows_o.append(i * n_tok + first + 2 * j)
                slots_o.append(at[o])
                rows_a.append(i * n_tok + first + 2 * j + 1)
                slots_a.append(at[a])
            rows_o.append(i * n_tok + n_tok - 1)
            slots_o.append(at[observations[i]])
            valid_from.append(first)
        dev = obs_lat.device
        x = obs_lat.new_zeros(b * n_tok, cfg.latent_dim)
        x[torch.tensor(rows_o, dtype=torch.long, device=dev)] = obs_lat[torch.tensor(slots_o, dtype=torch.long, device=dev)]
        if rows_a:
            x[torch.tensor(rows_a, dtype=torch.long, device=dev)] = act_tok[torch.tensor(slots_a, dtype=torch.long, device=dev)]
        x = x.view(b, n_tok, cfg.latent_dim)
        valid = torch.arange(n_tok, device=dev)[None] >= torch.tensor(valid_from, device=dev)[:, None]
        h, kv = m.transformer(x, torch.arange(n_tok, device=dev), valid)

        self._grow_roots(b)
        r0 = self._roots
        k = max(len(cc) for cc in cands)
        idx = torch.tensor([[at[t] for t in cc] + [0] * (k - len(cc)) for cc in cands], dtype=torch.long, device=dev)
        counts = torch.tensor([len(cc) for cc in cands], device=dev)
        legal = torch.arange(k, device=dev)[None] < counts[:, None]
        rows = slice(r0, r0 + b)
        self._act[rows], self._keys[rows] = 0, 0
        self._act[rows, :k] = act_tok[idx] * legal[..., None]
        self._keys[rows, :k] = keys[idx] * legal[..., None]
        self._legal[rows] = False
        self._legal[rows, :k] = legal
        self._n_cand[r0:r0 + b] = [len(cc) for cc in cands]
        self._roots += b
        roots = torch.arange(r0, r0 + b, device=dev)
        value, prior, legal = self._heads(h[:, -1], roots, k)
        handles = self._put(x, valid, kv, np.full(b, n_tok, dtype=np.int64), np.arange(r0, r0 + b, dtype=np.int64))
        return RootOutput(prior.float().cpu().numpy(), value.float().cpu().numpy(), handles, legal.cpu().numpy())

    def _trim(self, handles: np.ndarray) -> np.ndarray:
        """Nodes whose cache has no room for two more tokens, rebuilt on their last C pairs + obs at slots 0..2C."""
        keep = 2 * self.cfg.context_steps + 1
        lens = self._lens[handles]
        h = torch.as_tensor(handles, device=self.device)
        cols = torch.as_tensor(lens - keep, device=self.device)[:, None] + torch.arange(keep, device=self.device)[None]
        tokens = self._tokens[h[:, None], cols]
        valid = self._valid[h[:, None], cols]
        _, kv = self.model.transformer(tokens, torch.arange(keep, device=self.device), valid)
        return self._put(tokens, valid, kv, np.full(len(handles), keep, dtype=np.int64), self._root_host[handles])

    @torch.no_grad()
    def recurrent(self, parent_handles: np.ndarray, actions: np.ndarray) -> RecurrentOutput:
        """Imagine one step from each parent; actions[b] indexes the candidate list of the parent's root."""
        cfg, dev = self._eval().cfg, self.device
        handles = self._check(parent_handles).copy()
        acts = np.asarray(actions, dtype=np.int64).reshape(-1)
        if len(acts) != len(handles):
            raise ValueError(f"{len(handles)} parent handles but {len(acts)} actions")
        root_ids = self._root_host[handles]  # a trimmed node keeps its root
        n_cand = self._n_cand[root_ids]
        bad = (acts < 0) | (acts >= n_cand)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"action {acts[i]} outside the root's {n_cand[i]} candidates")
        full = self._lens[handles] + 2 > cfg.max_tokens
        if full.any():
            handles[full] = self._trim(handles[full])
        b, lens, k = len(handles), self._lens[handles], int(n_cand.max())
        new, handles_new = self._alloc(b, lens + 2, root_ids)
        if self.graphs is not None and self.graphs.fits(b):
            out = self.graphs.run(handles, acts, lens, handles_new)
        else:
            par, acts_t, lens_t = (torch.as_tensor(x, device=dev) for x in (handles, acts, lens))
            out = self.step(par, acts_t, lens_t, new, int(lens.max()), k)
        out = out[:, :2 + k].cpu().numpy()  # one copy back (one wait on the device a step)
        return RecurrentOutput(out[:, 0], out[:, 1], out[:, 2:], handles_new)

    def step(self, par: torch.Tensor, acts: torch.Tensor, lens: torch.Tensor, child: slice | torch.Tensor,
             width: int, k: int) -> torch.Tensor:
        """The device side of a recurrent step: the children of nodes ``par`` [P] by candidates ``acts`` [P]
        (parent lengths ``lens`` [P]) become the store's rows ``child``. Returns float32 [P, 2 + k]: reward,
        value and the prior logits over the first k candidates, side by side.

        Each child starts as its parent's first ``width`` (>= every lens) positions; the action and the
        imagined latent are written at lens and lens + 1 as the two passes run and are attended where they
        sit (by the mask). ``child`` a slice (fresh rows): the children are written in the store where they
        live, nothing concatenated or moved afterwards. ``child`` an index tensor (a captured graph's static
        inputs, ``graphs.StepGraphs``; width = max_tokens): they are built in gathered copies and put there."""
        m = self.model
        rows = torch.arange(par.shape[0], device=par.device)
        roots = self._root_of[par]
        a_tok = self._act[roots, acts]                                                # [P, D]
        if isinstance(child, slice):
            tokens, valid = self._tokens[child], self._valid[child]
            tokens[:, :width], valid[:, :width], valid[:, width:] = self._tokens[par, :width], self._valid[par, :width], False
            stores = [(ks[child], vs[child]) for ks, vs in zip(self._k, self._v)]
            for (kc, vc), ks, vs in zip(stores, self._k, self._v):
                kc[:, :, :width], vc[:, :, :width] = ks[par, :, :width], vs[par, :, :width]
        else:  # a parent's positions past its length are not valid (the store's invariant): copied as they are
            tokens, valid = self._tokens[par], self._valid[par]
            stores = [(ks[par], vs[par]) for ks, vs in zip(self._k, self._v)]
        tokens[rows, lens], valid[rows, lens] = a_tok, True
        h_a = m.extend(a_tok[:, None], lens[:, None], valid[:, :width + 1], stores, lens)
        reward = logits_to_scalar(m.reward_logits(h_a[:, 0]), self.cfg.reward_support, self.cfg.h_eps)
        z = m.next_latent(h_a)                                                        # [P, 1, D]
        tokens[rows, lens + 1], valid[rows, lens + 1] = z[:, 0], True
        h_o = m.extend(z, lens[:, None] + 1, valid[:, :width + 2], stores, lens + 1)
        value, prior, _ = self._heads(h_o[:, 0], roots, k)
        if not isinstance(child, slice):
            self._tokens.index_copy_(0, child, tokens)
            self._valid.index_copy_(0, child, valid)
            for (kc, vc), ks, vs in zip(stores, self._k, self._v):
                ks.index_copy_(0, child, kc)
                vs.index_copy_(0, child, vc)
        return torch.cat([reward.float()[:, None], value.float()[:, None], prior.float()], 1)


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
