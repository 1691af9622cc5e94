"""LLM backends: scoring candidate actions (the MCTS root prior) and generation.

``LLMBackend`` is the interface collectors and the learner use. ``TransformersBackend``
implements it with Hugging Face transformers on CPU or one GPU.

vLLM is a later step: a vLLM backend (in-place weight update through the worker's
``model_runner.reload_weights``; see docs/DESIGN) will implement the same protocol. It is
deliberately not stubbed here.

Weights travel as safetensors bytes (never pickle). With tied embeddings the state dict
holds the same tensor under two names (``model.embed_tokens.weight`` and
``lm_head.weight``); ``state_dict_bytes`` writes it once, under the first name, and
``load_state_dict_bytes`` accepts payloads with or without the alias.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from .prefix import PrefixCache
from .prior import candidate_logprobs_shared, candidate_logprobs_tree, prior_from_logprobs, tree_scorer  # noqa: F401
from .prompts import PromptConfig, scoring_prompts
from .tiny import resolve_model
from .tokens import answer_end_id


@runtime_checkable
class LLMBackend(Protocol):
    """What the rest of pzstream needs from an LLM."""

    version: int

    def score(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Prior log-probs (``prior_from_logprobs`` of mean candidate log-probs), one array per root."""
        ...

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 32, temperature: float = 0.0) -> list[str]:
        """Completions (new text only) of each prompt; ``temperature`` 0 is greedy."""
        ...

    def load_state_dict_bytes(self, data: bytes) -> None:
        """Replace the weights in place from ``state_dict_bytes`` output of the same architecture."""
        ...

    def state_dict_bytes(self) -> bytes:
        """The weights as safetensors bytes."""
        ...


def load_model_and_tokenizer(model: str = "tiny", device: str | torch.device = "cpu",
                             dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """``resolve_model`` then ``from_pretrained``; the tokenizer pads on the left and has a pad token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(model)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    mdl = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    mdl.to(device).eval()
    return mdl, tok


def _unique_state(model: Any) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """State dict without aliases, and alias name -> canonical name."""
    unique: dict[str, torch.Tensor] = {}
    seen: dict[tuple[int, int, tuple, tuple], str] = {}
    aliases: dict[str, str] = {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if t.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        unique[name] = t
    return unique, aliases


class TransformersBackend:
    """``LLMBackend`` on Hugging Face transformers.

    ``model``: ``"tiny"`` (built locally), a model directory, or a Hugging Face repo id the
    user has cached. ``temperature``: the prior temperature of ``prior_from_logprobs``.
    ``prompt_config``: used by ``score_states`` and for the continuation format in ``score``.
    ``compile``: torch.compile the decoder layers for scoring (a GPU only; the first calls compile).
    """

    def __init__(self, model: str = "tiny", device: str = "cpu", dtype: torch.dtype = torch.float32,
                 temperature: float = 2.0, prompt_config: PromptConfig | None = None,
                 max_rows: int = 1024, max_roots: int = 32, max_candidate_tokens: int = 32,
                 compile: bool = False) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.temperature = float(temperature)
        self.prompt_config = prompt_config or PromptConfig()
        self.max_rows, self.max_roots, self.max_candidate_tokens = max_rows, max_roots, max_candidate_tokens
        self.model, self.tokenizer = load_model_and_tokenizer(model, self.device, dtype)
        if compile:
            from pzstream.compiled import compile_blocks, decoder_layers

            compile_blocks(decoder_layers(self.model), self.device, scoring=True)
        self.version = 0
        self.prefix = PrefixCache()  # the prompts' shared template head, computed once per weights

    # ---------------------------------------------------------------- scoring
    def mean_logprobs(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Mean candidate log-probs before the prior temperature/softmax (packed-tree method;
        ``candidate_logprobs_shared`` computes the same numbers with per-candidate KV copies)."""
        return tree_scorer(self.device)(
            self.model, self.tokenizer, list(prompts), [list(c) for c in candidates], self.device,
            continuation=self.prompt_config.continuation_template,
            max_candidate_tokens=self.max_candidate_tokens, max_rows=self.max_rows, max_roots=self.max_roots,
            prefix=self.prefix)

    def score(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return [prior_from_logprobs(m, self.temperature) for m in self.mean_logprobs(prompts, candidates)]

    def score_states(self, histories: Sequence[Sequence[Any] | None], observations: Sequence[str],
                     candidates: Sequence[Sequence[str]], list_candidates: bool = False) -> list[np.ndarray]:
        """Build each root's prompt with ``fit_prompt`` (history, observation), then ``score``."""
        return self.score(scoring_prompts(self.tokenizer, self.prompt_config, histories, observations, candidates,
                                          list_candidates), candidates)

    # ---------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(self, prompts: Sequence[str], max_new_tokens: int = 32, temperature: float = 0.0) -> list[str]:
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, not a string")
        prompts = list(prompts)
        if not prompts:
            return []
        tok = self.tokenizer
        limit = max(1, int(getattr(self.model.config, "max_position_embeddings", 2048)) - max_new_tokens)
        enc = [tok(str(p), add_special_tokens=False)["input_ids"][-limit:] or [tok.eos_token_id] for p in prompts]
        T = max(len(x) for x in enc)
        ids = torch.full((len(enc), T), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(enc), T), dtype=torch.long)
        for r, x in enumerate(enc):
            ids[r, T - len(x):] = torch.tensor(x)
            mask[r, T - len(x):] = 1
        kw: dict[str, Any] = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                                  eos_token_id=answer_end_id(tok))
        if temperature and temperature > 0:
            kw.update(do_sample=True, temperature=float(temperature), top_k=0, top_p=1.0)
        else:
            kw.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kw)
        return tok.batch_decode(out[:, T:].cpu(), skip_special_tokens=True)

    # ---------------------------------------------------------------- weights
    def state_dict_bytes(self) -> bytes:
        from safetensors.torch import save

        unique, _ = _unique_state(self.model)
        return save({k: v.detach().to("cpu").contiguous() for k, v in unique.items()})

    @torch.no_grad()
    def load_state_dict_bytes(self, data: bytes) -> None:
        """In-place copy of every tensor; all names and shapes are checked first, so on any
        error (``ValueError`` naming the tensor) the model is unchanged. Dtypes are cast."""
        from safetensors.torch import load

        try:
            incoming = load(bytes(data))
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"weights payload is not valid safetensors data: {e}") from e
        unique, aliases = _unique_state(self.model)
        for name, t in incoming.items():
            target = unique.get(name)
            if target is None and name in aliases:
                target = unique[aliases[name]]
            if target is None:
                raise ValueError(f"unexpected tensor {name!r} in weights payload (not in the model)")
            if tuple(t.shape) != tuple(target.shape):
                raise ValueError(f"shape mismatch for tensor {name!r}: payload {tuple(t.shape)}, "
                                 f"model {tuple(target.shape)}")
        missing = [n for n in unique if n not in incoming
                   and not any(a in incoming for a, c in aliases.items() if c == n)]
        if missing:
            raise ValueError(f"weights payload lacks {len(missing)} tensor(s), e.g. {missing[0]!r}")
        for name, t in incoming.items():
            target = unique.get(name)
            if target is None:
                target = unique[aliases[name]]
            target.copy_(t.to(device=target.device, dtype=target.dtype))
        self.prefix.clear()
        self.version += 1
