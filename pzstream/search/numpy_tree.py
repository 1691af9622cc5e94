"""Batched MuZero tree search in numpy: the project's own backend.

The B trees live in dense arrays indexed ``[root, node]`` (and ``[root, node, slot]``
for per-child data). Node 0 is each root; the node expanded by simulation ``s`` is
node ``s + 1``; one extra node, ``SENTINEL = num_simulations + 1``, stands for every
child that has not been expanded yet and always has zero statistics, so "read the
statistics of all children of a node" is one gather with no special cases.

Arithmetic deliberately mirrors LightZero's C++ tree (``ctree_muzero``) so that the
two backends visit exactly the same nodes:

* statistics are float32 and combined in the same order as the C++ code (sums over
  children are sequential, hence ``cumsum`` rather than ``sum``, whose pairwise
  summation rounds differently);
* the root starts with one visit and a zero value sum (LightZero's ``prepare``); the
  exploration term uses ``visits(parent) - 1``, which is the sum of the children's
  visits, so a node's first descent sees a zero exploration term for every child and
  picks by Q alone; ties go to the lowest slot (the LightZero wrapper pins its random
  tie-break to the same rule);
* an unvisited child's Q is the "parent mean Q": at the root the mean Q of its
  visited children; below the root ``(parent_q + sum of visited children's Q) /
  (number visited + 1)`` where ``parent_q`` is that quantity at the node above;
* Q bounds for min-max normalisation are per tree, updated with
  ``reward(node) + discount * value(node)`` for every node of each backed-up path
  (the root included, with reward 0); the normalised value term is clipped to [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .types import RecurrentFn, SearchConfig

_F32 = np.float32
# LightZero's min-max statistics start from these bounds (``cminimax.h``); with
# max < min nothing is normalised until the first update.
_BOUND_INIT_MAX = _F32(-1000000.0)
_BOUND_INIT_MIN = _F32(1000000.0)


@dataclass(frozen=True)
class TreeResult:
    """What a backend hands back to ``run_search``.

    visit_counts: int32 [B, K]; root_value: float32 [B]; q_values: float32 [B, K].
    """

    visit_counts: np.ndarray
    root_value: np.ndarray
    q_values: np.ndarray


def masked_softmax(logits: np.ndarray, legal: np.ndarray) -> np.ndarray:
    """float32 [R, K] softmax over the legal slots of each row (0 elsewhere).

    Summed sequentially in slot order, like LightZero's ``CNode::expand``.
    """
    x = np.where(legal, logits, -np.inf).astype(_F32)
    x = x - x.max(axis=1, keepdims=True)
    e = np.where(legal, np.exp(x), _F32(0.0)).astype(_F32)
    total = np.cumsum(e, axis=1, dtype=_F32)[:, -1:]
    return (e / total).astype(_F32)


def _normaliser(lo: np.ndarray, hi: np.ndarray, delta_floor: np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (offset, scale) [R] so that (q - offset) / scale is LightZero's normalisation.

    Bounds with no spread yet (max <= min) leave q unchanged: offset 0, scale 1, which
    is exact in float32. A spread below delta_floor is replaced by delta_floor.
    """
    delta = hi - lo
    spread = delta > 0
    offset = np.where(spread, lo, _F32(0.0))
    scale = np.where(spread, np.maximum(delta, delta_floor), _F32(1.0))
    return offset[:, None], scale[:, None]


