"""PriorZero's LLM training: samples from segments, the SFT / RFT losses, and a trainer.

PriorZero (LightZero ``zoo/jericho/priorzero``) trains the LLM that gives MCTS its root prior
in two ways, both from what the collectors' search found:

- **SFT**: teach the LLM the search's decision. ``sft`` is plain next-token cross-entropy on
  the text of the chosen action after the prompt; ``sft_visits`` scores every candidate (mean
  log-prob of its tokens after the prompt) and fits that candidate distribution to the search's
  visit distribution (cross-entropy, i.e. KL up to the visits' entropy).
- **RFT**: PPO with clipping on the chosen action's tokens, advantage = n-step value target
  minus the search's root value, plus a k3 KL estimate against a frozen reference copy.

Token conventions are those of ``prior.py`` (prompt and ``" {action}"`` tokenised apart, mean
over the action's tokens), so SFT moves exactly the scores the collectors' prior is made of.

Everything a loss needs is computed first (teacher-forced token log-probs from one batched,
right-padded forward); the losses themselves are small pure functions on tensors, read top to
bottom.

    samples = samples_from_segments(segments, PromptConfig())
    trainer = LLMTrainer(model, tokenizer, mode="sft", lr=3e-3)
    metrics = trainer.step(samples[:16])           # {"train/llm_sft_loss": ..., "train/llm_kl": ...}
    agreement(model, tokenizer, held_out)           # fraction where the LLM's top candidate == chosen
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..model.targets import n_step_values, stitch
from ..stream.wire import Segment
from .prior import DEFAULT_CONTINUATION, candidate_logprobs_shared
from .prompts import PromptConfig, build_prompt, fit_prompt


# =============================================================== samples


@dataclass(frozen=True, eq=False)
class LLMSample:
    """One decision to learn from.

    prompt: the text before the action (history + current observation);
    candidates [K]: the valid actions; chosen: index of the search's action in candidates;
    visits float32 [K]: the search's visit distribution (sums to 1);
    advantage: for RFT (see ``samples_from_segments``);
    old_logprob: mean per-token log-prob of candidates[chosen] under the LLM that acted
    (None: unknown, the trainer then treats the sample as on-policy).
    """

    prompt: str
    candidates: list[str]
    chosen: int
    visits: np.ndarray
    advantage: float
    old_logprob: float | None = None


def make_prompt(cfg: PromptConfig, history: Sequence[tuple[str, str, float]], observation: str,
                tokenizer: Any = None) -> str:
    """The scoring prompt of one step (``prompts.fit_prompt`` when a tokenizer is given, so it
    fits ``cfg.max_prompt_tokens``; else ``prompts.build_prompt``, uncut)."""
    if tokenizer is not None:
        return fit_prompt(tokenizer, cfg, list(history), observation)
    return build_prompt(cfg, list(history), observation)


def reward_to_go(reward: np.ndarray, discount: float) -> np.ndarray:
    """Discounted return from each step to the end of the chunk: G_t = r_t + discount G_{t+1}."""
    g = np.zeros(len(reward), np.float64)
    acc = 0.0
    for t in range(len(reward) - 1, -1, -1):
        acc = float(reward[t]) + discount * acc
        g[t] = acc
    return g.astype(np.float32)


def samples_from_segments(segments: Sequence[Segment], prompt_cfg: PromptConfig | None = None,
                          value_targets: Sequence[np.ndarray] | None = None, *, chosen: str = "action",
                          td_steps: int = 5, discount: float = 0.99, tokenizer: Any = None) -> list[LLMSample]:
    """Real segments -> one ``LLMSample`` per step (episodes stitched, in segment order).

    prompt: ``prompts.build_prompt`` over the last ``prompt_cfg.history_len`` (observation,
    action, reward) steps of the same episode (as far back as the stitched chunk reaches) and
    the current observation; with ``tokenizer``, ``prompts.fit_prompt`` cuts it to
    ``prompt_cfg.max_prompt_tokens``.
    chosen: "action" = the executed action (``action_index``; with MCTS this is the action the
    search picked); "visits" = the most visited candidate (ties: the executed one).
    advantage, per step:
    - where the root value is finite: z_t - root_value_t, with z = ``value_targets`` (one
      float32 [T] per segment, aligned with ``segments``) when given, else the n-step return
      (``td_steps``, ``discount``) bootstrapped on the root values (as the world-model trainer);
    - where it is NaN (random or scripted play, no search): the discounted reward-to-go within
      the chunk, normalised to mean 0 / std 1 over all such steps of this call (std floored at 1e-6).
    """
    prompt_cfg = prompt_cfg if prompt_cfg is not None else PromptConfig()
    if chosen not in ("action", "visits"):
        raise ValueError(f"chosen must be 'action' or 'visits', got {chosen!r}")
    z_by_step: dict[tuple, float] = {}
    if value_targets is not None:
        if len(value_targets) != len(segments):
            raise ValueError(f"value_targets: {len(value_targets)} arrays for {len(segments)} segments")
        for seg, z in zip(segments, value_targets):
            h = seg.header
            for t in range(seg.n_steps):
                z_by_step[(h.game, h.collector_id, h.episode_id, h.step0 + t)] = float(z[t])
    out: list[LLMSample] = []
    adv: list[float] = []
    rtg_rows: list[int] = []
    for ep in stitch(segments):
        boot = np.nan_to_num(ep.root_value, nan=0.0, posinf=0.0, neginf=0.0)
        nstep = n_step_values(ep.reward, ep.done, boot, td_steps, discount)
        rtg = reward_to_go(ep.reward, discount)
        history: list[tuple[str, str, float]] = []
        for t in range(len(ep)):
            cands, visits = ep.candidates[t], np.asarray(ep.visits[t], np.float32)
            acted = int(ep.action_index[t])
            if chosen == "visits":
                c = int(np.argmax(visits))
                c = acted if visits[acted] >= visits[c] else c
            else:
                c = acted
            rv = float(ep.root_value[t])
            if math.isfinite(rv):
                z = z_by_step.get((*ep.key, ep.step0 + t), float(nstep[t]))
                adv.append(z - rv)
            else:
                adv.append(float(rtg[t]))
                rtg_rows.append(len(out))
            out.append(LLMSample(make_prompt(prompt_cfg, history, ep.observations[t], tokenizer), list(cands), c,
                                 visits, 0.0))
            history.append((ep.observations[t], ep.action_text[t], float(ep.reward[t])))
    a = np.asarray(adv, np.float64)
    if rtg_rows:
        r = a[rtg_rows]
        a[rtg_rows] = (r - r.mean()) / max(float(r.std()), 1e-6)
    return [LLMSample(s.prompt, s.candidates, s.chosen, s.visits, float(x), s.old_logprob) for s, x in zip(out, a)]


# =============================================================== losses (pure)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return x.mean()
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def sft_ce_loss(token_logprobs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy on the chosen action's tokens: -mean log p(token | prompt, earlier tokens).

    token_logprobs [B, L]: teacher-forced log-probs of the action tokens; mask [B, L]: real tokens.
    Token-level mean over the batch (long actions weigh more, as in ordinary SFT).
    """
    return -masked_mean(token_logprobs, mask)


