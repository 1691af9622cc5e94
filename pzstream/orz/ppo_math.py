"""The math of an ORZ-style PPO episode, as pure functions on small tensors (no Ray, no vLLM).

Shapes: B sequences (responses), T response tokens, padded on the right; ``mask`` float [B, T]
is 1 on real response tokens. Rewards arrive as per-token scores with the sequence reward on
its last real token, as Open-Reasoner-Zero does. Names follow ORZ's config: ``gamma``,
``lambd``, ``eps_clip``, ``use_kl_loss``, ``use_grpo``. The policy's losses (PPO clip, k3 KL) are
``pzstream.llm.losses``, shared with built-in RFT; the critic's is here.
"""
from __future__ import annotations

import torch


def last_token_scores(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """float [B, T]: each sequence's scalar reward [B] placed on its last real token."""
    scores = torch.zeros_like(mask, dtype=torch.float32)
    last = mask.sum(dim=1).long().clamp(min=1) - 1
    scores[torch.arange(mask.shape[0]), last] = rewards.float()
    return scores * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lambd: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens -> (advantages, returns), both [B, T].

    delta_t = r_t + gamma * V_{t+1} - V_t (V past the last real token is 0);
    A_t = delta_t + gamma * lambd * A_{t+1}; returns = A + V. Padding stays 0.
    """
    values = values * mask
    rewards = rewards * mask
    adv = torch.zeros_like(rewards, dtype=torch.float32)
    running = torch.zeros(rewards.shape[0], dtype=torch.float32)
    for t in reversed(range(rewards.shape[1])):
        next_v = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        running = delta + gamma * lambd * running
        running = running * mask[:, t]  # padding ends the recursion
        adv[:, t] = running
    return adv, (adv + values) * mask


def normalize_advantages(adv: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Whiten advantages over all real tokens of the batch (mean 0, std 1)."""
    n = mask.sum().clamp(min=1.0)
    mean = (adv * mask).sum() / n
    var = (((adv - mean) * mask) ** 2).sum() / n
    return (adv - mean) / torch.sqrt(var + eps) * mask


def grpo_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """Group-normalised advantages [B] (no critic): (r - mean of its group) / (std of its group + eps).

    The B rewards come as B / group_size groups of ``n_samples_per_prompt`` samples of one prompt.
    A group whose rewards are all equal has std 0: its advantages are 0, never NaN or huge.
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    g = rewards.float().view(-1, group_size)
    std = g.std(dim=1, unbiased=False, keepdim=True)
    adv = (g - g.mean(dim=1, keepdim=True)) / (std + eps)
    return torch.where(std > eps, adv, torch.zeros_like(adv)).view(-1)


def choice_advantages(adv: torch.Tensor, decided: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-token advantages [B, T] for answers drawn from q(c) = softmax(mean log-prob of c's
    decided tokens / temperature): each decided token gets A / (temperature * n_decided), so the
    token-level policy gradient sum_t A_t grad log p_t equals A grad(score(c) / temperature), the
    gradient of log q(c) up to its normaliser (which a centred advantage cancels in expectation).
    Without it a long answer would get n_decided * temperature times the push of a short one.
    ``decided`` float [B, T]: 1 on tokens that tell the allowed answers apart."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = decided.sum(dim=1, keepdim=True).clamp(min=1.0)
    return adv * decided / (temperature * n)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               value_clip: float | None = 0.2) -> torch.Tensor:
    """Critic loss 0.5 * (V - R)^2, with PPO's value clipping when ``value_clip`` is set."""
    err = (values - returns) ** 2
    if value_clip is not None:
        clipped = old_values + torch.clamp(values - old_values, -value_clip, value_clip)
        err = torch.maximum(err, (clipped - returns) ** 2)
    return 0.5 * (err * mask).sum() / mask.sum().clamp(min=1.0)
