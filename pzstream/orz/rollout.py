"""Rollouts: ``n`` responses per prompt, as token ids, from vLLM or transformers.

Two answer modes (``ppo.answer_mode``):
- ``free``: sample up to ``max_tokens`` tokens (stop at EOS) after the generation prompt.
- ``choice``: the prompt is the prior's scoring prompt (ending ``</think>\n<answer>``) and the
  response is one of the allowed answers, ``CANDIDATE</answer>`` + EOS, encoded by
  ``pzstream.llm.tokens`` exactly as the collectors' prior scores it. It is drawn from
  q(c) = softmax(score(c) / T), score = the mean token log-prob past the tokens all answers
  share: the length-normalised distribution the collectors' prior is made of. The engine scores
  every allowed answer (prompt computed once: vLLM's prefix cache, or one packed batch in
  transformers), then ``sample_choices`` draws. PPO then trains that same q, not the
  token-level sequence probability: ``ppo_math.choice_advantages`` spreads an answer's advantage
  over its decided tokens as A / (T * n), so the token-level update moves score(c) / T by A
  whatever the answer's length (unweighted, a long answer got len(c) * T times that push).

    lps = engine_choice_logprobs(...)                          # [P][K_i] token log-prob arrays
    picks = sample_choices(choice_scores(lps, skip), n=4, temperature=1.0, seed=0)   # [P][n] indices
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from pzstream.llm.tokens import answer_end_id


def cut_at_eos(ids: list[int], eos: int | None) -> list[int]:
    if eos is not None and eos in ids:
        return ids[:ids.index(eos) + 1]
    return ids


def shared_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Tokens every allowed answer begins with: they carry no decision (their advantage is zeroed)."""
    if len(seqs) < 2:
        return 0
    n = 0
    for column in zip(*seqs):
        if len(set(column)) != 1:
            break
        n += 1
    return n


def sample_choices(logprobs: Sequence[np.ndarray], n: int, temperature: float, seed: int) -> list[list[int]]:
    """``n`` indices per prompt from softmax(logprobs / temperature) (pure, seeded)."""
    rng = np.random.default_rng(seed)
    out = []
    for lp in logprobs:
        z = np.asarray(lp, dtype=np.float64) / temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        out.append([int(i) for i in rng.choice(len(p), size=n, p=p)])
    return out


