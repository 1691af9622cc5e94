"""LLM action prior: teacher-forced mean log-probability of each candidate after a prompt.

Quantity. For a root with prompt ``p`` and candidate ``c`` the score is
``mean_j log P(t_j | p, t_<j)`` over the candidate's tokens ``t``. ``prior_from_logprobs``
turns a root's scores into prior log-probabilities ``log_softmax(score / T)``.

Tokenisation (the same in all methods, and the same as SFT, RFT and PPO train):
``tokens.encode_roots``. The prompt and the candidate continuation are tokenised SEPARATELY
and concatenated, ``ids(prompt) + ids(continuation.format(action=c)) + [eos]``, where the
default continuation is ``" {action}"`` (leading space). Tokenising jointly could let BPE merge
across the boundary, which would make the prompt's tokens depend on the candidate and would
make a shared prompt cache impossible. The trailing eos is scored: it is how the model says
the answer is complete (PriorZero scores ``Action: a<eos>``), so "go" is not a prefix of "go
north". No special tokens are added. An empty prompt is replaced by the eos token.

Limits. A candidate longer than ``max_candidate_tokens`` (default 32) is cut to its first
``max_candidate_tokens`` tokens before the eos (its mean is over those and the eos). If prompt + longest candidate of
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
* ``candidate_logprobs_tree`` (``TransformersBackend`` on a GPU): no cache copies. Each root
  is ONE packed row ``[prompt, cand_1, cand_2, ...]`` run with a custom 4-D additive
  attention mask (shape ``[rows, 1, L, L]``, 0 = attend, dtype min = masked; transformers
  passes a 4-D ``attention_mask`` through unchanged to the sdpa/eager attention): prompt
  tokens attend causally within the prompt, a candidate token attends to the whole prompt
  and causally to its own candidate. Candidate token ``j`` gets position
  ``len(prompt) + j``, so every candidate sees exactly what it sees in the naive sequence.
  Several roots go in one forward (right-padded, pads masked); only the positions that
  score a candidate token reach the LM head. A root whose prompt + all candidates exceed
  the model's ``max_position_embeddings`` is split into several packed rows, each with its
  own copy of the prompt. Attention implementations other than sdpa/eager (e.g. flash
  attention, which cannot take such a mask) fall back to the shared method.
* ``candidate_logprobs_split`` (``TransformersBackend`` on a CPU; ``tree_scorer`` chooses): the
  tree in two forwards per chunk of roots. Pass 1 runs the prompts right-padded with plain causal attention
  (no mask: the attention kernel skips the masked half; pads at the end are never seen by a real
  token) and keeps their keys and values. Pass 2 runs each root's candidates as ONE packed row
  ``[cand_1, cand_2, ...]`` on top of them, with a custom 4-D additive attention mask (shape
  ``[rows, 1, Lc, prompt + Lc]``, 0 = attend, dtype min = masked; transformers passes a 4-D
  ``attention_mask`` through unchanged to the sdpa/eager attention): a candidate token attends
  to its root's prompt (not the pads past it) and causally to its own candidate. Candidate
  token ``j`` gets position ``len(prompt) + j``, so every candidate sees exactly what it sees
  in the naive sequence. Only the positions that score a candidate token reach the LM head. A
  root whose prompt + all candidates exceed the model's ``max_position_embeddings`` has its
  candidates split over several rows sharing its prompt's keys and values. Attention
  implementations other than sdpa/eager (e.g. flash attention, which cannot take such a mask)
  fall back to the shared method. On a CPU this is 1.4x faster than the one-forward tree (8 roots
  of 455 tokens), whose prompt pays a dense masked attention; on a GPU, where launches count, the
  one-forward tree is faster.
* ``candidate_logprobs_naive``: every (prompt, candidate) pair is one full left-padded
  sequence; the reference.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from . import tokens
from .prefix import PrefixCache
from .tokens import DEFAULT_CONTINUATION


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


# ---------------------------------------------------------------- tokenisation

def _pad_id(tokenizer: Any) -> int:
    return tokens.pad_id(tokenizer)


def _max_positions(model: Any) -> int:
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(n) if n else 1 << 30


def _prepare(model: Any, tokenizer: Any, prompts: Sequence[str], candidates: Sequence[Sequence[str]],
             continuation: str, max_candidate_tokens: int) -> tuple[list[list[int]], list[list[list[int]]]]:
    if max_candidate_tokens < 1:
        raise ValueError(f"max_candidate_tokens must be >= 1, got {max_candidate_tokens}")
    return tokens.encode_roots(tokenizer, prompts, candidates, continuation, max_candidate_tokens,
                               max_total_tokens=_max_positions(model))


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


# ---------------------------------------------------------------- packed-tree method

_MASK_BUDGET = 1 << 27   # max rows x L x L elements of the 4-D mask per forward
_LOGIT_BUDGET = 1 << 28  # max gathered positions x vocab elements per LM-head call


def _tree_parts(model: Any) -> tuple[Any, Any] | None:
    """(decoder, lm_head) when the model can take a custom 4-D additive mask, else None."""
    cfg = getattr(model, "config", None)
    impl = getattr(cfg, "_attn_implementation", None) or "eager"
    if impl not in ("sdpa", "eager"):
        return None
    prefix = getattr(model, "base_model_prefix", "model")
    decoder = getattr(model, prefix, None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if decoder is None or head is None or decoder is model:
        return None
    return decoder, head


def _model_dtype(model: Any) -> torch.dtype:
    try:
        return next(model.parameters()).dtype
    except (StopIteration, AttributeError):
        return torch.float32


@dataclass
class _TreeJob:
    """What both packed-tree methods set up: the model's parts, the tokenised roots, the shared
    prefix taken from the cache, and the results they fill (one float64 array per root)."""

    decoder: Any
    head: Any
    p_ids: list[list[int]]
    c_ids: list[list[list[int]]]
    dev: torch.device
    pad: int
    dtype: torch.dtype
    limit: int  # a packed row's most tokens (prompt + candidates)
    skip: int   # prompt tokens every root shares with the prefix cache (their keys and values: kv)
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    results: list[np.ndarray]

    @classmethod
    def make(cls, model: Any, tokenizer: Any, prompts: Sequence[str], candidates: Sequence[Sequence[str]],
             device: Any, continuation: str, max_candidate_tokens: int, max_packed_tokens: int | None,
             prefix: PrefixCache | None) -> "_TreeJob | None":
        """None when the model's attention cannot take a 4-D mask."""
        parts = _tree_parts(model)
        if parts is None:
            return None
        decoder, head = parts
        p_ids, c_ids = _prepare(model, tokenizer, prompts, candidates, continuation, max_candidate_tokens)
        dev = _device_of(model, device)
        skip, kv = prefix.take(decoder, _cache_tensors, p_ids, dev) if prefix is not None else (0, [])
        return cls(decoder, head, p_ids, c_ids, dev, _pad_id(tokenizer), _model_dtype(model),
                   int(max_packed_tokens) if max_packed_tokens else _max_positions(model), skip, kv,
                   [np.empty(len(cs), dtype=np.float64) for cs in c_ids])

    def store_means(self, lp_tok: torch.Tensor, tgt_cand: list[int], owners: list[tuple[int, int]]) -> None:
        """Each candidate's mean over its scored tokens' log-probs ``lp_tok`` into ``results``."""
        sums = torch.zeros(len(owners), dtype=torch.float64, device=self.dev)
        sums.index_add_(0, torch.tensor(tgt_cand, dtype=torch.long, device=self.dev), lp_tok.double())
        lens = torch.tensor([len(self.c_ids[i][k]) for i, k in owners], dtype=torch.float64, device=self.dev)
        for m, (i, k) in zip((sums / lens).cpu().numpy(), owners):
            self.results[i][k] = m


