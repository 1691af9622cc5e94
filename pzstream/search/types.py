"""Typed data of the search: configuration, model outputs in, search results out.

All arrays are numpy, batch dimension first. ``B`` is the number of roots searched
together, ``K`` the number of candidate-action slots (the maximum number of
candidates over the batch; a root's unused or invalid slots are masked by ``legal``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class SearchConfig:
    """Hyper-parameters of one MuZero-style search (pUCT with min-max normalised Q)."""

    num_simulations: int = 25
    pb_c_base: float = 19652.0  # c2 of the pUCT exploration term
    pb_c_init: float = 1.25  # c1 of the pUCT exploration term
    discount: float = 0.997
    dirichlet_alpha: float = 0.3
    root_noise_fraction: float = 0.25  # 0 disables noise (evaluation)
    temperature: float = 1.0  # action sampling from visit counts; 0 = argmax
    backend: str = "numpy"  # "numpy" | "lightzero"
    # Extra field (not in the original brief, defaulted so it is additive): when the
    # spread of the Q bounds is below this, Q is normalised by this instead of the
    # spread, so a handful of nearly equal Q values is not blown up to [0, 1].
    # LightZero's MuZero uses 0.01 (`value_delta_max`); 0 turns it off.
    value_delta_max: float = 0.01

    def __post_init__(self) -> None:
        if self.num_simulations < 1:
            raise ValueError(f"num_simulations must be >= 1, got {self.num_simulations}")
        if self.backend not in ("numpy", "lightzero"):
            raise ValueError(f"backend must be 'numpy' or 'lightzero', got {self.backend!r}")
        if not 0.0 <= self.root_noise_fraction <= 1.0:
            raise ValueError(f"root_noise_fraction must be in [0, 1], got {self.root_noise_fraction}")
        if self.temperature < 0.0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.dirichlet_alpha <= 0.0:
            raise ValueError(f"dirichlet_alpha must be > 0, got {self.dirichlet_alpha}")


@dataclass(frozen=True)
class RootFnOutput:
    """Model evaluation of the B roots.

    prior_logits: float32 [B, K]; slots where ``legal`` is False are ignored.
    value:        float32 [B].
    handle:       int64 [B]; opaque id of each root's model state (the model adapter
                  owns what it means; the search only hands it back to recurrent_fn).
    """

    prior_logits: np.ndarray
    value: np.ndarray
    handle: np.ndarray


@dataclass(frozen=True)
class RecurrentFnOutput:
    """Model evaluation of the B new children of one simulation (one per root).

    reward:       float32 [B]; reward of the transition parent --action--> child.
    value:        float32 [B]; value of the child.
    prior_logits: float32 [B, K]; the root's ``legal`` mask applies to them too.
    handle:       int64 [B]; id of each new child's model state.
    """

    reward: np.ndarray
    value: np.ndarray
    prior_logits: np.ndarray
    handle: np.ndarray


# (parent_handles int64 [B], actions int64 [B]) -> RecurrentFnOutput for the B new
# children: every simulation expands exactly one new node in each root's tree.
RecurrentFn = Callable[[np.ndarray, np.ndarray], RecurrentFnOutput]


@dataclass(frozen=True)
class SearchOutput:
    """Result of searching B roots.

    visit_counts: int32 [B, K]; visits of the root's children (0 on illegal slots);
                  each row sums to num_simulations.
    visit_probs:  float32 [B, K]; visit_counts normalised per row (0 on illegal).
    root_value:   float32 [B]; mean of the values backed up into the root over the
                  num_simulations simulations (the root's own network value is not
                  part of the mean, as in LightZero where it never enters the tree).
    action:       int64 [B]; sampled from visit_counts ** (1 / temperature), or the
                  most visited (lowest index among equals) when temperature == 0.
    q_values:     float32 [B, K]; Q = reward + discount * mean backed-up value of
                  each root child; 0.0 where the child was never visited or is
                  illegal (as in mctx), so check visit_counts > 0 before trusting it.
    """

    visit_counts: np.ndarray
    visit_probs: np.ndarray
    root_value: np.ndarray
    action: np.ndarray
    q_values: np.ndarray