def search_numpy(
    root_logits: np.ndarray,
    noise: np.ndarray | None,
    legal: np.ndarray,
    root_handle: np.ndarray,
    recurrent_fn: RecurrentFn,
    config: SearchConfig,
) -> TreeResult:
    """Run ``config.num_simulations`` simulations on B trees.

    root_logits: float32 [B, K] root prior logits (already the overridden prior's logs
                 when a root_prior was given); softmaxed over ``legal``.
    noise:       float32 [B, K] Dirichlet noise (0 on illegal slots) or None.
    legal:       bool [B, K]; the candidate set at every depth of a root's tree.
    root_handle: int64 [B].
    """
    num_roots, num_slots = root_logits.shape
    num_sims = config.num_simulations
    sentinel = num_sims + 1
    num_nodes = num_sims + 2
    gamma = _F32(config.discount)
    c1, c2 = _F32(config.pb_c_init), _F32(config.pb_c_base)
    delta_floor = _F32(config.value_delta_max)
    rows_all = np.arange(num_roots)
    # Added to pUCT scores: -inf keeps illegal slots out of every argmax.
    illegal_penalty = np.where(legal, _F32(0.0), _F32(-np.inf))

    children = np.full((num_roots, num_nodes, num_slots), sentinel, dtype=np.int32)
    prior = np.zeros((num_roots, num_nodes, num_slots), dtype=_F32)
    visits = np.zeros((num_roots, num_nodes), dtype=np.int32)
    value_sum = np.zeros((num_roots, num_nodes), dtype=_F32)
    reward = np.zeros((num_roots, num_nodes), dtype=_F32)
    handle = np.zeros((num_roots, num_nodes), dtype=np.int64)
    q_lo = np.full(num_roots, _BOUND_INIT_MIN, dtype=_F32)
    q_hi = np.full(num_roots, _BOUND_INIT_MAX, dtype=_F32)

    root_prior = masked_softmax(root_logits, legal)
    if noise is not None:
        frac = _F32(config.root_noise_fraction)
        root_prior = (root_prior * (_F32(1.0) - frac) + noise.astype(_F32) * frac).astype(_F32)
    prior[:, 0] = np.where(legal, root_prior, _F32(0.0))
    visits[:, 0] = 1  # LightZero's prepare() counts the root's own evaluation as a visit
    handle[:, 0] = root_handle

    # A path is at most num_sims + 1 nodes long (root plus one new node per simulation).
    path = np.zeros((num_roots, num_sims + 1), dtype=np.int32)

    for sim in range(num_sims):
        # --- selection: descend every tree until an unexpanded child is chosen.
        node = np.zeros(num_roots, dtype=np.int32)
        parent_q = np.zeros(num_roots, dtype=_F32)
        path_len = np.ones(num_roots, dtype=np.int32)
        leaf_parent = np.zeros(num_roots, dtype=np.int32)
        leaf_action = np.zeros(num_roots, dtype=np.int64)
        active = rows_all
        depth = 0
        while active.size:
            act_node = node[active]
            kids = children[active, act_node]  # [R, K]
            r2 = active[:, None]
            n_kid = visits[r2, kids]
            visited = n_kid > 0  # illegal slots are never expanded, so never visited
            # Unvisited children read the sentinel's zero value sum; dividing by
            # max(n, 1) leaves their value at 0 like LightZero's CNode::value().
            kid_q = reward[r2, kids] + gamma * (value_sum[r2, kids] / np.maximum(n_kid, 1).astype(_F32))
            q_total = np.cumsum(np.where(visited, kid_q, _F32(0.0)), axis=1)[:, -1]
            n_visited = visited.sum(axis=1).astype(_F32)
            mean_q = (parent_q[active] + q_total) / (n_visited + _F32(1.0))
            if depth == 0:  # the root averages its visited children only (if it has any)
                mean_q = np.where(n_visited > 0, q_total / np.maximum(n_visited, _F32(1.0)), mean_q)
            parent_q[active] = mean_q

            n_parent = (visits[active, act_node] - 1).astype(_F32)[:, None]
            pb_c = np.log((n_parent + c2 + _F32(1.0)) / c2) + c1
            pb_c = pb_c * (np.sqrt(n_parent) / (n_kid + 1).astype(_F32))
            offset, scale = _normaliser(q_lo[active], q_hi[active], delta_floor)
            value_score = (np.where(visited, kid_q, mean_q[:, None]) - offset) / scale
            value_score = np.minimum(np.maximum(value_score, _F32(0.0)), _F32(1.0))  # np.clip is slower
            score = (pb_c * prior[active, act_node] + value_score) + illegal_penalty[active]
            action = np.argmax(score, axis=1)  # first maximum = lowest slot among ties

            nxt = kids[np.arange(active.size), action]
            is_leaf = nxt == sentinel
            leaves = active[is_leaf]
            leaf_parent[leaves] = act_node[is_leaf]
            leaf_action[leaves] = action[is_leaf]
            inner = active[~is_leaf]
            node[inner] = nxt[~is_leaf]
            path[inner, path_len[inner]] = nxt[~is_leaf]
            path_len[inner] += 1
            active = inner
            depth += 1

        # --- expansion: one model call for the B new children.
        out = recurrent_fn(handle[rows_all, leaf_parent], leaf_action)
        new = sim + 1
        children[rows_all, leaf_parent, leaf_action] = new
        reward[:, new] = np.asarray(out.reward, dtype=_F32).reshape(num_roots)
        prior[:, new] = masked_softmax(np.asarray(out.prior_logits, dtype=_F32), legal)
        handle[:, new] = np.asarray(out.handle, dtype=np.int64).reshape(num_roots)
        path[rows_all, path_len] = new
        path_len += 1

        # --- backup: leaf to root, discounting rewards on the way up.
        bootstrap = np.asarray(out.value, dtype=_F32).reshape(num_roots).copy()
        for d in range(int(path_len.max()) - 1, -1, -1):
            on = np.nonzero(path_len > d)[0]
            nd = path[on, d]
            value_sum[on, nd] += bootstrap[on]
            visits[on, nd] += 1
            node_q = (reward[on, nd] + gamma * (value_sum[on, nd] / visits[on, nd].astype(_F32))).astype(_F32)
            q_hi[on] = np.maximum(q_hi[on], node_q)
            q_lo[on] = np.minimum(q_lo[on], node_q)
            bootstrap[on] = reward[on, nd] + gamma * bootstrap[on]

    kids = children[:, 0]  # [B, K]
    r2 = rows_all[:, None]
    visit_counts = np.where(legal, visits[r2, kids], 0).astype(np.int32)
    safe_n = np.maximum(visit_counts, 1).astype(_F32)
    q_values = np.where(visit_counts > 0, reward[r2, kids] + gamma * (value_sum[r2, kids] / safe_n), _F32(0.0))
    root_value = value_sum[:, 0] / _F32(num_sims)
    return TreeResult(visit_counts=visit_counts, root_value=root_value.astype(_F32), q_values=q_values.astype(_F32))