def _tree_chunks(p_ids: list[list[int]], c_ids: list[list[list[int]]], limit: int, max_roots: int,
                 max_rows: int) -> list[list[tuple[int, list[int]]]]:
    """Chunks of packed candidate rows ``(root, [candidate indices])`` for one prompt pass and one
    candidate pass each. A root's candidates share one row while prompt + their tokens fit ``limit``
    (else several rows share its prompt); roots of similar prompt length go together; a chunk holds
    at most ``max_roots`` roots, ``max_rows`` candidates and a bounded mask."""
    rows: list[tuple[int, list[int], int]] = []  # (root, candidates, packed candidate tokens)
    for i in sorted(range(len(p_ids)), key=lambda i: -len(p_ids[i])):
        cur: list[int] = []
        n = 0
        for k, c in enumerate(c_ids[i]):
            if cur and len(p_ids[i]) + n + len(c) > limit:
                rows.append((i, cur, n))
                cur, n = [], 0
            cur.append(k)
            n += len(c)
        rows.append((i, cur, n))
    chunks: list[list[tuple[int, list[int]]]] = []
    cur_chunk: list[tuple[int, list[int], int]] = []
    roots: set[int] = set()
    n_cands = 0
    for row in rows:
        if cur_chunk:
            lc = max(row[2], *(r[2] for r in cur_chunk))
            keys = len(p_ids[cur_chunk[0][0]]) + lc  # the chunk's longest prompt comes first
            if (len(roots | {row[0]}) > max_roots or n_cands + len(row[1]) > max_rows
                    or (len(cur_chunk) + 1) * lc * keys > _MASK_BUDGET):
                chunks.append([(i, ks) for i, ks, _ in cur_chunk])
                cur_chunk, roots, n_cands = [], set(), 0
        cur_chunk.append(row)
        roots.add(row[0])
        n_cands += len(row[1])
    if cur_chunk:
        chunks.append([(i, ks) for i, ks, _ in cur_chunk])
    return chunks


