"""Configuration of the world model and its training (one frozen dataclass), and named presets."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

TEXT_ENCODERS = ("hashed", "minilm")


@dataclass(frozen=True)
class WorldModelConfig:
    """Sizes, losses and optimiser of the UniZero-style world model.

    Sequence layout: a training sample is `context_steps` past (obs, action)
    pairs, then `unroll_steps` (obs, action) pairs, then one last obs, so the
    transformer sees at most `max_tokens = 2 * (context_steps + unroll_steps) + 1`
    tokens; positions are fixed slots, the root observation always at slot
    `2 * context_steps` (missing history is masked, not shifted).
    """

    # --- model
    latent_dim: int = 64            # D: width of every token and of the obs latent
    n_layers: int = 2
    n_heads: int = 4
    context_steps: int = 4          # C: past (obs, action) pairs in the context
    max_candidates: int = 64        # K cap: candidates beyond it are dropped (collate/search)
    simnorm_group: int = 8          # SimNorm group size for latents (0 = plain L2 normalisation)
    dropout: float = 0.0
    # --- text encoder
    text_encoder: str = "hashed"    # "hashed" (trainable EmbeddingBag) or "minilm" (frozen sentence encoder)
    text_dim: int = 64              # width of the hashed text embedding (minilm: fixed 384)
    hash_buckets: int = 2 ** 14
    max_words: int = 400            # words of one text that are hashed (long intro banners are cut)
    minilm_name: str = "sentence-transformers/all-MiniLM-L6-v2"
    # --- categorical supports: bins over [-S, S] of h(x) (step 1). A scalar beyond
    # h^-1(S) is clipped, so S must cover the game's scores: the Jericho suite's largest
    # max score is 600 (spellbrkr; zork1 350, detective 360). S=32 keeps returns to
    # +-1021 and S=10 per-step rewards to +-117; `support.support_for(max_score)` sizes
    # S for a bigger game. Changing S changes the heads' shapes (old weights won't load).
    value_support: int = 32
    reward_support: int = 10
    h_eps: float = 0.001
    # --- losses (UniZero-ish weights)
    w_latent: float = 1.0
    w_reward: float = 1.0
    w_value: float = 0.25
    w_policy: float = 1.0
    w_entropy: float = 1e-4
    # --- targets / optimisation
    target_tau: float = 0.01        # EMA factor of the target model per step
    unroll_steps: int = 5           # U
    td_steps: int = 5               # n of the n-step value target
    discount: float = 0.997
    lr: float = 3e-4
    weight_decay: float = 1e-4
    batch_size: int = 32
    grad_clip: float = 5.0

    @property
    def max_tokens(self) -> int:
        return 2 * (self.context_steps + self.unroll_steps) + 1

    @property
    def root_slot(self) -> int:
        """Token slot of the current (root) observation."""
        return 2 * self.context_steps

    @property
    def value_bins(self) -> int:
        return 2 * self.value_support + 1

    @property
    def reward_bins(self) -> int:
        return 2 * self.reward_support + 1

    def validate(self) -> "WorldModelConfig":
        """Raise ValueError naming the first impossible field; return self."""
        positive = ("latent_dim", "n_layers", "n_heads", "max_candidates", "text_dim", "hash_buckets",
                    "max_words", "value_support", "reward_support", "unroll_steps", "td_steps", "batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.context_steps < 0:
            raise ValueError(f"context_steps must be >= 0, got {self.context_steps}")
        if self.latent_dim % self.n_heads:
            raise ValueError(f"latent_dim ({self.latent_dim}) must be divisible by n_heads ({self.n_heads})")
        if self.simnorm_group < 0 or (self.simnorm_group and self.latent_dim % self.simnorm_group):
            raise ValueError(f"simnorm_group ({self.simnorm_group}) must be 0 or divide latent_dim ({self.latent_dim})")
        if self.text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"text_encoder must be one of {TEXT_ENCODERS}, got {self.text_encoder!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.discount <= 1.0:
            raise ValueError(f"discount must be in (0, 1], got {self.discount}")
        if not 0.0 < self.target_tau <= 1.0:
            raise ValueError(f"target_tau must be in (0, 1], got {self.target_tau}")
        if not self.h_eps > 0.0:
            raise ValueError(f"h_eps must be > 0, got {self.h_eps}")
        for f in fields(self):
            if f.name.startswith("w_") and getattr(self, f.name) < 0:
                raise ValueError(f"{f.name} must be >= 0, got {getattr(self, f.name)}")
        for name in ("lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        return self


# --- presets: named sets of WorldModelConfig fields. A preset fills defaults; fields given
# beside it (the config's `model:` section, or overrides) win.
#
# unizero-jericho: UniZero's sizes for Jericho, from LightZero's
# zoo/jericho/configs/jericho_unizero_config.py and the UniZero policy defaults it inherits
# (lzero/policy/unizero.py), read at opendilab/LightZero 9f717c80 (2026-08-21; the Jericho
# config last changed in 81db0b2c). Their names -> ours:
#   embed_dim 768 -> latent_dim; num_layers 2 -> n_layers; num_heads 24 -> n_heads;
#   infer_context_length 4 (context_length = 2 * 4 tokens) -> context_steps;
#   num_unroll_steps 10 (max_tokens = 2 * 10) -> unroll_steps;
#   embed/resid/attn_pdrop 0.1 -> dropout; group_size 8 -> simnorm_group;
#   support_size 101 (support_scale 50) -> value_support = reward_support = 50;
#   policy_entropy_weight 5e-2 -> w_entropy; target_update_theta 0.05 -> target_tau;
#   learning_rate 1e-4, weight_decay 1e-4, batch_size 64, grad_clip_value 20, td_steps 5,
#   discount_factor 0.997 -> lr, weight_decay, batch_size, grad_clip, td_steps, discount.
# Where pzstream differs from LightZero by design: LightZero encodes observations with a BGE
# sentence encoder (BAAI/bge-base-en-v1.5, 768 wide, ~110 M parameters) that
# cannot be downloaded here; the preset keeps the trainable hashed encoder at the same width
# (text_dim 768). Actions are text embeddings here, not slots of a fixed action space
# (LightZero's Jericho action_space_size 12-55 per game; our candidate cap stays 64, above
# zork1's 55). Jericho's config normalises latents with LayerNorm and trains them with an MSE
# loss where UniZero's default has SimNorm and a group KL; pzstream keeps its SimNorm latents
# (its latent-consistency loss relies on bounded latents).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "unizero-jericho": {
        "latent_dim": 768, "n_layers": 2, "n_heads": 24, "context_steps": 4, "unroll_steps": 10,
        "dropout": 0.1, "simnorm_group": 8, "text_encoder": "hashed", "text_dim": 768,
        "value_support": 50, "reward_support": 50,
        "w_entropy": 5e-2, "target_tau": 0.05, "lr": 1e-4, "weight_decay": 1e-4, "batch_size": 64,
        "grad_clip": 20.0, "td_steps": 5, "discount": 0.997,
    },
}

PRESET_KEY = "preset"


def preset_fields(name: str) -> dict[str, Any]:
    """The WorldModelConfig fields of preset ``name``; ValueError naming the known presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown world-model preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    return dict(PRESETS[name])


