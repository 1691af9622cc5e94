"""Teacher-forced token log-probs of answers after prompts: the one forward that SFT, RFT and PPO
train through (the prior's scoring methods in ``prior.py`` share prompts across candidates with a
KV cache or a packed tree instead, and compute the same numbers).

A batch is a list of (prompt ids, answer ids) (``tokens.encode_pair``). It is packed
right-padded as prompt + answer, and every per-token quantity is answer-aligned: float [B, T]
with T the longest answer and ``mask`` 1 on real answer tokens. Token t of an answer is scored
from the logits at the position before it.
"""
from __future__ import annotations

import inspect

from dataclasses import dataclass
from typing import Any, Sequence

import torch

Seq = tuple[list[int], list[int]]  # (prompt ids, answer / response ids)


@dataclass
class Packed:
    input_ids: torch.Tensor  # long [B, L]: prompt + answer, right-padded
    attention_mask: torch.Tensor  # long [B, L]
    gather_pos: torch.Tensor  # long [B, T]: position whose logits predict answer token t
    response_ids: torch.Tensor  # long [B, T]
    mask: torch.Tensor  # float [B, T]: 1 on real answer tokens


def pack(seqs: Sequence[Seq], pad_id: int) -> Packed:
    if not seqs:
        raise ValueError("pack: no sequences")
    lens = [len(p) + len(r) for p, r in seqs]
    L, T = max(lens), max(max(len(r) for _, r in seqs), 1)
    B = len(seqs)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    attn = torch.zeros((B, L), dtype=torch.long)
    pos = torch.zeros((B, T), dtype=torch.long)
    resp = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.float32)
    for b, (p, r) in enumerate(seqs):
        if not p:
            raise ValueError(f"sequence {b}: empty prompt")
        ids[b, :len(p) + len(r)] = torch.tensor(list(p) + list(r), dtype=torch.long)
        attn[b, :len(p) + len(r)] = 1
        n = len(r)
        pos[b, :n] = torch.arange(len(p) - 1, len(p) - 1 + n)
        resp[b, :n] = torch.tensor(list(r), dtype=torch.long)
        mask[b, :n] = 1.0
    return Packed(ids, attn, pos, resp, mask)


def to_device(pk: Packed, device: torch.device | str) -> Packed:
    return Packed(*(t.to(device, non_blocking=True) for t in (pk.input_ids, pk.attention_mask, pk.gather_pos,
                                                              pk.response_ids, pk.mask)))


def _device_of(model: Any) -> torch.device:
    return next(model.parameters()).device


def token_logprobs(model: Any, pk: Packed, engine: Any = None) -> torch.Tensor:
    """float [B, T]: log p(answer token t | everything before it); 0 on padding (on the model's device).

    The vocabulary projection runs only where an answer token is predicted: the prompt's logits are
    never needed, and over 151,936 words they dominate the cost for short answers after long
    prompts (under ZeRO-3 they made it 3.3x slower than ZeRO-2, issue 13).

    ``engine``: a DeepSpeed ZeRO-3 engine wrapping ``model``. The forward then goes through the
    engine whole (its parameter prefetching follows the engine's forward: calling the body and
    the output layer directly gave wrong log-probs on 2 ranks), asking the model for logits at the
    answer positions only (``logits_to_keep``, where the model takes it)."""
    pk = to_device(pk, _device_of(model))
    prefix = getattr(model, "base_model_prefix", "model")
    body = getattr(model, prefix, None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if engine is not None and "logits_to_keep" in inspect.signature(model.forward).parameters:
        keep = torch.unique(pk.gather_pos)  # sorted positions where any row predicts an answer token
        logits = engine(input_ids=pk.input_ids, attention_mask=pk.attention_mask, logits_to_keep=keep).logits
        idx = torch.searchsorted(keep, pk.gather_pos).unsqueeze(-1).expand(-1, -1, logits.shape[-1])
        logits = torch.gather(logits, 1, idx)
    elif engine is not None or body is None or head is None:
        logits = (engine or model)(input_ids=pk.input_ids, attention_mask=pk.attention_mask).logits
        idx = pk.gather_pos.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
        logits = torch.gather(logits, 1, idx)
    else:
        h = body(input_ids=pk.input_ids, attention_mask=pk.attention_mask, use_cache=False).last_hidden_state
        idx = pk.gather_pos.unsqueeze(-1).expand(-1, -1, h.shape[-1])
        logits = head(torch.gather(h, 1, idx))
    lp = torch.log_softmax(logits.float(), dim=-1)
    return torch.gather(lp, 2, pk.response_ids.unsqueeze(-1)).squeeze(-1) * pk.mask


def mean_logprob(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row mean over real tokens: [B, L] -> [B]."""
    mask = mask.to(logp.dtype)
    return (logp * mask).sum(-1) / mask.sum(-1).clamp_min(1)
