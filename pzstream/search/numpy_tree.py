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


@dataclass
class _Forest:
    """The B trees' arrays, ``[root, node]`` (``[root, node, slot]`` per child); see the module docstring.

    ``path[b, :path_len[b]]`` is the node path of root b's current simulation.
    """

    children: np.ndarray  # int32 [B, N, K]: child node per slot, the sentinel where unexpanded
    prior: np.ndarray  # float32 [B, N, K]
    visits: np.ndarray  # int32 [B, N]
    value_sum: np.ndarray  # float32 [B, N]
    reward: np.ndarray  # float32 [B, N]
    handle: np.ndarray  # int64 [B, N]: the model state of each node
    q_lo: np.ndarray  # float32 [B]: min-max bounds of the tree's Q
    q_hi: np.ndarray
    path: np.ndarray  # int32 [B, num_sims + 1]
    path_len: np.ndarray  # int32 [B]


def _plant(root_prior: np.ndarray, legal: np.ndarray, root_handle: np.ndarray, num_sims: int) -> _Forest:
    """B trees of one expanded root each (LightZero's prepare(): the root counts one visit)."""
    num_roots, num_slots = root_prior.shape
    num_nodes = num_sims + 2  # the roots, one node per simulation, the sentinel
    forest = _Forest(
        children=np.full((num_roots, num_nodes, num_slots), num_sims + 1, dtype=np.int32),
        prior=np.zeros((num_roots, num_nodes, num_slots), dtype=_F32),
        visits=np.zeros((num_roots, num_nodes), dtype=np.int32),
        value_sum=np.zeros((num_roots, num_nodes), dtype=_F32),
        reward=np.zeros((num_roots, num_nodes), dtype=_F32),
        handle=np.zeros((num_roots, num_nodes), dtype=np.int64),
        q_lo=np.full(num_roots, _BOUND_INIT_MIN, dtype=_F32),
        q_hi=np.full(num_roots, _BOUND_INIT_MAX, dtype=_F32),
        path=np.zeros((num_roots, num_sims + 1), dtype=np.int32),  # a path is at most num_sims + 1 nodes
        path_len=np.ones(num_roots, dtype=np.int32),
    )
    forest.prior[:, 0] = np.where(legal, root_prior, _F32(0.0))
    forest.visits[:, 0] = 1
    forest.handle[:, 0] = root_handle
    return forest


def _select(f: _Forest, illegal_penalty: np.ndarray, config: SearchConfig) -> tuple[np.ndarray, np.ndarray]:
    """Descend every tree by pUCT until an unexpanded child is chosen; set ``f.path``/``f.path_len``.

    Returns (leaf_parent int32 [B], leaf_action int64 [B]): the node and slot to expand in each tree.
    """
    num_roots = f.visits.shape[0]
    sentinel = f.visits.shape[1] - 1
    gamma, c1, c2 = _F32(config.discount), _F32(config.pb_c_init), _F32(config.pb_c_base)
    delta_floor = _F32(config.value_delta_max)
    node = np.zeros(num_roots, dtype=np.int32)
    parent_q = np.zeros(num_roots, dtype=_F32)
    f.path_len[:] = 1
    leaf_parent = np.zeros(num_roots, dtype=np.int32)
    leaf_action = np.zeros(num_roots, dtype=np.int64)
    active = np.arange(num_roots)
    depth = 0
    while active.size:
        act_node = node[active]
        kids = f.children[active, act_node]  # [R, K]
        r2 = active[:, None]
        n_kid = f.visits[r2, kids]
        visited = n_kid > 0  # illegal slots are never expanded, so never visited
        # Unvisited children read the sentinel's zero value sum; dividing by
        # max(n, 1) leaves their value at 0 like LightZero's CNode::value().
        kid_q = f.reward[r2, kids] + gamma * (f.value_sum[r2, kids] / np.maximum(n_kid, 1).astype(_F32))
        q_total = np.cumsum(np.where(visited, kid_q, _F32(0.0)), axis=1)[:, -1]
        n_visited = visited.sum(axis=1).astype(_F32)
        mean_q = (parent_q[active] + q_total) / (n_visited + _F32(1.0))
        if depth == 0:  # the root averages its visited children only (if it has any)
            mean_q = np.where(n_visited > 0, q_total / np.maximum(n_visited, _F32(1.0)), mean_q)
        parent_q[active] = mean_q

        n_parent = (f.visits[active, act_node] - 1).astype(_F32)[:, None]
        pb_c = np.log((n_parent + c2 + _F32(1.0)) / c2) + c1
        pb_c = pb_c * (np.sqrt(n_parent) / (n_kid + 1).astype(_F32))
        offset, scale = _normaliser(f.q_lo[active], f.q_hi[active], delta_floor)
        value_score = (np.where(visited, kid_q, mean_q[:, None]) - offset) / scale
        value_score = np.minimum(np.maximum(value_score, _F32(0.0)), _F32(1.0))  # np.clip is slower
        score = (pb_c * f.prior[active, act_node] + value_score) + illegal_penalty[active]
        action = np.argmax(score, axis=1)  # first maximum = lowest slot among ties

        nxt = kids[np.arange(active.size), action]
        is_leaf = nxt == sentinel
        leaves = active[is_leaf]
        leaf_parent[leaves] = act_node[is_leaf]
        leaf_action[leaves] = action[is_leaf]
        inner = active[~is_leaf]
        node[inner] = nxt[~is_leaf]
        f.path[inner, f.path_len[inner]] = nxt[~is_leaf]
        f.path_len[inner] += 1
        active = inner
        depth += 1
    return leaf_parent, leaf_action


