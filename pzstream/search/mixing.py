"""How much the LLM's prior counts at the root: fixed, or adaptive to the world model's doubt."""
from __future__ import annotations

import numpy as np


def softmax_masked(logits: np.ndarray, legal: np.ndarray) -> np.ndarray:
    """float32 [B, K] probabilities over legal slots (0 elsewhere)."""
    z = np.where(legal, logits, -np.inf).astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.where(legal, np.exp(z), 0.0)
    return (p / p.sum(axis=-1, keepdims=True)).astype(np.float32)


def adaptive_llm_weight(wm_probs: np.ndarray, legal: np.ndarray, low: float = 0.3, high: float = 0.7) -> np.ndarray:
    """float32 [B] LLM weight in [low, high] from the world model's normalised policy entropy.

    A confident world model (entropy near 0) keeps the LLM at ``low``; a world model that cannot
    tell the candidates apart (uniform policy, entropy log K) hands the LLM ``high``. A root with
    one legal action has nothing to decide: it gets ``low``.
    """
    p = np.where(legal, wm_probs, 0.0).astype(np.float64)
    entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=-1)
    k = legal.sum(axis=-1)
    norm = np.where(k > 1, entropy / np.log(np.maximum(k, 2)), 0.0)
    return (low + (high - low) * np.clip(norm, 0.0, 1.0)).astype(np.float32)
