"""UniZero-style world model over text: a causal transformer on [obs, action] tokens.

Token layout (fixed slots, see WorldModelConfig): for S = C + U + 1 steps,

    slot:   0    1    2    3   ...  2C        2C+1      ...  2(C+U)
    token:  o_-C a_-C o_-C+1 ...    o_0(root) a_0       ...  o_U

o_t = SimNorm(proj(text(obs_t))) is the observation latent, a_t = proj(text(action_t))
is the action token (an action is its text, never a slot index, since the valid
actions of a text game change from state to state).  Missing history and steps
past an episode's end are padding: they are masked out as attention keys.

Heads (UniZero): from an obs token, value (categorical) and a policy query whose
dot product with each candidate's key gives that candidate's logit; from an
action token, the next obs latent (dynamics) and the reward (categorical).
Training teacher-forces real observations; the search feeds predicted latents.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import WorldModelConfig
from .text import TextEncoder

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (k, v), each [B, H, L, D/H]
NEG = -1e9  # logit of a padded candidate: finite so masked softmax/CE never sees inf - inf


def simnorm(x: torch.Tensor, group: int) -> torch.Tensor:
    """[..., D] -> [..., D]: softmax within consecutive groups of `group` dims (UniZero's SimNorm).

    Keeps latents bounded (each group is a point on a simplex), which stops the
    latent-consistency loss from shrinking or blowing up the latent scale.
    group == 0: plain L2 normalisation.
    """
    if group == 0:
        return F.normalize(x, dim=-1)
    shape = x.shape
    return torch.softmax(x.reshape(*shape[:-1], -1, group), dim=-1).reshape(shape)


def attention_mask(key_valid: torch.Tensor, n_query: int) -> torch.Tensor:
    """key_valid bool [B, Lk] -> bool [B, n_query, Lk], True = may attend.

    The queries are the last n_query keys (causal).  A query may always see
    itself, so padded query rows never softmax over nothing (NaN).
    """
    lk = key_valid.shape[1]
    q_pos = torch.arange(lk - n_query, lk, device=key_valid.device)[:, None]
    k_pos = torch.arange(lk, device=key_valid.device)[None, :]
    return ((k_pos <= q_pos) & key_valid[:, None, :]) | (k_pos == q_pos)


class Block(nn.Module):
    """Pre-LN transformer block whose attention can extend a KV cache."""

    def __init__(self, cfg: WorldModelConfig):
        super().__init__()
        d = cfg.latent_dim
        self.n_heads = cfg.n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x [B, L, D], mask bool [B, L, Lp + L], past (k, v) [B, H, Lp, D/H] -> x, (k, v) [B, H, Lp + L, D/H]."""
        q, k, v = self._qkv(x)
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        return self._residual(x, F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])), (k, v)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, L, D] -> q, k, v, each [B, H, L, D/H]."""
        b, n, d = x.shape
        return self.qkv(self.ln1(x)).view(b, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)

    def _residual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x [B, L, D] plus the attention output y [B, H, L, D/H] projected, then plus the MLP."""
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(x.shape)))
        return x + self.drop(self.mlp(self.ln2(x)))

    def extend(self, x: torch.Tensor, key_valid: torch.Tensor, ks: torch.Tensor, vs: torch.Tensor,
               rows: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """One new token per row, its keys and values written into a node store in place.

        x [B, 1, D]; ks, vs [B, H, T, D/H] (the rows' store, written at (``rows[b]``, column ``at[b]``),
        both long [B]); key_valid bool [B, Lk] over the store's first Lk columns (the new token's
        included, so it sees itself). Keys are attended by the mask, not by their order: the same keys
        and mask as ``forward`` with the cache concatenated give the same result, without copying it."""
        q, k, v = self._qkv(x)
        ks[rows, :, at], vs[rows, :, at] = k[:, :, 0], v[:, :, 0]
        lk = key_valid.shape[1]
        y = F.scaled_dot_product_attention(q, ks[:, :, :lk], vs[:, :, :lk], attn_mask=key_valid[:, None, None, :])
        return self._residual(x, y)


def _mlp(d_in: int, d: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d), nn.GELU(), nn.Linear(d, d_out))


