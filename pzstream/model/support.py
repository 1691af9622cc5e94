"""Categorical value/reward supports (MuZero-style), as pure tensor functions.

A scalar x is squashed by the invertible h-transform, clipped to [-S, S] and
spread over the two neighbouring integer bins ("two-hot"); a categorical
prediction maps back by taking the expectation over bins and inverting h.
Scalars beyond ``support_limit(S)`` are clipped, so S is sized from the largest
score a game can reach (``support_for``).
"""
from __future__ import annotations

import math

import torch


def h_transform(x: torch.Tensor, eps: float = 0.001) -> torch.Tensor:
    """h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x, elementwise, any shape."""
    return torch.sign(x) * (torch.sqrt(x.abs() + 1.0) - 1.0) + eps * x


def h_inverse(y: torch.Tensor, eps: float = 0.001) -> torch.Tensor:
    """Exact inverse of `h_transform` (closed form of the quadratic in sqrt(|x|+1))."""
    root = (torch.sqrt(1.0 + 4.0 * eps * (y.abs() + 1.0 + eps)) - 1.0) / (2.0 * eps)
    return torch.sign(y) * (root * root - 1.0)


def support_limit(support: int, eps: float = 0.001) -> float:
    """Largest |x| a support of 2S+1 bins keeps without clipping: h^-1(S)."""
    return float(h_inverse(torch.tensor(float(support), dtype=torch.float64), eps))


def support_for(max_abs: float, eps: float = 0.001) -> int:
    """Smallest S whose support keeps every |x| <= max_abs (e.g. a game's max score)."""
    if not max_abs >= 0.0:
        raise ValueError(f"max_abs must be >= 0, got {max_abs}")
    y = float(h_transform(torch.tensor(float(max_abs), dtype=torch.float64), eps))
    return max(1, math.ceil(y - 1e-9))


def scalar_to_two_hot(x: torch.Tensor, support: int, eps: float = 0.001) -> torch.Tensor:
    """x [...] -> probabilities [..., 2S+1] over bins -S..S of h(x) (clipped to the support)."""
    y = h_transform(x.float(), eps).clamp(-support, support)
    low = y.floor()
    p_up = y - low
    i_low = (low + support).long()
    i_up = (i_low + 1).clamp(max=2 * support)  # at y == S, p_up == 0: the clamp adds nothing
    out = torch.zeros(*x.shape, 2 * support + 1, dtype=torch.float32, device=x.device)
    out.scatter_add_(-1, i_low.unsqueeze(-1), (1.0 - p_up).unsqueeze(-1))
    out.scatter_add_(-1, i_up.unsqueeze(-1), p_up.unsqueeze(-1))
    return out


def probs_to_scalar(probs: torch.Tensor, support: int, eps: float = 0.001) -> torch.Tensor:
    """probs [..., 2S+1] -> x [...]: h^-1 of the expected bin value."""
    bins = torch.arange(-support, support + 1, dtype=probs.dtype, device=probs.device)
    return h_inverse((probs * bins).sum(-1), eps)


def logits_to_scalar(logits: torch.Tensor, support: int, eps: float = 0.001) -> torch.Tensor:
    """logits [..., 2S+1] -> x [...]."""
    return probs_to_scalar(torch.softmax(logits.float(), -1), support, eps)


def support_warning(max_score: float, value_support: int) -> str | None:
    """Why a game's returns would be clipped by the value support, with the setting that fixes
    it; None when the support covers ``max_score`` (or the game reports none)."""
    if max_score <= 0 or max_score <= support_limit(value_support):
        return None
    return (f"the game's max score {max_score:g} exceeds the value support (|x| <= {support_limit(value_support):.0f} "
            f"with model.value_support={value_support}): returns above it are clipped; "
            f"set model.value_support={support_for(max_score)} or more")
