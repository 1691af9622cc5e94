"""The LLM's losses, as pure functions on small tensors: SFT cross-entropy, PPO's clipped
surrogate, Schulman's k3 KL estimate, and RFT (clip + KL). Built-in SFT/RFT (``train.py``) and
ORZ PPO (``pzstream.orz``) both use these; nothing here knows a model or a tokenizer.

Shapes: per token ``[B, L]`` with ``mask`` ``[B, L]`` (bool or float, 1 on real tokens), or per
sequence ``[B]``; advantages broadcast against the ratio.
"""
from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is set (all entries when it is None)."""
    if mask is None:
        return x.mean()
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def sft_ce_loss(token_logprobs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy on the chosen action's tokens: -mean log p(token | prompt, earlier tokens).

    token_logprobs [B, L]: teacher-forced log-probs of the action tokens; mask [B, L]: real tokens.
    Token-level mean over the batch (long actions weigh more, as in ordinary SFT).
    """
    return -masked_mean(token_logprobs, mask)


def sft_visit_loss(candidate_scores: torch.Tensor, visits: torch.Tensor,
                   cand_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the LLM's candidate distribution against the search's visits.

    candidate_scores [K] or [B, K]: mean token log-prob of each candidate after the prompt;
    softmax over them is the LLM's prior over candidates (as the collectors use it).
    visits [K] or [B, K]: target distribution; cand_mask [B, K]: real candidates (padding False).
    Loss = mean_b -sum_k visits_bk log softmax(scores_b)_k.
    """
    if candidate_scores.dim() == 1:
        candidate_scores, visits = candidate_scores[None], visits[None]
        cand_mask = cand_mask[None] if cand_mask is not None else None
    if cand_mask is not None:
        candidate_scores = candidate_scores.masked_fill(~cand_mask, float("-inf"))
    log_prior = torch.log_softmax(candidate_scores, dim=-1)
    log_prior = torch.where(visits > 0, log_prior, torch.zeros_like(log_prior))  # 0 * -inf on padding
    return -(visits * log_prior).sum(-1).mean()


def ppo_clip_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, advantage: torch.Tensor,
                  eps: float = 0.2, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PPO's clipped surrogate, negated (a loss), elementwise then masked mean.

    ratio = exp(logp_new - logp_old); loss = -min(ratio A, clip(ratio, 1-eps, 1+eps) A).
    Shapes broadcast: per token [B, L] with advantage [B, 1] or [B, L], or per sequence [B] with [B].
    """
    ratio = torch.exp(logp_new - logp_old)
    unclipped = ratio * advantage
    clipped = torch.clamp(ratio, 1.0 - eps, 1.0 + eps) * advantage
    return masked_mean(-torch.minimum(unclipped, clipped), mask)


def clip_fraction(logp_new: torch.Tensor, logp_old: torch.Tensor, eps: float,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """Share of (masked) entries whose ratio lies outside [1-eps, 1+eps]: where the clip acts."""
    ratio = torch.exp(logp_new.detach() - logp_old)
    return masked_mean(((ratio - 1).abs() > eps).float(), mask)


def k3_kl(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(policy || ref) per token: exp(d) - d - 1, d = ref - logp.

    Non-negative, zero where the two agree; elementwise (``masked_mean`` it).
    """
    d = logp_ref - logp
    return torch.exp(d) - d - 1.0


def rft_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, logp_ref: torch.Tensor, advantage: torch.Tensor,
             mask: torch.Tensor | None = None, eps: float = 0.2, kl_coef: float = 0.05,
             ratio_logp_new: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RFT = PPO clip on the executed action's tokens + kl_coef * mean k3 KL to the reference.

    logp_new / logp_ref / mask [B, L]: token log-probs; logp_old and advantage broadcast to the
    ratio's shape. ratio_logp_new: what the ratio is taken of when it is not per token (e.g.
    [B] mean log-probs against a per-sequence logp_old); default logp_new.
    Returns (loss, ppo part, kl part).
    """
    if ratio_logp_new is None:
        ppo = ppo_clip_loss(logp_new, logp_old, advantage, eps, mask)
    else:
        ppo = ppo_clip_loss(ratio_logp_new, logp_old, advantage, eps)
    kl = masked_mean(k3_kl(logp_new, logp_ref), mask)
    return ppo + kl_coef * kl, ppo, kl