def _expand(f: _Forest, new: int, leaf_parent: np.ndarray, leaf_action: np.ndarray, out, legal: np.ndarray) -> None:
    """Node ``new`` of every tree becomes the chosen leaf, holding the model's answer ``out``."""
    num_roots = f.visits.shape[0]
    rows = np.arange(num_roots)
    f.children[rows, leaf_parent, leaf_action] = new
    f.reward[:, new] = np.asarray(out.reward, dtype=_F32).reshape(num_roots)
    f.prior[:, new] = masked_softmax(np.asarray(out.prior_logits, dtype=_F32), legal)
    f.handle[:, new] = np.asarray(out.handle, dtype=np.int64).reshape(num_roots)
    f.path[rows, f.path_len] = new
    f.path_len += 1


def _backup(f: _Forest, leaf_value: np.ndarray, gamma: np.float32) -> None:
    """Leaf to root along ``f.path``: add the discounted return to each node, widen the Q bounds."""
    bootstrap = np.asarray(leaf_value, dtype=_F32).reshape(-1).copy()
    for d in range(int(f.path_len.max()) - 1, -1, -1):
        on = np.nonzero(f.path_len > d)[0]
        nd = f.path[on, d]
        f.value_sum[on, nd] += bootstrap[on]
        f.visits[on, nd] += 1
        node_q = (f.reward[on, nd] + gamma * (f.value_sum[on, nd] / f.visits[on, nd].astype(_F32))).astype(_F32)
        f.q_hi[on] = np.maximum(f.q_hi[on], node_q)
        f.q_lo[on] = np.minimum(f.q_lo[on], node_q)
        bootstrap[on] = f.reward[on, nd] + gamma * bootstrap[on]


def _harvest(f: _Forest, legal: np.ndarray, gamma: np.float32, num_sims: int) -> TreeResult:
    """The roots' visit counts, mean backed-up values and children's Q."""
    kids = f.children[:, 0]  # [B, K]
    r2 = np.arange(kids.shape[0])[:, None]
    visit_counts = np.where(legal, f.visits[r2, kids], 0).astype(np.int32)
    safe_n = np.maximum(visit_counts, 1).astype(_F32)
    q_values = np.where(visit_counts > 0, f.reward[r2, kids] + gamma * (f.value_sum[r2, kids] / safe_n), _F32(0.0))
    root_value = f.value_sum[:, 0] / _F32(num_sims)
    return TreeResult(visit_counts=visit_counts, root_value=root_value.astype(_F32), q_values=q_values.astype(_F32))


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
    num_sims = config.num_simulations
    gamma = _F32(config.discount)
    root_prior = masked_softmax(root_logits, legal)
    if noise is not None:
        frac = _F32(config.root_noise_fraction)
        root_prior = (root_prior * (_F32(1.0) - frac) + noise.astype(_F32) * frac).astype(_F32)
    forest = _plant(root_prior, legal, root_handle, num_sims)
    # Added to pUCT scores: -inf keeps illegal slots out of every argmax.
    illegal_penalty = np.where(legal, _F32(0.0), _F32(-np.inf))
    for sim in range(num_sims):
        leaf_parent, leaf_action = _select(forest, illegal_penalty, config)
        out = recurrent_fn(forest.handle[np.arange(len(leaf_parent)), leaf_parent], leaf_action)  # one call, B leaves
        _expand(forest, sim + 1, leaf_parent, leaf_action, out, legal)
        _backup(forest, out.value, gamma)
    return _harvest(forest, legal, gamma, num_sims)
