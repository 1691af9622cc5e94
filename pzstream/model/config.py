"""Configuration of the world model and its training (one frozen dataclass)."""
from __future__ import annotations

from dataclasses import dataclass, fields

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
