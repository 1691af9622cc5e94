"""PPO episodes with the in-process runtime (transformers generation, torch AdamW) on the real
default game's walkthrough prompts: rewards rise, weights change, bad input is contained."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pzstream.config import PPOSection
from pzstream.llm.tiny import resolve_model
from pzstream.orz.episode import run_episode
from pzstream.orz.prompt_sets import chance_of, walkthrough_samples
from pzstream.orz.runtime import InProcessRuntime
from pzstream.roles.ppo_worker import build_reward_fn

EASY = dict(enabled=True, runtime="inprocess", rollout_batch_size=4, fire_threshold=4, n_samples_per_prompt=4,
            micro_train_batch_size=8, policy_update_steps=2, critic_update_steps=2, actor_learning_rate=3e-3,
            critic_learning_rate=1e-3, kl_loss_coef=0.001, prompt_max_len=256)


def _state(rt) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in rt.policy.model.state_dict().items()}


@pytest.mark.parametrize("grpo", [False, True], ids=["ppo-critic", "grpo"])
def test_episodes_raise_exact_match_reward(grpo):
    samples = walkthrough_samples(max_candidates=3, limit=4)
    cfg = PPOSection(**EASY, use_grpo=grpo)
    rt = InProcessRuntime(cfg, resolve_model("tiny"))
    reward_fn, _ = build_reward_fn(cfg)
    before = _state(rt)
    curve = []
    for e in range(8):
        res = run_episode(rt, samples, cfg, reward_fn, seed=e)
        curve.append(res.metrics["reward_mean"])
        assert res.metrics["reward_format"] == 1.0  # choice decoding always forms an answer
        for k in ("time_generate", "time_reward", "time_forward", "time_train", "time_sync", "response_length",
                  "policy_loss", "kl"):
            assert k in res.metrics
        assert grpo or "value_loss" in res.metrics
    after = _state(rt)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    first, last = sum(curve[:2]) / 2, sum(curve[-2:]) / 2
    assert last > max(first, chance_of(samples)) + 0.2, curve


def test_a_wrong_batch_is_an_error_not_a_hang():
    cfg = PPOSection(**EASY)
    rt = InProcessRuntime(cfg, resolve_model("tiny"))
    reward_fn, _ = build_reward_fn(cfg)
    with pytest.raises(ValueError, match="rollout_batch_size"):
        run_episode(rt, walkthrough_samples(limit=3), cfg, reward_fn)


def test_free_generation_of_nonsense_earns_the_documented_reward():
    """The random tiny model in free mode writes no well-formed answer: reward 0, never an exception."""
    samples = walkthrough_samples(max_candidates=3, limit=4)
    cfg = PPOSection(**{**EASY, "answer_mode": "free", "generate_max_len": 12,
                        "rewards": ["exact:1.0", "fuzzy:0.5", "format:0.1"]})
    rt = InProcessRuntime(cfg, resolve_model("tiny"))
    reward_fn, _ = build_reward_fn(cfg)
    res = run_episode(rt, samples, cfg, reward_fn, seed=1)
    assert res.metrics["reward_mean"] == 0.0 and res.metrics["response_length"] <= 12
    assert res.weights  # the update still ran and produced weights


def test_progress_reward_plays_the_answer_in_the_game():
    """The first walkthrough step is rewarded by the game: progress reward = 1 for the truth."""
    samples = walkthrough_samples(max_candidates=3, limit=1)
    cfg = PPOSection(**{**EASY, "rewards": ["progress:1.0"]})
    reward_fn, progress = build_reward_fn(cfg)
    s = samples[0]
    total, parts = reward_fn(s, f"</think>\n<answer>{s.truth}</answer>")
    assert total == parts["progress"] == 1.0
    total, _ = reward_fn(s, "no answer here")
    assert total == 0.0
    progress.close()


def test_progress_reward_adds_the_world_models_value_of_the_result(tmp_path):
    from pzstream.config import load_config
    from pzstream.model.world_model import weights_bytes
    from pzstream.roles.ppo_worker import WorldModelValue

    cfg = load_config(None, [])
    value = WorldModelValue(cfg, tmp_path)
    value.refresh()  # nothing on disk yet: the untrained model, version 0
    assert value.version == 0
    with torch.no_grad():
        for p in value.model.parameters():
            p.add_(0.01)
    (tmp_path / "wm-v3.pt").write_bytes(weights_bytes(value.model))
    value.refresh()
    assert value.version == 3
    s = walkthrough_samples(limit=1)[0]
    v = value("You open the trunk.", s.candidates)
    pc = PPOSection(**{**EASY, "rewards": ["progress:1.0"], "progress_value_weight": 0.5})
    reward_fn, progress = build_reward_fn(pc, value_fn=value)
    total, parts = reward_fn(s, f"</think>\n<answer>{s.truth}</answer>")
    assert np.isfinite(v) and parts["progress"] != 1.0 and np.isfinite(total)
    progress.close()


def test_choice_mode_trains_the_distribution_it_samples_from():
    """Answers are drawn from softmax(mean token log-prob / T); the token-level PPO update must move
    that score by the answer's advantage whatever its length (the old update pushed a 6-token
    answer 6 x T times as hard as a 1-token one)."""
    from pzstream.llm.losses import ppo_clip_loss
    from pzstream.orz.ppo_math import choice_advantages

    T = 2.0
    mask = torch.tensor([[1.0] * 7, [1.0, 1.0, 0, 0, 0, 0, 0]])  # a long and a short answer
    decided = mask.clone()
    decided[:, 0] = 0.0  # the first token is shared by every allowed answer
    adv = choice_advantages(torch.ones(2, 7) * decided, decided, T)
    logp = torch.full((2, 7), -1.0, requires_grad=True)
    ppo_clip_loss(logp, logp.detach(), adv, 0.2, mask).backward()  # the first (on-policy) step
    # the update is -dL/dlogp = c * d score / d logp for the sampling score mean(decided log-probs) / T:
    # the coefficient c (the push on the score) must be the same for both answers
    dscore = decided / (decided.sum(1, keepdim=True) * T)
    push = -logp.grad[decided.bool()] / dscore[decided.bool()]
    assert torch.allclose(push, push[0].expand_as(push)), push
    assert torch.all(adv[:, 0] == 0) and torch.all(adv[1, 2:] == 0)
    with pytest.raises(ValueError, match="temperature"):
        choice_advantages(adv, decided, 0.0)