@torch.no_grad()
def left_padded(prompt_ids: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of different lengths as one batch for generation: (ids, attention mask), padded on the left."""
    width = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for i, p in enumerate(prompt_ids):
        if not p:
            raise ValueError(f"prompt {i} is empty")
        ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids, mask


def transformers_sample(model: Any, tokenizer: Any, prompt_ids: Sequence[list[int]], n: int, max_tokens: int,
                        temperature: float, seed: int, min_tokens: int = 0,
                        static_cache: bool = False) -> list[list[list[int]]]:
    """Free-mode sampling with a transformers model: all prompts x ``n`` answers in one batched
    ``generate`` (left-padded), in bfloat16 autocast on a GPU. ``min_tokens`` (benchmarks) keeps
    every answer going that long; ``temperature`` 0 is greedy. Returns the answers of prompt i as
    list i, each cut at EOS. ``static_cache``: a preallocated KV cache, with which transformers
    compiles the decoding step on a GPU (fastest for a model that stays in bf16 between calls)."""
    if not prompt_ids:
        return []
    model.eval()
    torch.manual_seed(seed)
    eos = answer_end_id(tokenizer)  # an instruct model ends its turn with the template's end-of-turn token
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    device = next(model.parameters()).device
    ids, mask = left_padded(prompt_ids, pad)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        sampling = dict(do_sample=True, temperature=float(temperature), top_k=0, top_p=1.0) if temperature > 0 else \
            dict(do_sample=False, temperature=None, top_k=None, top_p=None)
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **sampling, num_return_sequences=n,
                             max_new_tokens=max_tokens, min_new_tokens=min_tokens, pad_token_id=pad, eos_token_id=eos,
                             **({"cache_implementation": "static"} if static_cache else {}))
    answers = gen[:, ids.shape[1]:].tolist()  # num_return_sequences keeps a prompt's n answers together
    return [[cut_at_eos(answers[i * n + j], eos) for j in range(n)] for i in range(len(prompt_ids))]


class GenerationCopy:
    """A bfloat16 copy of a model kept for sampling, the in-process runtime's stand-in for a
    rollout engine: the fp32 policy trains, the copy generates with a static KV cache (compiled
    decoding on a GPU). Measured on an H200 at 0.5 B, batch 64, 256 new tokens: 12,872 tokens/s
    against 3,735 sampling from the fp32 policy under autocast (bench/generate.py).
    ``refresh()`` after every update copies the policy's weights in; nothing else changes."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16):
        import copy

        self.source = model
        self.model = copy.deepcopy(model).to(dtype).eval().requires_grad_(False)

    @torch.no_grad()
    def refresh(self) -> None:
        for mine, theirs in zip(self.model.state_dict().values(), self.source.state_dict().values()):
            mine.copy_(theirs)

    def sample(self, tokenizer: Any, prompt_ids: Sequence[list[int]], n: int, max_tokens: int, temperature: float,
               seed: int) -> list[list[list[int]]]:
        return transformers_sample(self.model, tokenizer, prompt_ids, n, max_tokens, temperature, seed,
                                   static_cache=True)


def vllm_sample(llm: Any, prompt_ids: Sequence[list[int]], n: int, max_tokens: int,
                temperature: float) -> list[list[list[int]]]:
    """Free-mode sampling with a ``vllm.LLM`` (seeded at engine level: per-request seeds crash
    vLLM's CPU sampler, 'CPU Generator does not use offset')."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    # stop at the answers' end token too: an instruct model's end of turn need not be its eos
    params = SamplingParams(n=n, temperature=float(temperature), top_p=1.0, top_k=-1, max_tokens=max_tokens,
                            stop_token_ids=[answer_end_id(llm.get_tokenizer())])
    outs = llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids], params, use_tqdm=False)
    return [[list(c.token_ids) for c in o.outputs] for o in outs]


def vllm_choice_logprobs(llm: Any, prompt_ids: Sequence[list[int]],
                         choices: Sequence[Sequence[list[int]]]) -> list[list[np.ndarray]]:
    """Token log-probs of each allowed answer after its prompt (prompt log-probs; prefix cache)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    reqs, spans = [], []
    for p, cs in zip(prompt_ids, choices):
        for c in cs:
            reqs.append(TokensPrompt(prompt_token_ids=list(p) + list(c)))
            spans.append((list(p) + list(c), len(c)))
    outs = llm.generate(reqs, SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0), use_tqdm=False)
    flat = [np.array([o.prompt_logprobs[i][ids[i]].logprob for i in range(len(ids) - k, len(ids))])
            for o, (ids, k) in zip(outs, spans)]
    result, at = [], 0
    for cs in choices:
        result.append(flat[at:at + len(cs)])
        at += len(cs)
    return result


def choice_scores(token_logprobs: Sequence[Sequence[np.ndarray]], skip: Sequence[int]) -> list[np.ndarray]:
    """Per prompt, each allowed answer's mean token log-prob past the ``skip`` shared tokens: the
    length-normalised score the collectors' prior uses (a sum would make short answers win), and
    the one PPO trains in choice mode (``ppo_math.choice_advantages``)."""
    return [np.array([float(np.mean(lp[k:])) if len(lp) > k else 0.0 for lp in row]) for row, k in zip(token_logprobs, skip)]


def vllm_greedy(llm: Any, prompt_ids: Sequence[list[int]], max_tokens: int) -> list[list[int]]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    outs = llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids],
                        SamplingParams(temperature=0.0, max_tokens=max_tokens), use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]