def _prompt_pass(decoder: Any, p_ids: list[list[int]], roots: list[int], skip: int,
                 kv: list[tuple[torch.Tensor, torch.Tensor]], ckw: str, pad: int,
                 dev: torch.device) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Pass 1: the roots' prompts (past the shared ``skip`` tokens), right-padded, plain causal
    attention (pads at the end are never seen by a real token). Returns the hidden state of each
    prompt's last token [G, d] and the keys and values of every position [G, heads, skip + P, dim]."""
    G = len(roots)
    P = max(len(p_ids[i]) for i in roots) - skip
    ids = np.full((G, P), pad, dtype=np.int64)
    for g, i in enumerate(roots):
        ids[g, :len(p_ids[i]) - skip] = p_ids[i][skip:]
    pos = torch.arange(skip, skip + P, device=dev).unsqueeze(0).expand(G, -1)
    extra = {ckw: _make_cache([(k.expand(G, -1, -1, -1), v.expand(G, -1, -1, -1)) for k, v in kv])} if skip else {}
    out = decoder(input_ids=torch.from_numpy(ids).to(dev), position_ids=pos, use_cache=True, **extra)
    last = torch.tensor([len(p_ids[i]) - skip - 1 for i in roots], dtype=torch.long, device=dev)
    hidden = out.last_hidden_state[torch.arange(G, device=dev), last]
    return hidden, [(k, v) for k, v in _cache_tensors(_out_cache(out))]


def _put_candidate(rows: "_CandidateRows | _TreeRows", r: int, off: int, s: int, c: list[int], pos0: int,
                   flat0: int, first_u: int, owner: tuple[int, int]) -> None:
    """Candidate ``c`` (the row's ``s``-th) into row ``r`` from column ``off``: its ids, segment and position ids
    (``pos0 + j`` for its token j), and its scored tokens: the first by the state ``gather[first_u]`` (its
    prompt's last token), token j by the hidden state of token j - 1 (flat index ``flat0 + off + j - 1``)."""
    n = len(c)
    rows.ids[r, off:off + n] = c
    rows.seg[r, off:off + n] = s
    rows.pos[r, off:off + n] = np.arange(pos0, pos0 + n)
    u0 = len(rows.gather)
    rows.gather.extend(range(flat0 + off, flat0 + off + n - 1))
    rows.tgt_u.append(first_u)
    rows.tgt_u.extend(range(u0, u0 + n - 1))
    rows.tgt_tok.extend(c)
    rows.tgt_cand.extend([len(rows.owners)] * n)
    rows.owners.append(owner)


