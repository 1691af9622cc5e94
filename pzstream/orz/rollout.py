"""Rollout generation: ``n`` responses per prompt, as token ids, from vLLM or transformers.

Two answer modes:
- ``free``: sample up to ``max_tokens`` tokens (stop at EOS).
- ``choice``: decoding is constrained to the strings of ``choices[i]`` (for PPO on a text game:
  ``</think>\\n<answer>CANDIDATE</answer>``), then EOS. vLLM does this with its structured
  outputs (``choice``); transformers with a token trie over each choice's own tokenisation.
  vLLM's grammar admits any tokenisation of a choice, the trie only the canonical one: both
  sample from the policy's next-token distribution masked to what can still complete a choice.

    gen = TransformersGenerator(model, tokenizer)
    responses = gen.generate(prompt_ids, choices, n=4, max_tokens=64, temperature=1.0, seed=0)
    responses[i][j]   # token ids of the j-th response to prompt i (EOS included when emitted)
"""
from __future__ import annotations

from typing import Any, Sequence

import torch


def _cut_at_eos(ids: list[int], eos: int | None) -> list[int]:
    if eos is not None and eos in ids:
        return ids[:ids.index(eos) + 1]
    return ids


class ChoiceTrie:
    """Token-id prefix tree of allowed responses; each ends with EOS."""

    def __init__(self, sequences: Sequence[Sequence[int]]):
        self.root: dict[int, dict] = {}
        for seq in sequences:
            node = self.root
            for tok in seq:
                node = node.setdefault(int(tok), {})

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        node = self.root
        for tok in prefix:
            node = node.get(int(tok))
            if node is None:
                return []
        return list(node)


class TransformersGenerator:
    """Sampling with a transformers model (the in-process runtime: the policy model itself)."""

    def __init__(self, model: Any, tokenizer: Any):
        self.model = model
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos

    @torch.no_grad()
    def generate(self, prompt_ids: Sequence[list[int]], choices: Sequence[list[str]] | None, n: int, max_tokens: int,
                 temperature: float, seed: int) -> list[list[list[int]]]:
        self.model.eval()
        torch.manual_seed(seed)
        out: list[list[list[int]]] = []
        for i, p in enumerate(prompt_ids):
            ids = torch.tensor([list(p)])
            kw: dict[str, Any] = dict(do_sample=True, temperature=float(temperature), top_k=0, top_p=1.0,
                                      num_return_sequences=n, pad_token_id=self.pad, eos_token_id=self.eos)
            if choices is not None:
                seqs = [self.tokenizer(c, add_special_tokens=False)["input_ids"] + [self.eos] for c in choices[i]]
                trie = ChoiceTrie(seqs)
                start = len(p)
                kw["prefix_allowed_tokens_fn"] = lambda _b, x, trie=trie, start=start: (
                    trie.allowed(x[start:].tolist()) or [self.eos])
                kw["max_new_tokens"] = max(len(s) for s in seqs)
            else:
                kw["max_new_tokens"] = max_tokens
            gen = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
            out.append([_cut_at_eos(row[len(p):].tolist(), self.eos) for row in gen])
        return out


def vllm_generate(llm: Any, prompt_ids: Sequence[list[int]], choices: Sequence[list[str]] | None, n: int,
                  max_tokens: int, temperature: float, seed: int) -> list[list[list[int]]]:
    """The same with a ``vllm.LLM`` (one request per prompt, ``n`` samples each)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import StructuredOutputsParams

    params = []
    for i in range(len(prompt_ids)):
        kw: dict[str, Any] = dict(n=n, temperature=float(temperature), top_p=1.0, top_k=-1, max_tokens=max_tokens,
                                  seed=seed + i)
        if choices is not None:
            kw["structured_outputs"] = StructuredOutputsParams(choice=list(choices[i]))
        params.append(SamplingParams(**kw))
    outs = llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids], params, use_tqdm=False)
    return [[list(c.token_ids) for c in o.outputs] for o in outs]


def vllm_greedy(llm: Any, prompt_ids: Sequence[list[int]], max_tokens: int) -> list[list[int]]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    outs = llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids],
                        SamplingParams(temperature=0.0, max_tokens=max_tokens), use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]
