"""Categorical value/reward supports (MuZero-style), as pure tensor functions.

A scalar x is squashed by the invertible h-transform, clipped to [-S, S] and
spread over the two neighbouring integer bins ("two-hot"); a categorical
prediction maps back by taking the expectation over bins and inverting h.
"""
from __future__ import annotations

import torch


def h_transform(x: torch.Tensor, eps: float = 0.001) -> torch.Tensor:
    """h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x, elementwise, any shape."""
    return torch.sign(x) * (torch.sqrt(x.abs() + 1.0) - 1.0) + eps * x


def h_inverse(y: torch.Tensor, eps: float = 0.001) -> torch.Tensor:
    """Exact inverse of `h_transform` (closed form of the quadratic in sqrt(|x|+1))."""
    root = (torch.sqrt(1.0 + 4.0 * eps * (y.abs() + 1.0 + eps)) - 1.0) / (2.0 * eps)
    return torch.sign(y) * (root * root - 1.0)


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