_DEFAULTS = WorldModelConfig()


def _typed(name: str, value: Any) -> Any:
    """``value`` as the type of field ``name``'s default, or ValueError naming the field.

    YAML reads ``3e-4`` (no dot) as a string, so a float field also takes a numeric string;
    ints are accepted for floats, never the other way round (nor bools for numbers).
    """
    kind = type(getattr(_DEFAULTS, name))
    if kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{name} must be {kind.__name__}, got {value!r}")
    return value


def world_model_config(section: Mapping[str, Any]) -> WorldModelConfig:
    """The config's ``model:`` section -> a validated WorldModelConfig.

    ``section`` holds WorldModelConfig fields and optionally ``preset``; the preset's fields
    come first and the section's own fields override them. Unknown keys and bad values raise
    ValueError naming them.
    """
    known = {f.name for f in fields(WorldModelConfig)}
    unknown = [k for k in section if k != PRESET_KEY and k not in known]
    if unknown:
        raise ValueError(f"unknown world-model key {unknown[0]!r} "
                         f"(known: {', '.join(sorted(known | {PRESET_KEY}))})")
    preset = section.get(PRESET_KEY)
    merged: dict[str, Any] = {}
    if preset is not None:
        if not isinstance(preset, str):
            raise ValueError(f"preset must be a name, got {preset!r} (known: {', '.join(sorted(PRESETS))})")
        merged.update(preset_fields(preset))
    merged.update({k: v for k, v in section.items() if k != PRESET_KEY})
    for name, value in merged.items():
        merged[name] = _typed(name, value)
    try:
        return WorldModelConfig(**merged).validate()
    except TypeError as e:
        raise ValueError(str(e)) from None
