"""The KV cache of a prompt prefix that many scoring prompts share.

Every scoring prompt starts with the same template head (the ORZ preamble and the header
are about half of a typical prompt's tokens). ``PrefixCache`` keeps the key/value tensors
of one token prefix and hands the packed-tree scorer (``prior.candidate_logprobs_tree``)
the longest part of it that every prompt of a call starts with, so those tokens run once
instead of once per root per move.

Exactness: keys and values at position ``t`` depend only on tokens ``<= t`` (causal
attention), so the cached KV of a prefix cut to its first ``l`` tokens is exactly the KV a
full forward computes for those ``l`` tokens. The cache learns its prefix by itself: a call
whose prompts share fewer than ``min_tokens`` tokens with the cached prefix replaces it with
the call's own common prefix (the first prompt, for a call with one root; the next call then
cuts it to what the two share). Each prompt keeps at least one token of its own, since its
last token's output scores every candidate's first token.

Weights: the cache is keyed by the model's parameters' in-place version counters (every
optimizer step and every ``copy_`` of new weights bumps them), so a model trained or reloaded
in place never reads stale keys and values.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token-id sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _weights_key(model: Any) -> tuple[int, int]:
    params = list(model.parameters())
    return (sum(p._version for p in params), sum(id(p) for p in params))


class PrefixCache:
    """KV tensors of one token prefix, reused by scoring calls whose prompts start with it."""

    def __init__(self, min_tokens: int = 16) -> None:
        if min_tokens < 1:
            raise ValueError(f"PrefixCache.min_tokens must be >= 1, got {min_tokens}")
        self.min_tokens = int(min_tokens)
        self.ids: list[int] = []
        self.kv: KV = []
        self._weights: tuple[int, int] | None = None
        self.hits = 0          # calls that reused cached tokens
        self.builds = 0        # prefix forwards run
        self.tokens_saved = 0  # prompt tokens not recomputed, over all roots

    def clear(self) -> None:
        self.ids, self.kv, self._weights = [], [], None

    def take(self, decoder: Any, cache_tensors: Any, p_ids: Sequence[Sequence[int]],
             device: torch.device) -> tuple[int, KV]:
        """(l, kv): every prompt in ``p_ids`` starts with the cached prefix's first ``l`` tokens,
        and ``kv`` holds their keys and values (shape ``[1, heads, l, dim]`` per layer).
        ``(0, [])`` when the prompts share fewer than ``min_tokens`` tokens."""
        if not p_ids:
            return 0, []
        room = min(len(p) for p in p_ids) - 1  # each prompt keeps its last token
        if room < self.min_tokens:
            return 0, []
        key = _weights_key(decoder)
        if key != self._weights:
            self.clear()
        l = min((common_prefix_len(self.ids, p) for p in p_ids), default=0) if self.ids else 0
        built = l < self.min_tokens
        if built:
            first = list(p_ids[0][:room])
            l = min(common_prefix_len(first, p) for p in p_ids)
            if l < self.min_tokens:
                return 0, []
            self._build(decoder, cache_tensors, first[:l], device)
            self._weights = key
        else:
            self.hits += 1
        l = min(l, room)
        if l < len(self.ids):
            self.ids = self.ids[:l]
            self.kv = [(k[:, :, :l], v[:, :, :l]) for k, v in self.kv]
        self.tokens_saved += l * (len(p_ids) - int(built))
        return l, self.kv

    @torch.no_grad()
    def _build(self, decoder: Any, cache_tensors: Any, ids: list[int], device: torch.device) -> None:
        x = torch.tensor([ids], dtype=torch.long, device=device)
        out = decoder(input_ids=x, position_ids=torch.arange(len(ids), device=device).unsqueeze(0), use_cache=True)
        cache = getattr(out, "past_key_values", None)
        if cache is None:
            cache = getattr(out, "cache", None)
        self.kv = [(k.detach(), v.detach()) for k, v in cache_tensors(cache)]
        self.ids = ids
        self.builds += 1
