"""``run_search``: the entry point. Validates inputs, prepares the root (prior, noise),
runs the chosen tree backend, and turns root visit counts into the policy and action.
"""
from __future__ import annotations

import numpy as np

from .lightzero_tree import search_lightzero
from .numpy_tree import search_numpy
from .types import RecurrentFn, RootFnOutput, SearchConfig, SearchOutput

_BACKENDS = {"numpy": search_numpy, "lightzero": search_lightzero}


def mix_root_prior(wm_probs: np.ndarray, llm_probs: np.ndarray, weight: np.ndarray | float,
                   legal: np.ndarray | None = None) -> np.ndarray:
    """float32 [B, K] = renormalise((1 - w) * wm_probs + w * llm_probs) over legal slots.

    wm_probs, llm_probs: [B, K] probabilities (need not be normalised over legal).
    weight: scalar or [B] per-root mixing weight in [0, 1].
    legal: optional bool [B, K]; when None, slots where both inputs are 0 stay 0 and
           everything else counts as legal. A row whose mixture has no mass on any
           legal slot becomes uniform over its legal slots.
    """
    wm = np.asarray(wm_probs, dtype=np.float64)
    llm = np.asarray(llm_probs, dtype=np.float64)
    if wm.shape != llm.shape or wm.ndim != 2:
        raise ValueError(f"wm_probs {wm.shape} and llm_probs {llm.shape} must both be [B, K]")
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim == 0:
        w = np.full(wm.shape[0], float(w))
    if w.shape != (wm.shape[0],):
        raise ValueError(f"weight must be a scalar or [B]={wm.shape[0]}, got shape {w.shape}")
    if np.any((w < 0) | (w > 1)):
        raise ValueError("weight must lie in [0, 1]")
    mask = (wm > 0) | (llm > 0) if legal is None else np.asarray(legal, dtype=bool)
    mixed = np.where(mask, (1.0 - w[:, None]) * wm + w[:, None] * llm, 0.0)
    mixed = np.maximum(mixed, 0.0)
    total = mixed.sum(axis=1, keepdims=True)
    uniform = mask / np.maximum(mask.sum(axis=1, keepdims=True), 1)
    out = np.where(total > 0, mixed / np.where(total > 0, total, 1.0), uniform)
    return out.astype(np.float32)


def _root_logits(root: RootFnOutput, legal: np.ndarray, root_prior: np.ndarray | None) -> np.ndarray:
    """float32 [B, K] logits whose masked softmax is the root prior; legal max is 0.

    An overriding prior enters as log-probabilities, so both backends derive the prior
    through the same softmax. Shifting so the legal max is 0 keeps LightZero's softmax
    (which starts its running max at -1e6) numerically identical to ours.
    """
    if root_prior is None:
        logits = np.asarray(root.prior_logits, dtype=np.float32)
    else:
        p = np.asarray(root_prior, dtype=np.float64)
        if p.shape != legal.shape:
            raise ValueError(f"root_prior shape {p.shape} != legal shape {legal.shape}")
        if np.any(~np.isfinite(p[legal])) or np.any(p[legal] < 0):
            raise ValueError("root_prior must be finite and non-negative on legal slots")
        if np.any(np.where(legal, p, 0.0).sum(axis=1) <= 0):
            raise ValueError("root_prior puts no mass on any legal slot of some root")
        with np.errstate(divide="ignore"):
            logits = np.log(p).astype(np.float32)  # zero probability -> -inf -> prior 0
    if not np.all(np.isfinite(logits) | ~legal | (logits == -np.inf)):
        raise ValueError("root prior logits must not be NaN/+inf on legal slots")
    legal_max = np.where(legal, logits, -np.inf).max(axis=1, keepdims=True)
    return np.where(legal, logits - legal_max, np.float32(0.0)).astype(np.float32)


def _dirichlet_noise(legal: np.ndarray, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """float32 [B, K] Dirichlet(alpha) over each row's legal slots, 0 elsewhere.

    Normalised independent Gamma(alpha) draws are a Dirichlet sample; drawing all B*K
    at once keeps it one generator call (and deterministic given rng).
    """
    g = np.where(legal, rng.standard_gamma(alpha, size=legal.shape), 0.0)
    total = g.sum(axis=1, keepdims=True)
    uniform = legal / legal.sum(axis=1, keepdims=True)
    # All-zero rows (every draw underflowed, possible only for tiny alpha) fall back to uniform.
    return np.where(total > 0, g / np.where(total > 0, total, 1.0), uniform).astype(np.float32)


def _choose_action(visits: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """int64 [B]: argmax of visits (lowest slot among equals) or a sample ∝ visits^(1/T)."""
    if temperature == 0.0:
        return np.argmax(visits, axis=1).astype(np.int64)
    v = visits.astype(np.float64)
    # Work in log space so small temperatures do not overflow visits ** (1 / T).
    with np.errstate(divide="ignore"):
        logv = np.log(v)
    w = np.exp((logv - logv.max(axis=1, keepdims=True)) / temperature)
    cdf = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(visits.shape[0])[:, None]
    # First slot whose cdf exceeds u; slots with zero visits add zero width and are never picked.
    idx = np.argmax(cdf > u, axis=1)
    return idx.astype(np.int64)


def run_search(
    root: RootFnOutput,
    recurrent_fn: RecurrentFn,
    legal: np.ndarray,
    config: SearchConfig,
    rng: np.random.Generator,
    root_prior: np.ndarray | None = None,
) -> SearchOutput:
    """MuZero-style pUCT search of B roots over a learned model.

    root:         model evaluation of the roots (logits [B, K], value [B], handle [B]).
    recurrent_fn: (parent_handles int64 [B], actions int64 [B]) -> RecurrentFnOutput;
                  called once per simulation with one new child per root.
    legal:        bool [B, K] candidate slots of each root, used at every depth of that
                  root's tree; every root needs at least one.
    config:       SearchConfig; ``backend`` picks the tree implementation.
    rng:          source of the root Dirichlet noise and of the sampled action.
    root_prior:   optional float [B, K] probabilities used as the root prior instead of
                  softmax(masked prior_logits) (e.g. ``mix_root_prior`` of the world
                  model's and an LLM's prior); Dirichlet noise is mixed into it as usual.
    """
    legal = np.asarray(legal, dtype=bool)
    logits_in = np.asarray(root.prior_logits)
    if legal.ndim != 2 or logits_in.shape != legal.shape:
        raise ValueError(f"legal {legal.shape} and root.prior_logits {logits_in.shape} must both be [B, K]")
    num_roots = legal.shape[0]
    if not np.all(legal.any(axis=1)):
        raise ValueError(f"roots without any legal action: {np.flatnonzero(~legal.any(axis=1)).tolist()}")
    if np.asarray(root.value).shape != (num_roots,) or np.asarray(root.handle).shape != (num_roots,):
        raise ValueError("root.value and root.handle must be [B]")

    logits = _root_logits(root, legal, root_prior)
    noise = None
    if config.root_noise_fraction > 0.0:
        noise = _dirichlet_noise(legal, config.dirichlet_alpha, rng)
    result = _BACKENDS[config.backend](
        logits, noise, legal, np.asarray(root.handle, dtype=np.int64), recurrent_fn, config)

    visits = result.visit_counts
    probs = (visits / visits.sum(axis=1, keepdims=True)).astype(np.float32)
    action = _choose_action(visits, config.temperature, rng)
    return SearchOutput(
        visit_counts=visits,
        visit_probs=probs,
        root_value=result.root_value,
        action=action,
        q_values=result.q_values,
    )