def sft_visit_loss(candidate_scores: torch.Tensor, visits: torch.Tensor,
                   cand_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the LLM's candidate distribution against the search's visits.

    candidate_scores [K] or [B, K]: mean token log-prob of each candidate after the prompt;
    softmax over them is the LLM's prior over candidates (as the collectors use it).
    visits [K] or [B, K]: target distribution; cand_mask [B, K]: real candidates (padding False).
    Loss = mean_b -sum_k visits_bk log softmax(scores_b)_k.
    """
    if candidate_scores.dim() == 1:
        candidate_scores, visits = candidate_scores[None], visits[None]
        cand_mask = cand_mask[None] if cand_mask is not None else None
    if cand_mask is not None:
        candidate_scores = candidate_scores.masked_fill(~cand_mask, float("-inf"))
    log_prior = torch.log_softmax(candidate_scores, dim=-1)
    log_prior = torch.where(visits > 0, log_prior, torch.zeros_like(log_prior))  # 0 * -inf on padding
    return -(visits * log_prior).sum(-1).mean()


def ppo_clip_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, advantage: torch.Tensor,
                  eps: float = 0.2, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PPO's clipped surrogate, negated (a loss), elementwise then masked mean.

    ratio = exp(logp_new - logp_old); loss = -min(ratio A, clip(ratio, 1-eps, 1+eps) A).
    Shapes broadcast: per token [B, L] with advantage [B, 1], or per sequence [B] with [B].
    """
    ratio = torch.exp(logp_new - logp_old)
    unclipped = ratio * advantage
    clipped = torch.clamp(ratio, 1.0 - eps, 1.0 + eps) * advantage
    return masked_mean(-torch.minimum(unclipped, clipped), mask)


def k3_kl(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(policy || ref) per token: exp(d) - d - 1, d = ref - logp.

    Non-negative, zero where the two agree; elementwise (mask / mean it yourself).
    """
    d = logp_ref - logp
    return torch.exp(d) - d - 1.0


def rft_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, logp_ref: torch.Tensor, advantage: torch.Tensor,
             mask: torch.Tensor | None = None, eps: float = 0.2, kl_coef: float = 0.05,
             ratio_logp_new: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RFT = PPO clip on the executed action's tokens + kl_coef * mean k3 KL to the reference.

    logp_new / logp_ref / mask [B, L]: token log-probs; logp_old and advantage broadcast to the
    ratio's shape. ratio_logp_new: what the ratio is taken of when it is not per token (e.g.
    [B] mean log-probs against a per-sequence logp_old); default logp_new.
    Returns (loss, ppo part, kl part).
    """
    if ratio_logp_new is None:
        ppo = ppo_clip_loss(logp_new, logp_old, advantage, eps, mask)
    else:
        ppo = ppo_clip_loss(ratio_logp_new, logp_old, advantage, eps)
    kl = masked_mean(k3_kl(logp_new, logp_ref), mask)
    return ppo + kl_coef * kl, ppo, kl


# =============================================================== teacher-forced log-probs


def _pad_id(tokenizer) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        v = getattr(tokenizer, name, None)
        if v is not None:
            return int(v)
    return 0


def encode_pair(tokenizer, prompt: str, action: str, continuation: str = DEFAULT_CONTINUATION,
                max_prompt_tokens: int | None = None, max_candidate_tokens: int = 32) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the action's continuation, as ``prior.py`` scores them.

    Tokenised separately (``continuation.format(action=...)``, default ``" {action}"``, no
    special tokens), so the action's tokens are the same after every prompt; the action is cut
    to ``max_candidate_tokens``; the prompt keeps its last ``max_prompt_tokens`` tokens; an
    empty prompt or action becomes the eos token. Training and scoring use this one encoding,
    so what SFT raises is exactly what the collectors' prior reads.
    """
    eos = _eos_id(tokenizer)
    p = list(tokenizer(prompt, add_special_tokens=False)["input_ids"]) or [eos]
    if max_prompt_tokens is not None and len(p) > max_prompt_tokens:
        p = p[-max_prompt_tokens:]
    a = list(tokenizer(continuation.format(action=action), add_special_tokens=False)["input_ids"])
    return p, (a[:max_candidate_tokens] or [eos])


def _eos_id(tokenizer) -> int:
    for name in ("eos_token_id", "pad_token_id"):
        v = getattr(tokenizer, name, None)
        if v is not None:
            return int(v)
    return 0


def token_logprobs(model, pairs: Sequence[tuple[list[int], list[int]]], pad_id: int,
                   device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """One right-padded forward over prompt+action sequences -> action token log-probs.

    pairs: (prompt ids, action ids) per row. Returns logp float32 [B, La] (0 on padding) and
    mask bool [B, La], La = the longest action. Token j of row i is predicted by the logits
    at position len(prompt_i) - 1 + j.
    """
    b = len(pairs)
    lens = [len(p) + len(a) for p, a in pairs]
    big_l, la = max(lens), max(len(a) for _, a in pairs)
    ids = torch.full((b, big_l), pad_id, dtype=torch.long)
    attn = torch.zeros((b, big_l), dtype=torch.long)
    pos = torch.zeros((b, la), dtype=torch.long)
    tgt = torch.full((b, la), pad_id, dtype=torch.long)
    mask = torch.zeros((b, la), dtype=torch.bool)
    for i, (p, a) in enumerate(pairs):
        ids[i, :lens[i]] = torch.tensor(p + a, dtype=torch.long)
        attn[i, :lens[i]] = 1
        pos[i, :len(a)] = torch.arange(len(p) - 1, len(p) - 1 + len(a))
        tgt[i, :len(a)] = torch.tensor(a, dtype=torch.long)
        mask[i, :len(a)] = True
    ids, attn, pos, tgt, mask = (x.to(device) for x in (ids, attn, pos, tgt, mask))
    picked = _logits_at(model, ids, attn, pos).float()  # [B, La, V]
    logp = torch.log_softmax(picked, dim=-1).gather(-1, tgt[..., None]).squeeze(-1)
    return logp.masked_fill(~mask, 0.0), mask


def _logits_at(model, ids: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Logits at positions pos [B, P] only: the LM head runs on those hidden states alone
    (full [B, L, V] logits would dominate time and memory). Models without the usual
    decoder + output-embedding split fall back to the full forward."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    body = getattr(model, "model", None)
    if head is None or body is None:
        logits = model(input_ids=ids, attention_mask=attn).logits
        return logits.gather(1, pos[..., None].expand(-1, -1, logits.shape[-1]))
    hidden = body(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state  # [B, L, H]
    hidden = hidden.gather(1, pos[..., None].expand(-1, -1, hidden.shape[-1]))  # [B, P, H]
    return head(hidden)


def mean_logprob(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row mean over real tokens: [B, L] -> [B]."""
    return (logp * mask).sum(-1) / mask.sum(-1).clamp_min(1)


def candidate_scores(model, tokenizer, samples: Sequence[LLMSample], device: str | torch.device = "cpu",
                     continuation: str = DEFAULT_CONTINUATION, max_prompt_tokens: int | None = None,
                     rows_per_forward: int = 256) -> list[torch.Tensor]:
    """Mean token log-prob of every candidate of every sample, differentiable.

    Teacher-forced, one full row per (prompt, candidate) (plain, no KV cache), so gradients
    reach every candidate. Returns one float32 [K_i] tensor per sample.
    """
    pairs = [encode_pair(tokenizer, s.prompt, c, continuation, max_prompt_tokens) for s in samples for c in s.candidates]
    pad = _pad_id(tokenizer)
    chunks = []
    for lo in range(0, len(pairs), rows_per_forward):
        lp, m = token_logprobs(model, pairs[lo:lo + rows_per_forward], pad, device)
        chunks.append(mean_logprob(lp, m))
    flat = torch.cat(chunks) if chunks else torch.zeros(0)
    return list(torch.split(flat, [len(s.candidates) for s in samples]))


@torch.no_grad()
def agreement(model, tokenizer, samples: Sequence[LLMSample], device: str | torch.device = "cpu",
              continuation: str = DEFAULT_CONTINUATION) -> float:
    """Fraction of samples whose top-scored candidate is ``chosen``.

    Score = mean log-prob of the candidate's tokens after the prompt, computed by
    ``prior.candidate_logprobs_shared`` (each prompt once, candidates continuing from its
    KV cache): the very numbers the collectors turn into the MCTS root prior. Ties go to the
    lowest index. Chance level is ``chance(samples)``.
    """
    if not samples:
        return float("nan")
    was_training = model.training
    model.eval()
    try:
        scores = candidate_logprobs_shared(model, tokenizer, [s.prompt for s in samples],
                                           [s.candidates for s in samples], device,
                                           continuation=continuation)
    finally:
        model.train(was_training)
    return float(np.mean([int(np.argmax(sc)) == s.chosen for sc, s in zip(scores, samples)]))


def chance(samples: Sequence[LLMSample]) -> float:
    """Agreement of a uniformly random pick: mean 1/K."""
    return float(np.mean([1.0 / len(s.candidates) for s in samples])) if samples else float("nan")


# =============================================================== trainer


class LLMTrainer:
    """Trains the LLM from search results; holds a frozen reference copy for the KL term.

    mode: "sft" (CE on the chosen action's text), "sft_visits" (candidate distribution vs
    visits) or "rft" (PPO clip + kl_coef * k3 KL on the chosen action's tokens).
    lr: AdamW learning rate. 1e-4 suits a pretrained LLM; the randomly initialised tiny Qwen2
    of tests and benches learns in a few hundred steps with ~3e-3.
    """

    MODES = ("sft", "sft_visits", "rft")

    def __init__(self, model, tokenizer, lr: float = 1e-4, mode: str = "sft", kl_coef: float = 0.05,
                 device: str | torch.device = "cpu", clip_eps: float = 0.2, max_grad_norm: float = 1.0,
                 weight_decay: float = 0.0, max_prompt_tokens: int | None = None,
                 continuation: str = DEFAULT_CONTINUATION):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.model = model.to(device)
        self.tokenizer = tokenizer
        self.mode, self.kl_coef, self.clip_eps = mode, kl_coef, clip_eps
        self.device, self.max_grad_norm, self.max_prompt_tokens = device, max_grad_norm, max_prompt_tokens
        self.ref = copy.deepcopy(model).to(device).eval()
        for p in self.ref.parameters():
            p.requires_grad_(False)
        self.opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                     weight_decay=weight_decay)
        self.pad_id = _pad_id(tokenizer)
        self.continuation = continuation
        self.updates = 0

    def _chosen_pairs(self, samples: Sequence[LLMSample]) -> list[tuple[list[int], list[int]]]:
        return [encode_pair(self.tokenizer, s.prompt, s.candidates[s.chosen], self.continuation, self.max_prompt_tokens)
                for s in samples]

    def step(self, samples: Sequence[LLMSample]) -> dict[str, float]:
        """One gradient update on ``samples``; returns the losses and the KL to the reference."""
        if not samples:
            raise ValueError("step() needs at least one sample")
        self.model.train()
        pairs = self._chosen_pairs(samples)
        with torch.no_grad():
            ref_lp, _ = token_logprobs(self.ref, pairs, self.pad_id, self.device)
        metrics: dict[str, float] = {}
        if self.mode == "sft_visits":
            scores = candidate_scores(self.model, self.tokenizer, samples, self.device, self.continuation,
                                      self.max_prompt_tokens)
            kmax = max(len(s.candidates) for s in samples)
            sc = torch.full((len(samples), kmax), float("-inf"), device=self.device)
            vis = torch.zeros((len(samples), kmax), device=self.device)
            cmask = torch.zeros((len(samples), kmax), dtype=torch.bool, device=self.device)
            for i, (s, x) in enumerate(zip(samples, scores)):
                sc[i, :len(x)] = x
                vis[i, :len(x)] = torch.as_tensor(s.visits, dtype=torch.float32)
                cmask[i, :len(x)] = True
            loss = sft_visit_loss(sc, vis, cmask)
            with torch.no_grad():  # KL on the chosen tokens, for the record
                lp, mask = token_logprobs(self.model, pairs, self.pad_id, self.device)
                kl = masked_mean(k3_kl(lp, ref_lp), mask)
            metrics["train/llm_sft_loss"] = loss.item()
        else:
            lp, mask = token_logprobs(self.model, pairs, self.pad_id, self.device)
            kl = masked_mean(k3_kl(lp.detach(), ref_lp), mask)
            if self.mode == "sft":
                loss = sft_ce_loss(lp, mask)
                metrics["train/llm_sft_loss"] = loss.item()
            else:
                adv = torch.tensor([s.advantage for s in samples], dtype=torch.float32, device=self.device)
                if all(s.old_logprob is not None for s in samples):
                    # behaviour log-prob known only per sequence (mean over tokens): length-normalised
                    # sequence ratio exp(mean_new - old), as GSPO does
                    old = torch.tensor([s.old_logprob for s in samples], dtype=torch.float32, device=self.device)
                    loss, ppo, kl = rft_loss(lp, old, ref_lp, adv, mask, self.clip_eps, self.kl_coef,
                                             ratio_logp_new=mean_logprob(lp, mask))
                else:
                    # on-policy: old = the current policy before this update (ratio 1, PPO's first pass)
                    loss, ppo, kl = rft_loss(lp, lp.detach(), ref_lp, adv[:, None], mask, self.clip_eps, self.kl_coef)
                metrics["train/llm_rft_loss"] = loss.item()
                metrics["train/llm_ppo_loss"] = ppo.item()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.opt.step()
        self.updates += 1
        metrics["train/llm_kl"] = kl.item()
        metrics["train/llm_grad_norm"] = float(gn)
        return metrics


# =============================================================== the tiny model


def tiny_model():
    """(model, tokenizer) of the project's tiny Qwen2 (``tiny.build_tiny``: built locally once,
    fixed seed, random weights), loaded by ``backend.load_model_and_tokenizer`` in float32."""
    from .backend import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer("tiny")
    return model, tokenizer
