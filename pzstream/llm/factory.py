"""The LLM a process scores candidate actions with: the prompt format and backend named by the
config's ``llm`` section, and the in-process prior (``LocalPrior``) that collectors and evaluation ask.
"""
from __future__ import annotations

import threading
import time
from typing import Protocol

import numpy as np

from pzstream.llm.memo import PriorMemo, memo_key

History = list[tuple[str, str, float]]  # (observation, action text, reward) of earlier steps of the episode


class PriorSource(Protocol):
    """An LLM that scores candidate actions: probabilities per root, or None when it cannot answer."""

    version: int
    net_s: float

    def prior(self, histories: list[History], observations: list[str], candidates: list[list[str]]) -> list[np.ndarray] | None: ...


def prompt_config(llm_cfg):
    """pzstream.llm.prompts.PromptConfig from the config's llm section."""
    from pzstream.llm.prompts import PromptConfig

    kw = dict(history_len=llm_cfg.history_len, max_prompt_tokens=llm_cfg.max_prompt_tokens)
    return PromptConfig.orz(**kw) if llm_cfg.prompt_format == "orz" else PromptConfig(**kw)


def make_backend(llm_cfg, prompt_cfg):
    """The scoring engine named by ``llm.backend``: transformers, or vLLM (in-place weight updates)."""
    if llm_cfg.backend == "vllm":
        from pzstream.llm.vllm_backend import VLLMBackend

        return VLLMBackend(model=llm_cfg.model, device=llm_cfg.device, temperature=llm_cfg.temperature,
                           prompt_config=prompt_cfg)
    from pzstream.llm.backend import TransformersBackend

    return TransformersBackend(model=llm_cfg.model, device=llm_cfg.device, dtype=scoring_dtype(llm_cfg),
                               temperature=llm_cfg.temperature, prompt_config=prompt_cfg, compile=llm_cfg.compile)


def scoring_dtype(llm_cfg):
    """The torch dtype of the scoring LLM (``llm.dtype``)."""
    import torch

    return getattr(torch, llm_cfg.dtype)


class LocalPrior:
    """The LLM in this process (transformers backend)."""

    def __init__(self, llm_cfg):
        self.cfg = llm_cfg
        self.prompt_cfg = prompt_config(llm_cfg)
        self.backend = make_backend(llm_cfg, self.prompt_cfg)
        self.version = 0
        self.net_s = 0.0
        self.memo = PriorMemo(max_entries=llm_cfg.memo_entries)
        self._lock = threading.Lock()

    def load(self, data: bytes, version: int) -> None:
        """In-place weight update (raises ValueError and keeps the old weights on a mismatch)."""
        with self._lock:
            self.backend.load_state_dict_bytes(data)
            self.memo.clear()
            self.version = version

    def prior(self, histories: list[History], observations: list[str], candidates: list[list[str]]) -> list[np.ndarray]:
        """Each root's prior (probabilities over its candidates); roots scored before under the same
        weights come from the memo, the others go through the LLM in one call."""
        from pzstream.llm.prompts import scoring_prompts

        t = time.perf_counter()
        with self._lock:
            prompts = scoring_prompts(self.backend.tokenizer, self.prompt_cfg, histories, observations, candidates,
                                      self.cfg.list_candidates)
            out = self.memo.answers([memo_key(p, c) for p, c in zip(prompts, candidates)], lambda todo: [
                np.exp(lp).astype(np.float32)
                for lp in self.backend.score([prompts[i] for i in todo], [candidates[i] for i in todo])])
        self.net_s += time.perf_counter() - t
        return out
