"""PriorZero's LLM training: samples from segments, the SFT / RFT losses, and a trainer.

PriorZero (LightZero ``zoo/jericho/priorzero``) trains the LLM that gives MCTS its root prior
in two ways, both from what the collectors' search found:

- **SFT**: teach the LLM the search's decision. ``sft`` is plain next-token cross-entropy on
  the text of the chosen action after the prompt; ``sft_visits`` scores every candidate (mean
  log-prob of its tokens after the prompt) and fits that candidate distribution to the search's
  visit distribution (cross-entropy, i.e. KL up to the visits' entropy).
- **RFT**: PPO with clipping on the chosen action's tokens, advantage = n-step value target
  (at the world model's discount and td_steps, those of the root values) minus the search's
  root value, plus a k3 KL estimate against a frozen reference copy. The behaviour log-prob is
  recorded under the weights that build the batch, then ``rft_epochs`` updates run on it, so
  the ratio leaves 1 and the clip acts (as in PPO).

Token ids come from ``tokens.encode_pair`` (prompt and ``" {action}"`` tokenised apart, then
eos), the encoding the collectors' prior scores, so SFT moves exactly the scores the prior is
made of.

Everything a loss needs is computed first (teacher-forced token log-probs from one batched,
right-padded forward, ``logprobs.token_logprobs``; ``sft_visits`` scores each sample's candidates in
one packed row, ``packed_scores``); the losses are the pure functions of ``losses.py``.

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

from ..model.config import WorldModelConfig
from ..model.targets import n_step_values, stitch
from ..stream.wire import Segment
from .logprobs import mean_logprob, pack, token_logprobs
from .losses import (clip_fraction, k3_kl, masked_mean, ppo_clip_loss, rft_loss, sft_ce_loss,  # noqa: F401
                     sft_visit_loss)
from .prior import candidate_logprobs_shared
from .prompts import PromptConfig, build_prompt, fit_prompt
from .tokens import DEFAULT_CONTINUATION, encode_answers, encode_pair, pad_id, prompt_ids

# The root values an advantage is measured against were searched at the world model's discount;
# the n-step target z must use the same one, or z - V is biased (0.99 against 0.997 pushed every
# chosen action down by about a point of value).
_WM = WorldModelConfig()


# =============================================================== samples


@dataclass(frozen=True, eq=False)
class LLMSample:
    """One decision to learn from.

    prompt: the text before the action (history + current observation);
    candidates [K]: the valid actions; chosen: index of the search's action in candidates;
    visits float32 [K]: the search's visit distribution (sums to 1);
    advantage: for RFT (see ``samples_from_segments``);
    old_logprob: mean per-token log-prob of candidates[chosen] under the behaviour LLM
    (None: unknown; ``LLMTrainer.record_old_logprobs`` fills it in under the current weights).
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
                          td_steps: int = _WM.td_steps, discount: float = _WM.discount,
                          tokenizer: Any = None) -> list[LLMSample]:
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
      (``td_steps``, ``discount``; default the world model's, which the root values were searched
      with: pass the run's ``Config.world_model()`` values) bootstrapped on the root values (as
      the world-model trainer);
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


# =============================================================== teacher-forced log-probs


def candidate_scores(model, tokenizer, samples: Sequence[LLMSample], device: str | torch.device = "cpu",
                     continuation: str = DEFAULT_CONTINUATION,
                     max_prompt_tokens: int | None = None) -> list[torch.Tensor]:
    """Mean token log-prob of every candidate of every sample, differentiable.

    Teacher-forced with the ids of ``tokens.encode_pair``, one packed row per sample
    (``packed_scores``: its prompt once, then every candidate), so gradients reach every candidate.
    Returns one float32 [K_i] tensor per sample."""
    return [packed_scores(model, prompt_ids(tokenizer, s.prompt, max_prompt_tokens),
                          encode_answers(tokenizer, s.candidates, continuation), device) for s in samples]