@dataclass
class _CandidateRows:
    """Pass 2's input: each row a root's candidates packed ``[cand_1, cand_2, ...]``, and which
    hidden states score which candidate token."""

    ids: np.ndarray    # [R, Lc] token ids (pad past the row's candidates)
    seg: np.ndarray    # [R, Lc] -1 pad, s >= 1 the s-th candidate of the row
    pos: np.ndarray    # [R, Lc] position ids: len(prompt) + j for a candidate's token j
    plen: np.ndarray   # [R] the row's prompt length (prompt keys past it are pads)
    gather: list[int] = field(default_factory=list)    # hidden states whose logits are needed: g < G a
    #                                                    prompt's last token, G + r * Lc + t pass 2's token t of row r
    tgt_u: list[int] = field(default_factory=list)     # per scored token: index into `gather`
    tgt_tok: list[int] = field(default_factory=list)   # per scored token: its id
    tgt_cand: list[int] = field(default_factory=list)  # per scored token: index into `owners`
    owners: list[tuple[int, int]] = field(default_factory=list)  # (root, candidate) of each candidate

    @classmethod
    def pack(cls, p_ids: list[list[int]], c_ids: list[list[list[int]]], chunk: list[tuple[int, list[int]]],
             slot: dict[int, int], pad: int) -> "_CandidateRows":
        R, G = len(chunk), len(slot)
        Lc = max(sum(len(c_ids[i][k]) for k in ks) for i, ks in chunk)
        rows = cls(np.full((R, Lc), pad, dtype=np.int64), np.full((R, Lc), -1, dtype=np.int64),
                   np.zeros((R, Lc), dtype=np.int64), np.zeros(R, dtype=np.int64))
        first_u: dict[int, int] = {}  # root -> its prompt's last token in `gather`
        for r, (i, ks) in enumerate(chunk):
            P = len(p_ids[i])
            rows.plen[r] = P
            if i not in first_u:
                first_u[i] = len(rows.gather)
                rows.gather.append(slot[i])
            off = 0
            for s, k in enumerate(ks, start=1):
                _put_candidate(rows, r, off, s, c_ids[i][k], P, G + r * Lc, first_u[i], (i, k))
                off += len(c_ids[i][k])
        return rows

    def mask(self, K0: int, dtype: torch.dtype, dev: torch.device) -> torch.Tensor:
        """The additive mask [R, 1, Lc, K0 + Lc] over (the K0 prompt keys, the row's own tokens): a
        candidate token sees its root's prompt and causally its own candidate; a pad sees the prompt."""
        R, Lc = self.ids.shape
        seg = torch.from_numpy(self.seg).to(dev)
        ar = torch.arange(Lc, device=dev)
        own = (seg.unsqueeze(2) == seg.unsqueeze(1)) & (ar.view(1, Lc, 1) >= ar.view(1, 1, Lc)) & (seg >= 1).unsqueeze(1)
        prompt = torch.arange(K0, device=dev).view(1, 1, K0) < torch.from_numpy(self.plen).to(dev).view(R, 1, 1)
        allowed = torch.cat([prompt.expand(R, Lc, K0), own], dim=2)
        mask = torch.zeros((R, 1, Lc, K0 + Lc), dtype=dtype, device=dev)
        return mask.masked_fill_(~allowed.unsqueeze(1), torch.finfo(dtype).min)


@torch.no_grad()
def candidate_logprobs_split(model: Any, tokenizer: Any, prompts: Sequence[str],
                             candidates: Sequence[Sequence[str]], device: Any = None, *,
                             continuation: str = DEFAULT_CONTINUATION, max_candidate_tokens: int = 32,
                             max_rows: int = 1024, max_roots: int = 32,
                             max_packed_tokens: int | None = None,
                             prefix: PrefixCache | None = None) -> list[np.ndarray]:
    """The same quantity as ``candidate_logprobs_tree``, in two forwards per chunk of roots.

    Pass 1 runs the roots' prompts (right-padded, plain causal attention, so the attention kernel
    skips the masked half and needs no mask). Pass 2 runs all candidates of each root as one packed
    row ``[cand_1, cand_2, ...]`` on top of pass 1's keys and values, with a 4-D additive mask: a
    candidate token attends to its root's prompt and causally to its own candidate only. Candidate
    token ``j`` sits at position ``len(prompt) + j``, exactly where it sits in the naive sequence.
    A root's candidates are split over several rows (sharing its prompt's keys and values) when
    prompt + candidates exceed ``max_packed_tokens`` (default the model's
    ``max_position_embeddings``). Only the hidden states that score a candidate token (each
    prompt's last position and every candidate token but its last) go through the LM head.
    Models whose attention cannot take a 4-D mask use the shared method.

    ``prefix``: a ``PrefixCache``; the tokens that every prompt of the call shares with it
    are not recomputed (their cached keys and values are attended to by every row).
    """
    return _packed(model, tokenizer, prompts, candidates, device, continuation, max_candidate_tokens, max_rows,
                   max_roots, max_packed_tokens, prefix, two_pass=True)


