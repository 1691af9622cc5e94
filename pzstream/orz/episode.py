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
from pzstream.llm.prompts import PromptConfig, scoring_prompts
from pzstream.llm.tokens import encode_answers, prompt_ids as encode_prompt
from pzstream.orz.rollout import choice_scores, sample_choices, shared_prefix_len
from pzstream.orz.samples import PromptSample, answer_choices, orz_prompt_config, render_prompt

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
    nothing, so they get no advantage. choices: choice mode's candidate that each response answers.
    """

    prompt_ids: list[list[int]]
    responses: list[list[list[int]]]  # [P][n] response ids
    fixed: list[int]
    choices: list[list[str]] | None = None  # [P][n] candidate texts (choice mode)

    def texts(self, tokenizer: Any) -> list[list[str]]:
        """[P][n] what the reward reads of each response: in choice mode the chosen candidate as an
        ORZ answer (``</think>\n<answer>CANDIDATE</answer>``, whatever format the prompt had), in
        free mode the decoded response."""
        if self.choices is not None:
            return [answer_choices(row) for row in self.choices]
        return [[tokenizer.decode(list(r), skip_special_tokens=True) for r in group] for group in self.responses]


def score_choices(runtime: Any, samples: Sequence[PromptSample], cfg: PPOSection, history_len: int = 3,
                  prior_prompt: PromptConfig | None = None, list_candidates: bool = True):
    """Choice mode's scoring of every allowed answer by the current policy: (prompt ids, allowed
    answer ids, shared answer tokens, scores), per prompt; answers are drawn from
    softmax(scores / ``cfg.temperature``) (``rollout``; ``bench/ppo.py`` reads it as the policy's
    expected reward)."""
    tok = runtime.tokenizer
    pcfg = prior_prompt or orz_prompt_config(history_len, cfg.prompt_max_len)
    texts = scoring_prompts(tok, pcfg, [s.history for s in samples], [s.observation for s in samples],
                            [s.candidates for s in samples], list_candidates)
    prompt_ids = [encode_prompt(tok, t, cfg.prompt_max_len) for t in texts]
    allowed = [encode_answers(tok, s.candidates, pcfg.continuation_template) for s in samples]
    fixed = [shared_prefix_len(a) for a in allowed]
    return prompt_ids, allowed, fixed, choice_scores(runtime.choice_logprobs(prompt_ids, allowed), fixed)


def rollout(runtime: Any, samples: Sequence[PromptSample], cfg: PPOSection, history_len: int = 3,
            seed: int = 0, prior_prompt: PromptConfig | None = None, list_candidates: bool = True) -> Rollout:
    """``n_samples_per_prompt`` responses to each prompt (see ``rollout.py`` for the two modes).

    Choice mode asks the prior's own scoring prompt (``prompts.scoring_prompts`` with ``prior_prompt``
    and ``list_candidates``: the collectors' ``llm`` settings; default the ORZ format with the
    candidates listed, ``ppo.prompt_max_len`` tokens), so PPO trains the very token paths the prior reads."""
    tok = runtime.tokenizer
    n = cfg.n_samples_per_prompt
    if cfg.answer_mode == "choice":
        prompt_ids, allowed, fixed, scores = score_choices(runtime, samples, cfg, history_len, prior_prompt,
                                                           list_candidates)
        picks = sample_choices(scores, n, cfg.temperature, seed)
        return Rollout(prompt_ids, [[allowed[i][j] for j in row] for i, row in enumerate(picks)], fixed,
                       [[s.candidates[j] for j in row] for s, row in zip(samples, picks)])
    prompt_ids = encode_prompts(samples, tok, cfg, history_len)
    return Rollout(prompt_ids, runtime.sample(prompt_ids, n, cfg.generate_max_len, cfg.temperature, seed),
                   [0] * len(samples))


def run_episode(runtime: Any, samples: Sequence[PromptSample], cfg: PPOSection, reward_fn: RewardFn, *,
                history_len: int = 3, seed: int = 0, prior_prompt: PromptConfig | None = None,
                list_candidates: bool = True) -> EpisodeResult:
    if len(samples) != cfg.rollout_batch_size:
        raise ValueError(f"an episode takes ppo.rollout_batch_size={cfg.rollout_batch_size} prompts, got {len(samples)}")
    tok = runtime.tokenizer
    times: dict[str, float] = {}
    t = time.monotonic()
    runtime.ensure_alive()
    ro = rollout(runtime, samples, cfg, history_len, seed, prior_prompt, list_candidates)
    n = cfg.n_samples_per_prompt
    times["generate"] = time.monotonic() - t

    t = time.monotonic()
    seqs, rewards, components = [], [], Counter()
    lengths, forced = [], []
    for s, p, group, k, texts in zip(samples, ro.prompt_ids, ro.responses, ro.fixed, ro.texts(tok)):
        if len(group) != n:
            raise RuntimeError(f"engine returned {len(group)} responses for a prompt, expected {n}")
        for r, text in zip(group, texts):
            r = list(r) or [tok.eos_token_id]  # an empty response still occupies a token (reward on it)
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
