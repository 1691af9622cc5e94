"""Real LLM architectures with random weights, built locally: ``llm.model=random:qwen2.5-0.5b``.

No weights can be downloaded on the machines this project is benchmarked on, yet throughput
and memory depend on the real shape (hidden size, layers, grouped KV heads, MLP width and a
150k-row embedding), not on the weights. So a named shape builds a ``Qwen2ForCausalLM`` with
the published configuration of that model, weights drawn at random from a fixed seed (the
published ``initializer_range``), stored in the published dtype (bf16), with the tiny model's
locally trained byte-level BPE tokenizer (Qwen2's normaliser and pre-tokenizer, 3,004 ids:
``pzstream.llm.tiny``). The embedding keeps the real vocabulary's rows (151,936 or 152,064);
the tokenizer's ids are a subset of them, so every id the tokenizer emits is a real row and
the lm-head computes over the full vocabulary, as the real model's does. (Training a BPE of
the real vocabulary size is not done: the built-in corpus has far too few distinct pairs to
reach 151k merges, and its cost would buy nothing a benchmark measures.)

The directory it writes loads like any Hugging Face model directory, so every reader of
``llm.model`` (the transformers and vLLM backends, the prior server, the PPO runtimes and
``pzstream.parallel``) takes the name through ``tiny.resolve_model``. Built once per shape
into ``$PZSTREAM_CACHE_DIR/models/random-<shape>-v1`` (default ``~/.cache/pzstream/models``);
0.5B takes ~1 GB of disk, 1.5B ~3 GB, 7B ~15 GB (and ~15 GB of memory while it is built).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tiny import EOS, RANDOM_PREFIX, _build_tokenizer, build_once, models_dir

SEED = 2024
BUILD_VERSION = "v1"  # bump when the written files change, so old cache directories are not reused


@dataclass(frozen=True)
class LLMShape:
    """The architecture of a Qwen2-family causal LM (the fields of its ``config.json``).

    ``published_params`` is the parameter count the model card states (tied embeddings counted
    once); ``param_count()`` recomputes it from the fields.
    """

    name: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 32_768
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    dtype: str = "bfloat16"
    published_params: int | None = None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def param_count(self) -> int:
        """Parameters of ``Qwen2ForCausalLM`` of this shape (q, k, v projections carry a bias; o and
        the MLP do not; two RMSNorms per layer and one final; lm-head shared when tied)."""
        h, kv = self.hidden_size, self.num_key_value_heads * self.head_dim
        attention = (h * h + h) + 2 * (h * kv + kv) + h * h
        mlp = 3 * h * self.intermediate_size
        layer = attention + mlp + 2 * h
        embed = self.vocab_size * h
        return embed * (1 if self.tie_word_embeddings else 2) + self.num_hidden_layers * layer + h

    def qwen2_config(self, eos_id: int):
        """The ``transformers.Qwen2Config`` of this shape; bos, eos and pad are the local tokenizer's eos."""
        from transformers import Qwen2Config

        return Qwen2Config(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_key_value_heads,
            intermediate_size=self.intermediate_size, tie_word_embeddings=self.tie_word_embeddings,
            rope_theta=self.rope_theta, max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=self.rms_norm_eps, initializer_range=self.initializer_range, hidden_act="silu",
            use_sliding_window=False, bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id,
            use_cache=True,
        )

    def validate(self) -> LLMShape:
        """Raise ValueError naming the first impossible field; return self."""
        for f in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                  "intermediate_size", "vocab_size", "max_position_embeddings"):
            if getattr(self, f) < 1:
                raise ValueError(f"shape {self.name}: {f} must be >= 1, got {getattr(self, f)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"shape {self.name}: hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"shape {self.name}: num_attention_heads {self.num_attention_heads} is not a "
                             f"multiple of num_key_value_heads {self.num_key_value_heads}")
        if self.dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError(f"shape {self.name}: dtype must be bfloat16, float16 or float32, got {self.dtype!r}")
        return self


# The published configs (Hugging Face Qwen/Qwen2.5-*-Instruct config.json; the base models differ
# only in max_position_embeddings) and parameter counts (Qwen2.5 model cards / technical report).
SHAPES: dict[str, LLMShape] = {s.name: s for s in (
    LLMShape("qwen2.5-0.5b", hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
             intermediate_size=4864, vocab_size=151_936, tie_word_embeddings=True, published_params=494_032_768),
    LLMShape("qwen2.5-1.5b", hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
             intermediate_size=8960, vocab_size=151_936, tie_word_embeddings=True, published_params=1_543_714_304),
    LLMShape("qwen2.5-7b", hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
             intermediate_size=18_944, vocab_size=152_064, tie_word_embeddings=False, published_params=7_615_616_512),
)}


def shape_named(name: str) -> LLMShape:
    """The shape called ``name`` (case-insensitive); ValueError naming the known shapes."""
    key = name.strip().lower()
    if key not in SHAPES:
        known = ", ".join(RANDOM_PREFIX + n for n in SHAPES)
        raise ValueError(f"unknown random LLM shape {name!r} (known: {known})")
    return SHAPES[key]


def build_random_model(shape: LLMShape, eos_id: int, device: Any = "cpu"):
    """A ``Qwen2ForCausalLM`` of ``shape`` in its dtype, weights drawn from ``SEED``.

    ``device="meta"`` allocates nothing (shapes and parameter counts only). The caller's global
    torch RNG is neither read nor changed.
    """
    import torch
    from transformers import Qwen2ForCausalLM

    cfg = shape.validate().qwen2_config(eos_id)
    # Built directly in the stored dtype: a 7B model never exists in fp32 (30 GB) on the way.
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(SEED)
        model = Qwen2ForCausalLM._from_config(cfg, dtype=getattr(torch, shape.dtype))
    return model.eval()


def build_random(shape: LLMShape | str, out_dir: Path | None = None) -> Path:
    """Build model + tokenizer of ``shape`` (a name or an ``LLMShape``) once; return the directory.

    Default directory: ``models_dir() / f"random-{shape.name}-{BUILD_VERSION}"``; reused when
    complete, safe when processes race (``tiny.build_once``).
    """
    shape = shape_named(shape) if isinstance(shape, str) else shape.validate()

    def write(tmp: Path) -> None:
        tokenizer = _build_tokenizer()
        if len(tokenizer) > shape.vocab_size:
            raise ValueError(f"shape {shape.name}: vocab_size {shape.vocab_size} < the tokenizer's {len(tokenizer)} ids")
        tokenizer.model_max_length = shape.max_position_embeddings
        model = build_random_model(shape, tokenizer.convert_tokens_to_ids(EOS))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    out = Path(out_dir) if out_dir is not None else models_dir() / f"random-{shape.name}-{BUILD_VERSION}"
    return build_once(out, write, f"random {shape} seed={SEED}")