def _score_split(job: "_TreeJob", max_rows: int, max_roots: int) -> None:
    """``candidate_logprobs_split``'s two forwards per chunk, into ``job.results``."""
    decoder, head, p_ids, c_ids, dev, pad, dtype = job.decoder, job.head, job.p_ids, job.c_ids, job.dev, job.pad, job.dtype
    limit, skip, kv = job.limit, job.skip, job.kv
    ckw = _cache_kwarg(decoder)
    for chunk in _tree_chunks(p_ids, c_ids, limit, max_roots, max_rows):
        roots = list(dict.fromkeys(i for i, _ in chunk))
        slot = {i: g for g, i in enumerate(roots)}
        last, prompt_kv = _prompt_pass(decoder, p_ids, roots, skip, kv, ckw, pad, dev)
        K0 = int(prompt_kv[0][0].shape[2])  # skip + the longest prompt of the chunk

        # pass 2: the candidates, packed per row, on top of the prompts' keys and values
        rows = _CandidateRows.pack(p_ids, c_ids, chunk, slot, pad)
        R, Lc = rows.ids.shape
        mask = rows.mask(K0, dtype, dev)
        row_root = torch.tensor([slot[i] for i, _ in chunk], dtype=torch.long, device=dev)
        cache = _make_cache([(k.index_select(0, row_root), v.index_select(0, row_root)) for k, v in prompt_kv])
        del prompt_kv
        hidden = decoder(input_ids=torch.from_numpy(rows.ids).to(dev), attention_mask=mask,
                         position_ids=torch.from_numpy(rows.pos).to(dev), use_cache=True,
                         **{ckw: cache}).last_hidden_state
        del cache, mask
        hidden = torch.cat([last, hidden.reshape(R * Lc, -1)]).index_select(
            0, torch.tensor(rows.gather, dtype=torch.long, device=dev))
        lp_tok = _gathered_logprobs(head, hidden, rows.tgt_u, rows.tgt_tok, dev)
        job.store_means(lp_tok, rows.tgt_cand, rows.owners)


@torch.no_grad()
def candidate_logprobs_tree(model: Any, tokenizer: Any, prompts: Sequence[str],
                            candidates: Sequence[Sequence[str]], device: Any = None, *,
                            continuation: str = DEFAULT_CONTINUATION, max_candidate_tokens: int = 32,
                            max_rows: int = 1024, max_roots: int = 32,
                            max_packed_tokens: int | None = None,
                            prefix: PrefixCache | None = None) -> list[np.ndarray]:
    """The same quantity as ``candidate_logprobs_shared``, one forward per chunk of roots.

    Each root becomes one packed row ``[prompt, cand_1, cand_2, ...]`` (several rows sharing
    the prompt when the packed length would exceed ``max_packed_tokens``, default the
    model's ``max_position_embeddings``). A 4-D additive mask lets prompt tokens attend
    causally within the prompt and each candidate token attend to the whole prompt and
    causally to its own candidate only; candidate token ``j`` sits at position
    ``len(prompt) + j``, exactly where it sits in the naive sequence. Rows are right-padded
    (pads masked as keys), sorted by length and chunked (at most ``max_roots`` rows and
    ``max_rows`` candidates per forward). Only the hidden states that score a candidate
    token (the last prompt position and every candidate token but its last) go through the
    LM head. Models whose attention cannot take a 4-D mask use the shared method.

    ``prefix``: a ``PrefixCache``; the tokens that every prompt of the call shares with it
    are not recomputed (their cached keys and values are attended to by every row).
    """
    return _packed(model, tokenizer, prompts, candidates, device, continuation, max_candidate_tokens, max_rows,
                   max_roots, max_packed_tokens, prefix, two_pass=False)


