"""UniZero losses as pure functions on tensors (all masked means; masks are bool)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import WorldModelConfig
from .support import scalar_to_two_hot
from .targets import Batch
from .world_model import Predictions


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x, mask [...] -> scalar mean of x where mask (0 if mask is empty)."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def categorical_ce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """logits, target probs [..., bins], mask [...] -> scalar cross entropy."""
    return masked_mean(-(target * F.log_softmax(logits, -1)).sum(-1), mask)


def latent_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """pred, target [..., D], mask [...] -> scalar 1 - cosine (target is detached by the caller)."""
    return masked_mean(1.0 - F.cosine_similarity(pred, target, dim=-1), mask)


def policy_ce(logits: torch.Tensor, visits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """logits [..., K] (padding at NEG), visits [..., K] (0 on padding), mask [...] -> scalar CE."""
    return masked_mean(-(visits * F.log_softmax(logits, -1)).sum(-1), mask)


def policy_entropy(logits: torch.Tensor, cand_mask: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """logits [..., K], cand_mask [..., K], mask [...] -> scalar mean entropy over real candidates."""
    logp = F.log_softmax(logits, -1)
    ent = -(logp.exp() * logp).masked_fill(~cand_mask, 0.0).sum(-1)
    return masked_mean(ent, mask)


def unizero_losses(pred: Predictions, batch: Batch, target_latent: torch.Tensor,
                   cfg: WorldModelConfig) -> dict[str, torch.Tensor]:
    """All losses of one batch; target_latent [B, U, D]: target encoder on the real next observations.

    Steps past an episode end (or a chunk cut) are masked everywhere: after
    `done` we cannot tell a terminal state from a truncation, so there is no
    sound absorbing-state target to train on.
    """
    valid = batch.unroll_valid                     # [B, U+1]
    act_valid = valid[:, :-1]                      # [B, U]: step t (and so its action/reward) exists
    next_valid = valid[:, 1:]                      # [B, U]: the real next observation exists
    reward_t = scalar_to_two_hot(batch.reward, cfg.reward_support, cfg.h_eps)
    value_t = scalar_to_two_hot(batch.value_target, cfg.value_support, cfg.h_eps)
    out = {
        "loss/latent": latent_loss(pred.next_latent, target_latent.detach(), next_valid),
        "loss/reward": categorical_ce(pred.reward_logits, reward_t, act_valid),
        "loss/value": categorical_ce(pred.value_logits, value_t, valid),
        "loss/policy": policy_ce(pred.policy_logits, batch.visits, valid),
        "loss/entropy": -policy_entropy(pred.policy_logits, batch.cand_mask, valid),  # minimised: raises entropy
    }
    out["loss/total"] = (cfg.w_latent * out["loss/latent"] + cfg.w_reward * out["loss/reward"]
                         + cfg.w_value * out["loss/value"] + cfg.w_policy * out["loss/policy"]
                         + cfg.w_entropy * out["loss/entropy"])
    return out