def packed_scores(model, prompt: list[int], answers: list[list[int]],
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """float32 [K]: the mean token log-prob of each answer after ``prompt``, differentiable.

    One row ``[prompt, answer_1, ..., answer_K]`` with a 4-D additive mask: prompt tokens attend
    causally within the prompt, each answer token to the whole prompt and causally to its own answer;
    answer token j sits at position ``len(prompt) + j``, where it sits in its own full row. The same
    numbers and gradients as K full rows of prompt + answer (``logprobs.token_logprobs``, tested) at
    prompt + K x answer tokens instead of K x (prompt + answer): with a real model's prompts of a few
    hundred tokens and tens of candidates, the full rows of one batch of 8 samples outgrew 20 GB of
    activations (killed for memory on a 24 GiB machine)."""
    if not answers or not all(answers):
        raise ValueError("packed_scores needs at least one answer, each of at least one token")
    prefix = getattr(model, "base_model_prefix", "model")
    decoder, head = getattr(model, prefix), model.get_output_embeddings()
    dev = torch.device(device)
    P = len(prompt)
    seg = [0] * P + [k + 1 for k, a in enumerate(answers) for _ in a]  # 0 prompt, k + 1 answer k
    pos = list(range(P)) + [P + j for a in answers for j in range(len(a))]
    seg_t = torch.tensor(seg, device=dev)
    L = len(seg)
    ar = torch.arange(L, device=dev)
    allowed = (ar[:, None] >= ar[None, :]) & ((seg_t[:, None] == seg_t[None, :]) | (seg_t == 0)[None, :])
    dtype = next(model.parameters()).dtype
    mask = torch.zeros((1, 1, L, L), dtype=dtype, device=dev).masked_fill_(~allowed, torch.finfo(dtype).min)
    ids = torch.tensor([prompt + [t for a in answers for t in a]], dtype=torch.long, device=dev)
    hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=torch.tensor([pos], device=dev),
                     use_cache=False).last_hidden_state[0]
    # answer k's token j is predicted at the last prompt position (j = 0) or at its token j - 1
    at, owner, off = [], [], P
    for k, a in enumerate(answers):
        at += [P - 1] + list(range(off, off + len(a) - 1))
        owner += [k] * len(a)
        off += len(a)
    logits = head(hidden[torch.tensor(at, device=dev)]).float()
    targets = torch.tensor([t for a in answers for t in a], device=dev)
    lp = logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)
    own = torch.tensor(owner, device=dev)
    return torch.zeros(len(answers), device=dev).index_add(0, own, lp) / torch.bincount(own, minlength=len(answers))


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
    rft_epochs: RFT updates per ``step`` on one batch; the first runs at ratio 1 (the old
    log-probs are recorded under the weights that build the batch), the later ones are clipped.
    """

    MODES = ("sft", "sft_visits", "rft")

    def __init__(self, model, tokenizer, lr: float = 1e-4, mode: str = "sft", kl_coef: float = 0.05,
                 device: str | torch.device = "cpu", clip_eps: float = 0.2, max_grad_norm: float = 1.0,
                 weight_decay: float = 0.0, max_prompt_tokens: int | None = None,
                 continuation: str = DEFAULT_CONTINUATION, rft_epochs: int = 2):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        if rft_epochs < 1:
            raise ValueError(f"rft_epochs must be >= 1, got {rft_epochs}")
        self.model = model.to(device)
        self.tokenizer = tokenizer
        self.mode, self.kl_coef, self.clip_eps, self.rft_epochs = mode, kl_coef, clip_eps, rft_epochs
        self.device, self.max_grad_norm, self.max_prompt_tokens = device, max_grad_norm, max_prompt_tokens
        self.ref = copy.deepcopy(model).to(device).eval()
        for p in self.ref.parameters():
            p.requires_grad_(False)
        self.opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                     weight_decay=weight_decay)
        self.pad_id = pad_id(tokenizer)
        self.continuation = continuation
        self.updates = 0

    def _chosen_pairs(self, samples: Sequence[LLMSample]) -> list[tuple[list[int], list[int]]]:
        return [encode_pair(self.tokenizer, s.prompt, s.candidates[s.chosen], self.continuation, self.max_prompt_tokens)
                for s in samples]

    @torch.no_grad()
    def record_old_logprobs(self, samples: Sequence[LLMSample]) -> list[LLMSample]:
        """``samples`` with ``old_logprob`` (mean token log-prob of the chosen answer) filled in
        under the current weights where it is unknown: the behaviour policy the RFT ratio and
        clip are measured against, recorded before the updates (as PPO records it)."""
        missing = [i for i, s in enumerate(samples) if s.old_logprob is None]
        if not missing:
            return list(samples)
        pk = pack(self._chosen_pairs([samples[i] for i in missing]), self.pad_id)
        old = mean_logprob(token_logprobs(self.model, pk), pk.mask.to(self.device)).tolist()
        out = list(samples)
        for i, lp in zip(missing, old):
            s = out[i]
            out[i] = LLMSample(s.prompt, s.candidates, s.chosen, s.visits, s.advantage, float(lp))
        return out

    def _update(self, loss: torch.Tensor) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        return self._apply()

    def _apply(self) -> float:
        """Clip the gradients and step; returns their norm before clipping."""
        gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.opt.step()
        self.updates += 1
        return float(gn)

    def _visit_update(self, samples: Sequence[LLMSample]) -> tuple[float, float]:
        """One update of the visit loss (a mean over samples), each sample's graph built, run backward
        and freed in turn, its gradient accumulated: one sample of tens of candidates holds about
        1 GB of a 135 M model's activations, a batch at once B times that. Returns (loss, grad norm)."""
        self.opt.zero_grad(set_to_none=True)
        total = 0.0
        for s in samples:
            scores = candidate_scores(self.model, self.tokenizer, [s], self.device, self.continuation,
                                      self.max_prompt_tokens)[0]
            loss = sft_visit_loss(scores, torch.as_tensor(s.visits, dtype=torch.float32, device=self.device))
            (loss / len(samples)).backward()
            total += loss.item() / len(samples)
        return total, self._apply()

    def step(self, samples: Sequence[LLMSample]) -> dict[str, float]:
        """One update on ``samples`` (``rft_epochs`` updates in RFT); returns the losses and the KL
        to the reference (RFT adds the share of clipped samples and the largest |ratio - 1|)."""
        if not samples:
            raise ValueError("step() needs at least one sample")
        self.model.train()
        if self.mode == "rft":
            return self._rft(samples)
        pk = pack(self._chosen_pairs(samples), self.pad_id)
        mask = pk.mask.to(self.device)
        with torch.no_grad():
            ref_lp = token_logprobs(self.ref, pk)
        metrics: dict[str, float] = {}
        if self.mode == "sft_visits":
            with torch.no_grad():  # KL on the chosen tokens, for the record
                kl = masked_mean(k3_kl(token_logprobs(self.model, pk), ref_lp), mask)
            loss_value, grad_norm = self._visit_update(samples)
        else:
            lp = token_logprobs(self.model, pk)
            kl = masked_mean(k3_kl(lp.detach(), ref_lp), mask)
            loss = sft_ce_loss(lp, mask)
            loss_value, grad_norm = loss.item(), self._update(loss)
        metrics["train/llm_sft_loss"] = loss_value
        metrics["train/llm_grad_norm"] = grad_norm
        metrics["train/llm_kl"] = kl.item()
        return metrics

    def _rft(self, samples: Sequence[LLMSample]) -> dict[str, float]:
        # behaviour log-probs are per sequence (mean over tokens): the ratio is the length-normalised
        # sequence ratio exp(mean_new - old), as GSPO takes it
        samples = self.record_old_logprobs(samples)
        pk = pack(self._chosen_pairs(samples), self.pad_id)
        mask = pk.mask.to(self.device)
        with torch.no_grad():
            ref_lp = token_logprobs(self.ref, pk)
        old = torch.tensor([s.old_logprob for s in samples], dtype=torch.float32, device=self.device)
        adv = torch.tensor([s.advantage for s in samples], dtype=torch.float32, device=self.device)
        totals = {"loss": 0.0, "ppo": 0.0, "clip": 0.0, "gn": 0.0}
        ratio_dev = 0.0
        for _ in range(self.rft_epochs):
            lp = token_logprobs(self.model, pk)
            seq = mean_logprob(lp, mask)
            loss, ppo, kl = rft_loss(lp, old, ref_lp, adv, mask, self.clip_eps, self.kl_coef, ratio_logp_new=seq)
            totals["clip"] += clip_fraction(seq, old, self.clip_eps).item()
            ratio_dev = max(ratio_dev, float((torch.exp(seq.detach() - old) - 1).abs().max()))
            totals["loss"] += loss.item()
            totals["ppo"] += ppo.item()
            totals["gn"] += self._update(loss)
        n = self.rft_epochs
        return {"train/llm_rft_loss": totals["loss"] / n, "train/llm_ppo_loss": totals["ppo"] / n,
                "train/llm_kl": kl.item(), "train/llm_grad_norm": totals["gn"] / n,
                "train/llm_clip_frac": totals["clip"] / n, "train/llm_ratio_dev": ratio_dev}


# =============================================================== the tiny model


def tiny_model():
    """(model, tokenizer) of the project's tiny Qwen2 (``tiny.build_tiny``: built locally once,
    fixed seed, random weights), loaded by ``backend.load_model_and_tokenizer`` in float32."""
    from .backend import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer("tiny")
    return model, tokenizer
