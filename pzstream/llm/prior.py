"""LLM action prior: teacher-forced mean log-probability of each candidate after a prompt.

Quantity. For a root with prompt ``p`` and candidate ``c`` the score is
``mean_j log P(t_j | p, t_<j)`` over the candidate's tokens ``t``. ``prior_from_logprobs``
turns a root's scores into prior log-probabilities ``log_softmax(score / T)``.

Tokenisation (the same in both methods, so they compute the same thing). The prompt and
the candidate continuation are tokenised SEPARATELY and concatenated:
``ids(prompt) + ids(continuation.format(action=c))``, where the default continuation is
``" {action}"`` (leading space). Tokenising ``prompt + " " + c`` jointly could let BPE merge
across the boundary, which would make the prompt's tokens depend on the candidate and
would make a shared prompt cache impossible; with separate tokenisation the prompt tokens
are identical for every candidate. (With byte-level BPE and a prompt ending in ``Action:``
the two tokenisations agree anyway, since the pre-tokeniser splits before the space.)
No special tokens are added. An empty prompt is replaced by the eos token (something
must predict the first candidate token); a continuation with no tokens is scored as the
eos token.

Limits. A candidate longer than ``max_candidate_tokens`` (default 32) is cut to its first
``max_candidate_tokens`` tokens (its mean is over those). If prompt + longest candidate of
the root exceeds the model's ``max_position_embeddings``, the prompt keeps its LAST tokens
(build prompts with ``prompts.fit_prompt`` to cut them at text level instead). At most
``max_rows`` candidate sequences go through the model in one forward (more are chunked),
and at most ``max_roots`` prompts are batched into one prompt forward.

Methods.
* ``candidate_logprobs_shared``: each prompt is computed ONCE. A group of roots is
  left-padded and run in one forward that keeps the KV cache and the last position's
  logits (which score every candidate's first token). The cache is then gathered along the
  batch (``index_select`` per layer, one row per candidate) into a fresh ``DynamicCache``
  and all candidates of the group run as one right-padded batch continuing from it
  (attention mask = prompt mask of its root + ones, positions continue from the root's
  prompt length). Right padding of candidates needs no masking: causal attention keeps
  real tokens from seeing later pads, and pad outputs are ignored.
* ``candidate_logprobs_naive``: every (prompt, candidate) pair is one full left-padded
  sequence; the reference.
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

import numpy as np
import torch

DEFAULT_CONTINUATION = " {action}"


def prior_from_logprobs(mean_logprobs: np.ndarray, temperature: float = 2.0) -> np.ndarray:
    """``log_softmax(mean_logprobs / temperature)`` over the candidates (float64).

    Non-finite scores count as ``-inf`` (probability 0); if no score is finite the prior is
    uniform.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    x = np.asarray(mean_logprobs, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("prior_from_logprobs: empty candidate list (need at least one candidate)")
    x = np.where(np.isfinite(x), x, -np.inf) / temperature
    m = x.max()
    if not np.isfinite(m):
        return np.full(x.shape, -np.log(x.size))
    z = x - m
    return z - np.log(np.exp(z).sum())


# ---------------------------------------------------------------- tokenisation helpers

def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _eos_id(tokenizer: Any) -> int:
    for attr in ("eos_token_id", "pad_token_id", "bos_token_id"):
        v = getattr(tokenizer, attr, None)
        if v is not None:
            return int(v)
    return 0


def _pad_id(tokenizer: Any) -> int:
    v = getattr(tokenizer, "pad_token_id", None)
    return int(v) if v is not None else _eos_id(tokenizer)


def _max_positions(model: Any) -> int:
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(n) if n else 1 << 30


def _prepare(model: Any, tokenizer: Any, prompts: Sequence[str], candidates: Sequence[Sequence[str]],
             continuation: str, max_candidate_tokens: int) -> tuple[list[list[int]], list[list[list[int]]]]:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings (one per root), not a string")
    if len(prompts) != len(candidates):
        raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists: need one list per prompt")
    if max_candidate_tokens < 1:
        raise ValueError(f"max_candidate_tokens must be >= 1, got {max_candidate_tokens}")
    eos = _eos_id(tokenizer)
    ctx = _max_positions(model)
    p_ids: list[list[int]] = []
    c_ids: list[list[list[int]]] = []
    for i, (p, cands) in enumerate(zip(prompts, candidates)):
        if isinstance(cands, str):
            raise TypeError(f"root {i}: candidates must be a list of strings, not a string")
        if len(cands) == 0:
            raise ValueError(f"root {i}: empty candidate list; every root needs at least one candidate action")
        cs = []
        for c in cands:
            ids = _encode(tokenizer, continuation.format(action=str(c)))[:max_candidate_tokens]
            cs.append(ids or [eos])
        longest = max(len(x) for x in cs)
        pi = _encode(tokenizer, str(p)) or [eos]
        keep = max(1, ctx - longest)
        if len(pi) > keep:
            pi = pi[-keep:]
        p_ids.append(pi)
        c_ids.append(cs)
    return p_ids, c_ids


def _device_of(model: Any, device: Any) -> torch.device:
    if device is not None:
        return torch.device(device)
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def _cache_kwarg(model: Any) -> str:
    """transformers >= 5.2x calls the KV cache argument ``cache``; older ones ``past_key_values``."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _out_cache(out: Any) -> Any:
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values", None)


def _cache_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):  # older DynamicCache
        return list(zip(cache.key_cache, cache.value_cache))
    return [(k, v) for k, v in cache]  # legacy tuple of tuples


def _make_cache(kv: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    from transformers import DynamicCache

    cache = DynamicCache()
    for i, (k, v) in enumerate(kv):
        cache.update(k, v, i)
    return cache


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] in float32, without materialising the full log-softmax."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


# ---------------------------------------------------------------- shared-prompt method

@torch.no_grad()
def candidate_logprobs_shared(model: Any, tokenizer: Any, prompts: Sequence[str],
                              candidates: Sequence[Sequence[str]], device: Any = None, *,
                              continuation: str = DEFAULT_CONTINUATION, max_candidate_tokens: int = 32,
                              max_rows: int = 1024, max_roots: int = 32) -> list[np.ndarray]:
    """Mean log-prob of each candidate after its prompt, each prompt computed once.

    Returns one float64 array of shape ``(len(candidates[i]),)`` per root. See the module
    docstring for tokenisation, truncation and batching.
    """
    p_ids, c_ids = _prepare(model, tokenizer, prompts, candidates, continuation, max_candidate_tokens)
    dev = _device_of(model, device)
    pad = _pad_id(tokenizer)
    ckw = _cache_kwarg(model)
    results: list[np.ndarray] = [np.empty(0)] * len(p_ids)

    groups: list[list[int]] = []
    cur: list[int] = []
    rows = 0
    for i, cs in enumerate(c_ids):
        if cur and (len(cur) >= max_roots or rows + len(cs) > max_rows):
            groups.append(cur)
            cur, rows = [], 0
        cur.append(i)
        rows += len(cs)
    if cur:
        groups.append(cur)

    for group in groups:
        G = len(group)
        plen = torch.tensor([len(p_ids[i]) for i in group], dtype=torch.long)
        P = int(plen.max())
        ids = torch.full((G, P), pad, dtype=torch.long)
        mask = torch.zeros((G, P), dtype=torch.long)
        for g, i in enumerate(group):
            n = len(p_ids[i])
            ids[g, P - n:] = torch.tensor(p_ids[i])
            mask[g, P - n:] = 1
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        ids, mask, pos = ids.to(dev), mask.to(dev), pos.to(dev)
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        last_logits = out.logits[:, -1, :]
        kv = _cache_tensors(_out_cache(out))
        del out

        pairs = [(g, k) for g, i in enumerate(group) for k in range(len(c_ids[i]))]
        means = {i: np.empty(len(c_ids[i]), dtype=np.float64) for i in group}
        for s in range(0, len(pairs), max_rows):
            chunk = pairs[s:s + max_rows]
            R = len(chunk)
            seqs = [c_ids[group[g]][k] for g, k in chunk]
            lens = torch.tensor([len(x) for x in seqs], dtype=torch.long)
            L = int(lens.max())
            cand = torch.full((R, L), pad, dtype=torch.long)
            for r, x in enumerate(seqs):
                cand[r, :len(x)] = torch.tensor(x)
            gidx = torch.tensor([g for g, _ in chunk], dtype=torch.long)
            gidx_d = gidx.to(dev)
            cand_d = cand.to(dev)
            first = _token_logprobs(last_logits.index_select(0, gidx_d), cand_d[:, 0])  # (R,)
            lp = first.unsqueeze(1)
            if L > 1:
                cache = _make_cache([(k.index_select(0, gidx_d), v.index_select(0, gidx_d)) for k, v in kv])
                cmask = torch.cat([mask.index_select(0, gidx_d),
                                   torch.ones((R, L - 1), dtype=mask.dtype, device=dev)], dim=1)
                cpos = (plen[gidx].unsqueeze(1) + torch.arange(L - 1).unsqueeze(0)).to(dev)
                o = model(input_ids=cand_d[:, :-1], attention_mask=cmask, position_ids=cpos,
                          use_cache=True, **{ckw: cache})
                rest = _token_logprobs(o.logits, cand_d[:, 1:])  # (R, L-1)
                del o, cache
                lp = torch.cat([lp, rest], dim=1)
            valid = (torch.arange(L).unsqueeze(0) < lens.unsqueeze(1)).to(dev)
            mean = (lp * valid).sum(1) / lens.to(dev)
            mean = mean.double().cpu().numpy()
            for r, (g, k) in enumerate(chunk):
                means[group[g]][k] = mean[r]
        for i in group:
            results[i] = means[i]
    return results


# ---------------------------------------------------------------- naive reference

@torch.no_grad()
def candidate_logprobs_naive(model: Any, tokenizer: Any, prompts: Sequence[str],
                             candidates: Sequence[Sequence[str]], device: Any = None, *,
                             continuation: str = DEFAULT_CONTINUATION, max_candidate_tokens: int = 32,
                             max_rows: int = 64) -> list[np.ndarray]:
    """The same quantity as ``candidate_logprobs_shared``, every candidate as one full
    left-padded sequence ``prompt + candidate`` (``max_rows`` sequences per forward)."""
    p_ids, c_ids = _prepare(model, tokenizer, prompts, candidates, continuation, max_candidate_tokens)
    dev = _device_of(model, device)
    pad = _pad_id(tokenizer)
    results = [np.empty(len(cs), dtype=np.float64) for cs in c_ids]
    pairs = [(i, k) for i, cs in enumerate(c_ids) for k in range(len(cs))]
    for s in range(0, len(pairs), max_rows):
        chunk = pairs[s:s + max_rows]
        R = len(chunk)
        seqs = [p_ids[i] + c_ids[i][k] for i, k in chunk]
        clens = torch.tensor([len(c_ids[i][k]) for i, k in chunk], dtype=torch.long)
        T = max(len(x) for x in seqs)
        Lc = int(clens.max())
        ids = torch.full((R, T), pad, dtype=torch.long)
        mask = torch.zeros((R, T), dtype=torch.long)
        for r, x in enumerate(seqs):
            ids[r, T - len(x):] = torch.tensor(x)
            mask[r, T - len(x):] = 1
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                    use_cache=False, logits_to_keep=Lc + 1)
        # kept logits cover positions T-Lc-1 .. T-1; position t predicts token t+1
        logits = out.logits[:, :Lc, :]
        targets = ids[:, T - Lc:].to(dev)
        lp = _token_logprobs(logits, targets)  # (R, Lc): column j scores token T-Lc+j
        valid = (torch.arange(Lc).unsqueeze(0) >= (Lc - clens).unsqueeze(1)).to(dev)
        mean = ((lp * valid).sum(1) / clens.to(dev)).double().cpu().numpy()
        for r, (i, k) in enumerate(chunk):
            results[i][k] = mean[r]
    return results