def _tree_row_chunks(p_ids: list[list[int]], c_ids: list[list[list[int]]], limit: int, max_roots: int,
                     max_rows: int) -> list[list[tuple[int, list[int], int]]]:
    """Chunks of packed rows ``(root, [candidate indices], packed length)`` for one forward each: a
    root's candidates share one row ``[prompt, cand_1, ...]`` while it fits ``limit`` (a row always
    takes one candidate), rows sorted longest first, a chunk at most ``max_roots`` rows, ``max_rows``
    candidates and a bounded mask."""
    packed: list[tuple[int, list[int], int]] = []
    for i, cs in enumerate(c_ids):
        P = len(p_ids[i])
        cur: list[int] = []
        n = P
        for k, c in enumerate(cs):
            if cur and n + len(c) > limit:
                packed.append((i, cur, n))
                cur, n = [], P
            cur.append(k)
            n += len(c)
        packed.append((i, cur, n))
    packed.sort(key=lambda r: -r[2])

    chunks: list[list[tuple[int, list[int], int]]] = []
    cur_chunk: list[tuple[int, list[int], int]] = []
    n_cands = 0
    for row in packed:
        L0 = cur_chunk[0][2] if cur_chunk else row[2]
        if cur_chunk and (len(cur_chunk) >= max_roots or n_cands + len(row[1]) > max_rows
                          or (len(cur_chunk) + 1) * L0 * L0 > _MASK_BUDGET):
            chunks.append(cur_chunk)
            cur_chunk, n_cands = [], 0
        cur_chunk.append(row)
        n_cands += len(row[1])
    if cur_chunk:
        chunks.append(cur_chunk)
    return chunks


@dataclass
class _TreeRows:
    """One forward's input of the one-pass method: each row ``[prompt past the shared prefix, cand_1,
    cand_2, ...]`` and which hidden states score which candidate token."""

    ids: np.ndarray    # [R, L] token ids (pad past the row)
    seg: np.ndarray    # [R, L] -1 pad, 0 prompt, s >= 1 the s-th candidate of the row
    pos: np.ndarray    # [R, L] position ids (the shared prefix's `skip` tokens come first)
    gather: list[int] = field(default_factory=list)    # flat (row * L + t) positions whose logits are needed
    tgt_u: list[int] = field(default_factory=list)     # per scored token: index into `gather`
    tgt_tok: list[int] = field(default_factory=list)   # per scored token: its id
    tgt_cand: list[int] = field(default_factory=list)  # per scored token: index into `owners`
    owners: list[tuple[int, int]] = field(default_factory=list)  # (root, candidate) of each candidate

    @classmethod
    def pack(cls, p_ids: list[list[int]], c_ids: list[list[list[int]]], chunk: list[tuple[int, list[int], int]],
             skip: int, pad: int) -> "_TreeRows":
        R, L = len(chunk), max(r[2] for r in chunk) - skip
        rows = cls(np.full((R, L), pad, dtype=np.int64), np.full((R, L), -1, dtype=np.int64),
                   np.zeros((R, L), dtype=np.int64))
        for r, (i, ks, _) in enumerate(chunk):
            p = p_ids[i][skip:]
            P = len(p)
            rows.ids[r, :P] = p
            rows.seg[r, :P] = 0
            rows.pos[r, :P] = np.arange(skip, skip + P)
            base = r * L
            u_last = len(rows.gather)
            rows.gather.append(base + P - 1)
            off = P
            for s, k in enumerate(ks, start=1):
                _put_candidate(rows, r, off, s, c_ids[i][k], skip + P, base, u_last, (i, k))
                off += len(c_ids[i][k])
        return rows

    def mask(self, skip: int, dtype: torch.dtype, dev: torch.device) -> torch.Tensor:
        """The additive mask [R, 1, L, skip + L]: the shared prefix always seen; prompt tokens causally
        within the prompt; a candidate token the whole prompt and causally its own candidate."""
        R, L = self.ids.shape
        seg = torch.from_numpy(self.seg).to(dev)
        ar = torch.arange(L, device=dev)
        causal = (ar.view(1, L, 1) >= ar.view(1, 1, L))  # [q, k]: key not after query
        allowed = causal & ((seg.unsqueeze(2) == seg.unsqueeze(1)) | (seg == 0).unsqueeze(1))
        mask = torch.zeros((R, 1, L, skip + L), dtype=dtype, device=dev)
        mask[:, :, :, skip:].masked_fill_(~allowed.unsqueeze(1), torch.finfo(dtype).min)
        return mask


