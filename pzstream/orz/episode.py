"""One PPO episode with Open-Reasoner-Zero's semantics, on any runtime (``runtime.py``).

    1. generate   ``n_samples_per_prompt`` responses to each of the ``rollout_batch_size`` prompts
    2. reward     each response (``rewards.py``: exact / fuzzy / format / progress, weighted);
                  the scalar lands on the response's last token (per-token scores, as ORZ)
    3. forward    old log-probs (policy), reference log-probs (``use_kl_loss``), values (critic)
    4. advantage  GAE(``gamma``, ``lambd``) on the critic's values, or ``use_grpo``: the reward
                  normalised within its prompt's group; then optionally whitened
    5. train      ``policy_update_steps`` clipped-PPO steps (+ ``kl_loss_coef`` x k3 KL) and
                  ``critic_update_steps`` clipped value-loss steps
    6. sync       policy weights into the rollout engines, in place; the bytes are returned so the
                  hub can publish them as a new LLM version

The math is in ``ppo_math`` and ``pzstream.llm.losses`` (pure functions). Times of each phase are in the metrics.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from pzstream.config import PPOSection
from pzstream.llm.losses import k3_kl, masked_mean
from pzstream.orz import ppo_math
from pzstream.llm.tokens import encode_answers, prompt_ids as encode_prompt
from pzstream.orz.rollout import choice_scores, sample_choices, shared_prefix_len
from pzstream.orz.samples import (PromptSample, choice_opening, orz_prompt_config, render_choice_prompt,
                                  render_prompt)

RewardFn = Callable[[PromptSample, str], tuple[float, dict[str, float]]]


@dataclass
class EpisodeResult:
    metrics: dict[str, float]
    weights: bytes
    rewards: list[float] = field(default_factory=list)
    games: dict[str, int] = field(default_factory=dict)


def encode_prompts(samples: Sequence[PromptSample], tokenizer: Any, cfg: PPOSection, history_len: int) -> list[list[int]]:
    """Generation prompts (ending ``<think>``) of free mode, as token ids."""
    return [encode_prompt(tokenizer, render_prompt(s, tokenizer, cfg.prompt_max_len, history_len), cfg.prompt_max_len)
            for s in samples]


@dataclass
class Rollout:
    """An episode's prompts and responses, as token ids.

    fixed: per prompt, the tokens every allowed answer begins with (0 in free mode): they decide
    nothing, so they get no advantage. text_prefix: what the prompt already says of every
    response (choice mode: ``</think>\n<answer>``), put back in front before the reward reads it.
    """

    prompt_ids: list[list[int]]
    responses: list[list[list[int]]]  # [P][n] response ids
    fixed: list[int]
    text_prefix: str = ""

    def text(self, tokenizer: Any, response: Sequence[int]) -> str:
        return self.text_prefix + tokenizer.decode(list(response), skip_special_tokens=True)


def rollout(runtime: Any, samples: Sequence[PromptSample], cfg: PPOSection, history_len: int = 3,
            seed: int = 0) -> Rollout:
    """``n_samples_per_prompt`` responses to each prompt (see ``rollout.py`` for the two modes)."""
    tok = runtime.tokenizer
    n = cfg.n_samples_per_prompt
    if cfg.answer_mode == "choice":
        continuation = orz_prompt_config(history_len, cfg.prompt_max_len).continuation_template
        # the prior's (prompt, answer) ids, so PPO trains the very token paths the prior scores
        prompt_ids = [encode_prompt(tok, render_choice_prompt(s, tok, cfg.prompt_max_len, history_len),
                                    cfg.prompt_max_len) for s in samples]
        allowed = [encode_answers(tok, s.candidates, continuation) for s in samples]
        fixed = [shared_prefix_len(a) for a in allowed]
        scores = choice_scores(runtime.choice_logprobs(prompt_ids, allowed), fixed)
        picks = sample_choices(scores, n, cfg.temperature, seed)
        return Rollout(prompt_ids, [[allowed[i][j] for j in row] for i, row in enumerate(picks)], fixed,
                       choice_opening(history_len, cfg.prompt_max_len))
    prompt_ids = encode_prompts(samples, tok, cfg, history_len)
    return Rollout(prompt_ids, runtime.sample(prompt_ids, n, cfg.generate_max_len, cfg.temperature, seed),
                   [0] * len(samples))


def run_episode(runtime: Any, samples: Sequence[PromptSample], cfg: PPOSection, reward_fn: RewardFn, *,
                history_len: int = 3, seed: int = 0) -> EpisodeResult:
    if len(samples) != cfg.rollout_batch_size:
        raise ValueError(f"an episode takes ppo.rollout_batch_size={cfg.rollout_batch_size} prompts, got {len(samples)}")
    tok = runtime.tokenizer
    times: dict[str, float] = {}
    t = time.monotonic()
    runtime.ensure_alive()
    ro = rollout(runtime, samples, cfg, history_len, seed)
    n = cfg.n_samples_per_prompt
    times["generate"] = time.monotonic() - t

    t = time.monotonic()
    seqs, rewards, components = [], [], Counter()
    lengths, forced = [], []
    for s, p, group, k in zip(samples, ro.prompt_ids, ro.responses, ro.fixed):
        if len(group) != n:
            raise RuntimeError(f"engine returned {len(group)} responses for a prompt, expected {n}")
        for r in group:
            r = list(r) or [tok.eos_token_id]  # an empty response still occupies a token (reward on it)
            text = ro.text(tok, r)
            total, parts = reward_fn(s, text)
            seqs.append((p, r))
            forced.append(k)
            rewards.append(float(total))
            lengths.append(len(r))
            components.update(parts)
    times["reward"] = time.monotonic() - t

    t = time.monotonic()
    old_logp, ref_logp, values = runtime.forward(seqs)
    times["forward"] = time.monotonic() - t

    T = old_logp.shape[1]
    mask = torch.zeros((len(seqs), T))
    for b, (_, r) in enumerate(seqs):
        mask[b, :len(r)] = 1.0
    reward_t = torch.tensor(rewards, dtype=torch.float32)
    if cfg.use_grpo:
        adv_seq = ppo_math.grpo_advantages(reward_t, cfg.n_samples_per_prompt)
        adv = adv_seq.unsqueeze(1) * mask
        returns = None
        values_t = None
    else:
        scores = ppo_math.last_token_scores(reward_t, mask)
        values_t = values[:, :T] * mask
        adv, returns = ppo_math.gae(scores, values_t, mask, cfg.gamma, cfg.lambd)
    decided = mask.clone()  # tokens every allowed answer shares decide nothing: no advantage on them
    for b, k in enumerate(forced):
        decided[b, :k] = 0.0
    if cfg.advantage_normalize and not cfg.use_grpo:
        adv = ppo_math.normalize_advantages(adv, decided)
    adv = adv * decided
    if cfg.answer_mode == "choice":  # train the distribution the answers were drawn from (rollout.py)
        adv = ppo_math.choice_advantages(adv, decided, cfg.temperature)

    t = time.monotonic()
    train_metrics = runtime.train(seqs, old_logp, adv, ref_logp, values_t, returns)
    times["train"] = time.monotonic() - t

    t = time.monotonic()
    weights = runtime.sync()
    times["sync"] = time.monotonic() - t

    r = np.array(rewards)
    n = len(rewards)
    metrics = {"reward_mean": float(r.mean()), "reward_std": float(r.std()), "reward_min": float(r.min()),
               "reward_max": float(r.max()), "reward_frac_positive": float((r > 0).mean()),
               "response_length": float(np.mean(lengths)), "responses": float(n), "prompts": float(len(samples)),
               **{f"reward_{k}": v / n for k, v in components.items()},
               **train_metrics, **{f"time_{k}": v for k, v in times.items()}}
    if ref_logp is not None:
        metrics["kl_before"] = float(masked_mean(k3_kl(old_logp, ref_logp[:, :T]), mask))
    games = Counter(s.game for s in samples)
    return EpisodeResult(metrics=metrics, weights=weights, rewards=rewards, games=dict(games))
