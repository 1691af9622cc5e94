"""How much the LLM's prior counts at the root: fixed, or adaptive to the world model's entropy.

The root prior is ``(1 - w) * wm + w * llm`` (``search.mix_root_prior``); this module picks
w per root. Two adaptive rules move w in [low, high] with the normalised entropy H of the
world model's policy over the legal candidates (0 = one-hot, 1 = uniform), in opposite
directions:

- ``adaptive_priorzero``: w = low + (high - low) * (1 - H), PriorZero's rule (LightZero,
  zoo/jericho/priorzero, ``plus_method="adaptive"``): the LLM counts MORE when the world
  model is confident.
- ``adaptive_entropy``: w = low + (high - low) * H: the LLM counts more when the world
  model cannot tell the candidates apart (pzstream's rule before issue 10).

``adaptive`` names whichever of the two ``bench/mix.py`` found better (``ADAPTIVE_MEANS``):
PriorZero's. On that bench's synthetic roots (default setting) its search decisions had
the higher return in each of the 4 scenarios (by 0.002 to 0.024; mean +0.010, SE 0.0007):
when the world model is confident it keeps mass on both its pick and the LLM's and lets
the search's values choose, where the entropy rule puts most of the prior on the world
model's pick. The entropy rule was as good or better only when the world model's values
were too noisy for the search to choose (bench/RESULTS.md).
"""
from __future__ import annotations

from typing import Literal

import numpy as np

MixMode = Literal["fixed", "adaptive", "adaptive_priorzero", "adaptive_entropy"]
MIX_MODES: tuple[str, ...] = ("fixed", "adaptive", "adaptive_priorzero", "adaptive_entropy")
# What `llm.mix=adaptive` means: the rule that won bench/mix.py (see bench/RESULTS.md).
ADAPTIVE_MEANS: str = "adaptive_priorzero"


def softmax_masked(logits: np.ndarray, legal: np.ndarray) -> np.ndarray:
    """float32 [B, K] probabilities over legal slots (0 elsewhere)."""
    z = np.where(legal, logits, -np.inf).astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.where(legal, np.exp(z), 0.0)
    return (p / p.sum(axis=-1, keepdims=True)).astype(np.float32)


def normalised_entropy(wm_probs: np.ndarray, legal: np.ndarray) -> np.ndarray:
    """float64 [B] entropy of wm_probs [B, K] over the legal slots / log(#legal), in [0, 1].

    A root with one legal action has nothing to decide: its entropy is 0.
    """
    p = np.where(legal, wm_probs, 0.0).astype(np.float64)
    p = p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-12)
    entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=-1)
    k = legal.sum(axis=-1)
    return np.clip(np.where(k > 1, entropy / np.log(np.maximum(k, 2)), 0.0), 0.0, 1.0)


def priorzero_llm_weight(wm_probs: np.ndarray, legal: np.ndarray, low: float = 0.3, high: float = 0.7) -> np.ndarray:
    """float32 [B] PriorZero's LLM weight: ``high`` for a one-hot world model, ``low`` for a uniform one."""
    return (low + (high - low) * (1.0 - normalised_entropy(wm_probs, legal))).astype(np.float32)


def entropy_llm_weight(wm_probs: np.ndarray, legal: np.ndarray, low: float = 0.3, high: float = 0.7) -> np.ndarray:
    """float32 [B] LLM weight rising with the world model's doubt: ``low`` one-hot, ``high`` uniform."""
    return (low + (high - low) * normalised_entropy(wm_probs, legal)).astype(np.float32)


def root_llm_weight(mode: str, wm_probs: np.ndarray, legal: np.ndarray, fixed_weight: float,
                    low: float, high: float) -> np.ndarray:
    """float32 [B] LLM weight of each root under ``llm.mix`` = mode (one of ``MIX_MODES``).

    wm_probs: [B, K] world-model policy; legal: bool [B, K]; fixed_weight is used by
    "fixed", [low, high] by the adaptive rules.
    """
    if mode == "fixed":
        return np.full(len(wm_probs), fixed_weight, np.float32)
    if mode == "adaptive":
        mode = ADAPTIVE_MEANS
    if mode == "adaptive_priorzero":
        return priorzero_llm_weight(wm_probs, legal, low, high)
    if mode == "adaptive_entropy":
        return entropy_llm_weight(wm_probs, legal, low, high)
    raise ValueError(f"llm.mix must be one of {MIX_MODES}, got {mode!r}")