@dataclass(frozen=True)
class Predictions:
    """Head outputs on the unroll part of a batch (U = unroll steps, K = padded candidates).

    value_logits [B, U+1, value_bins]; policy_logits [B, U+1, K] (NEG on padding);
    reward_logits [B, U, reward_bins]; next_latent [B, U, D].
    """

    value_logits: torch.Tensor
    policy_logits: torch.Tensor
    reward_logits: torch.Tensor
    next_latent: torch.Tensor


class WorldModel(nn.Module):
    def __init__(self, cfg: WorldModelConfig):
        super().__init__()
        self.cfg = cfg.validate()
        d = cfg.latent_dim
        self.text = TextEncoder(cfg)
        t = self.text.out_dim
        self.obs_proj = _mlp(t, d, d)     # -> obs latent (before SimNorm)
        self.act_proj = _mlp(t, d, d)     # -> action token
        self.key_proj = _mlp(t, d, d)     # -> candidate key for the policy
        self.pos = nn.Embedding(cfg.max_tokens, d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.value_head = _mlp(d, d, cfg.value_bins)
        self.policy_head = _mlp(d, d, d)
        self.reward_head = _mlp(d, d, cfg.reward_bins)
        self.dyn_head = _mlp(d, d, d)
        # nanoGPT init inside the residual stream; the projections and heads keep
        # PyTorch's fan-in init: with std 0.02 there, SimNorm latents would all start
        # at the uniform point and the latent loss would be trivially ~0.
        self.blocks.apply(self._init)
        nn.init.normal_(self.pos.weight, std=0.02)
        for head in (self.value_head, self.reward_head):  # start from a uniform categorical
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------- pieces

    def embed_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n texts -> (obs latent, action token, candidate key), each [n, D]; one text pass for all three."""
        e = self.text(texts)
        return simnorm(self.obs_proj(e), self.cfg.simnorm_group), self.act_proj(e), self.key_proj(e)

    def encode_obs(self, texts: list[str]) -> torch.Tensor:
        """n observation texts -> latents [n, D]."""
        return simnorm(self.obs_proj(self.text(texts)), self.cfg.simnorm_group)

    def transformer(self, x: torch.Tensor, positions: torch.Tensor, key_valid: torch.Tensor,
                    past: KV | None = None) -> tuple[torch.Tensor, KV]:
        """Run new tokens after an optional cache.

        x [B, L, D] token inputs; positions long [L] or [B, L] (slots, < max_tokens);
        key_valid bool [B, Lp + L] (cached keys then the new ones); past: KV with Lp keys.
        Returns final hidden [B, L, D] and the extended KV (Lp + L keys).
        """
        h = x + self.pos(positions)
        mask = attention_mask(key_valid, x.shape[1])
        kv: KV = []
        for i, block in enumerate(self.blocks):
            h, layer_kv = block(h, mask, None if past is None else past[i])
            kv.append(layer_kv)
        return self.ln_f(h), kv

    def extend(self, x: torch.Tensor, positions: torch.Tensor, key_valid: torch.Tensor,
               stores: list[tuple[torch.Tensor, torch.Tensor]], at: torch.Tensor) -> torch.Tensor:
        """``transformer`` for one new token per row whose cache lives in a node store (the search's
        recurrent step): x [B, 1, D], positions long [B, 1], stores per layer (k, v) [B, H, T, D/H]
        written in place at column ``at`` [B], key_valid bool [B, Lk]. Returns the hidden [B, 1, D]."""
        h = x + self.pos(positions)
        rows = torch.arange(x.shape[0], device=x.device)
        for block, (ks, vs) in zip(self.blocks, stores):
            h = block.extend(h, key_valid, ks, vs, rows, at)
        return self.ln_f(h)

    def value_logits(self, h: torch.Tensor) -> torch.Tensor:
        """obs-token hidden [..., D] -> [..., value_bins]."""
        return self.value_head(h)

    def policy_logits(self, h: torch.Tensor, keys: torch.Tensor, cand_mask: torch.Tensor) -> torch.Tensor:
        """obs-token hidden [..., D], candidate keys [..., K, D], mask bool [..., K] -> logits [..., K]."""
        q = self.policy_head(h)
        logits = torch.einsum("...d,...kd->...k", q, keys) / math.sqrt(q.shape[-1])
        return logits.masked_fill(~cand_mask, NEG)

    def reward_logits(self, h: torch.Tensor) -> torch.Tensor:
        """action-token hidden [..., D] -> [..., reward_bins]."""
        return self.reward_head(h)

    def next_latent(self, h: torch.Tensor) -> torch.Tensor:
        """action-token hidden [..., D] -> predicted next obs latent [..., D] (same space as encode_obs)."""
        return simnorm(self.dyn_head(h), self.cfg.simnorm_group)

    # ------------------------------------------------------------- training

    @staticmethod
    def rows(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``table[idx]`` for a [N, D] table and long indices of any shape, as an embedding lookup.

        The same values as indexing; its backward is a dense scatter-add, where indexing's is a
        sort-based ``index_put``: on a GPU the three gathers of a training step took 86-92% of its
        time that way (issue 13; ``bench/train.py --device cuda`` compares both).
        """
        return F.embedding(idx, table)

    def forward(self, batch) -> Predictions:
        """Teacher-forced pass over a `targets.Batch` (whole window in one causal forward)."""
        cfg = self.cfg
        c = cfg.context_steps
        obs_lat, act_tok, keys = self.embed_texts(list(batch.texts))
        x, key_valid = build_tokens(self.rows(obs_lat, batch.obs_idx), self.rows(act_tok, batch.act_idx), batch.step_valid)
        positions = torch.arange(x.shape[1], device=x.device)
        h, _ = self.transformer(x, positions, key_valid)
        h_obs = h[:, 2 * c::2]               # [B, U+1, D] obs slots of the unroll
        h_act = h[:, 2 * c + 1::2]           # [B, U, D] action slots of the unroll
        return Predictions(
            value_logits=self.value_logits(h_obs),
            policy_logits=self.policy_logits(h_obs, self.rows(keys, batch.cand_idx), batch.cand_mask),
            reward_logits=self.reward_logits(h_act),
            next_latent=self.next_latent(h_act),
        )


#: The seed of weights version 0. Every process that starts without weights (collectors, the
#: trainer, the prior server, evaluation, the PPO worker) must hold the same untrained model, so
#: that segments played "with wm v0" mean one model; ``untrained_world_model`` is the only place
#: that builds it.
VERSION0_SEED = 0


def untrained_world_model(cfg: WorldModelConfig) -> WorldModel:
    """Weights version 0: the world model every process starts from, identical everywhere.

    Seeded from ``VERSION0_SEED`` inside a forked RNG, so the caller's global torch RNG state
    neither changes the result nor is changed by it.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(VERSION0_SEED)
        return WorldModel(cfg)


def build_tokens(obs: torch.Tensor, act: torch.Tensor, step_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Interleave per-step tokens: obs [B, S, D], act [B, S-1, D], step_valid bool [B, S]
    -> x [B, 2S-1, D] (padding zeroed), key_valid bool [B, 2S-1].

    Step s's action token exists iff step s exists (a recorded step always has
    its action), so both slots share step_valid[s].
    """
    b, s, d = obs.shape
    x = obs.new_zeros(b, 2 * s - 1, d)
    x[:, 0::2] = obs
    x[:, 1::2] = act
    valid = step_valid.repeat_interleave(2, dim=1)[:, :2 * s - 1]
    return x * valid[..., None], valid


# ----------------------------------------------------------------- weights I/O


def weights_bytes(model: nn.Module) -> bytes:
    """The model's state_dict as bytes (torch.save; load with `load_weights_bytes`)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def load_weights_bytes(model: nn.Module, data: bytes) -> None:
    """Load bytes from `weights_bytes` into `model`, all or nothing.

    Loads with weights_only=True (the bytes may come from the network).  A
    missing/unexpected key or a shape mismatch raises ValueError naming the
    tensor before anything is copied, so the model is left unchanged.
    """
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad payload
        raise ValueError(f"weights payload cannot be loaded: {e}") from e
    if not isinstance(state, dict):
        raise ValueError(f"weights payload is a {type(state).__name__}, not a state dict")
    own = model.state_dict()
    for name in own.keys() - state.keys():
        raise ValueError(f"weights payload lacks tensor {name!r}")
    for name in state.keys() - own.keys():
        raise ValueError(f"weights payload has unexpected tensor {name!r}")
    for name, t in state.items():
        if not isinstance(t, torch.Tensor) or t.shape != own[name].shape:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"tensor {name!r}: payload shape {got} != model shape {tuple(own[name].shape)}")
    model.load_state_dict(state, strict=True)