def _score_tree(job: "_TreeJob", max_rows: int, max_roots: int) -> None:
    """``candidate_logprobs_tree``'s one forward per chunk, into ``job.results``."""
    decoder, dev, skip, kv = job.decoder, job.dev, job.skip, job.kv
    ckw = _cache_kwarg(decoder) if skip else ""
    for chunk in _tree_row_chunks(job.p_ids, job.c_ids, job.limit, max_roots, max_rows):
        rows = _TreeRows.pack(job.p_ids, job.c_ids, chunk, skip, job.pad)
        R, L = rows.ids.shape
        mask = rows.mask(skip, job.dtype, dev)
        extra = {ckw: _make_cache([(k.expand(R, -1, -1, -1), v.expand(R, -1, -1, -1)) for k, v in kv]),
                 "use_cache": True} if skip else {"use_cache": False}
        hidden = decoder(input_ids=torch.from_numpy(rows.ids).to(dev), attention_mask=mask,
                         position_ids=torch.from_numpy(rows.pos).to(dev), **extra).last_hidden_state
        del extra, mask
        hidden = hidden.reshape(R * L, -1).index_select(0, torch.tensor(rows.gather, dtype=torch.long, device=dev))
        lp_tok = _gathered_logprobs(job.head, hidden, rows.tgt_u, rows.tgt_tok, dev)
        job.store_means(lp_tok, rows.tgt_cand, rows.owners)


def _packed(model: Any, tokenizer: Any, prompts: Sequence[str], candidates: Sequence[Sequence[str]], device: Any,
            continuation: str, max_candidate_tokens: int, max_rows: int, max_roots: int,
            max_packed_tokens: int | None, prefix: PrefixCache | None, two_pass: bool) -> list[np.ndarray]:
    """Both packed-tree methods: the set-up, then ``_score_split`` or ``_score_tree`` per chunk."""
    job = _TreeJob.make(model, tokenizer, prompts, candidates, device, continuation, max_candidate_tokens,
                        max_packed_tokens, prefix)
    if job is None:
        return candidate_logprobs_shared(model, tokenizer, prompts, candidates, device,
                                         continuation=continuation, max_candidate_tokens=max_candidate_tokens,
                                         max_rows=max_rows, max_roots=max_roots)
    with _attention_kernels(job.dev):
        (_score_split if two_pass else _score_tree)(job, max_rows, max_roots)
    return job.results


def _attention_kernels(dev: torch.device) -> Any:
    """On a GPU, attention by the flash, memory-efficient or math kernel, never cuDNN's: cuDNN builds an
    execution plan for every new shape, and scoring calls bring new shapes all the time (prompt lengths,
    candidate counts). Measured on an H100 in bf16 (where SDPA picks cuDNN): one root took 107-876 ms
    against 22-27 ms in fp32, whose SDPA never used cuDNN."""
    if dev.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def tree_scorer(device: torch.device | str) -> Any:
    """The packed-tree method for a model on ``device``, by measurement (same log-probs either way):
    on a CPU the prompt's attention FLOPs count, and ``candidate_logprobs_split`` (the prompt with
    plain causal attention, then the candidates) is 1.4x faster (8 roots of 455 tokens, tiny model);
    on a GPU kernel launches count, and ``candidate_logprobs_tree`` (one forward) is 1.1x (32 roots)
    to 3x (one root) faster (an H100, Qwen2.5-0.5B's shape, bf16)."""
    return candidate_logprobs_split if torch.device(device).type == "cpu" else candidate_logprobs_tree


def _gathered_logprobs(head: Any, hidden: torch.Tensor, tgt_u: list[int], tgt_tok: list[int],
                       dev: torch.device) -> torch.Tensor:
    """log softmax(head(hidden[u]))[tok] for each scored token (u, tok), the LM head run at most
    over ``_LOGIT_BUDGET`` logits at once. The log-softmax reads the head's (bf16) logits once and
    computes in float32 (``log_softmax(..., dtype=float32)``: one fused kernel on a GPU); a cast of
    the logits to float32 and a separate log-sum-exp cost 76 ms of 471 at 128 roots (H100, 0.5 B)."""
    vocab = int(head.weight.shape[0]) if hasattr(head, "weight") else 1
    step = max(1, _LOGIT_BUDGET // max(1, vocab))
    tu = torch.tensor(tgt_u, dtype=torch.long, device=dev)
    tt = torch.tensor(tgt_tok, dtype=torch.long, device=dev)
    if len(hidden) <= step:
        return torch.log_softmax(head(hidden), dim=-1, dtype=torch.float32)[tu, tt]
    lp_tok = torch.empty(len(tgt_u), dtype=torch.float32, device=dev)
    for s in range(0, len(hidden), step):
        logp = torch.log_softmax(head(hidden[s:s + step]), dim=-1, dtype=torch.float32)
        sel = ((tu >= s) & (tu < s + step)).nonzero().squeeze(1)
        lp_tok[sel] = logp[tu[sel] - s, tt[sel]]
        del logp
    return lp_tok
