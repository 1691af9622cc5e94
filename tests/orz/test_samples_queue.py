"""Prompt samples from real segments, the bounded prompt queue, and the PPO config checks."""
from __future__ import annotations

import random
import threading

import pytest

from pzstream.config import ConfigError, load_config
from pzstream.env import open_game
from pzstream.orz.prompt_sets import chance_of, walkthrough_samples
from pzstream.orz.samples import EpisodeTracker, PromptSample, answer_choices, render_prompt
from pzstream.hub.prompt_queue import PromptQueue


@pytest.fixture(scope="module")
def segments():
    """Real segments of one episode of the default game, 3 steps each (random play)."""
    from pzstream.agent import RandomPlayer

    g = open_game("default")
    player = RandomPlayer(g, "c0", segment_steps=3, max_episode_steps=7, seed=5)
    stop = threading.Event()
    segs = [player.play_segment(stop) for _ in range(3)]
    g.close()
    return segs


def test_tracker_gives_each_step_its_history_prefix_and_seed(segments):
    tr = EpisodeTracker(history_len=2)
    out = [s for seg in segments for s in tr.add(seg, seed_base=5)]
    assert [s.step for s in out] == list(range(7))
    actions = [a for seg in segments for a in seg.action_text]
    for i, s in enumerate(out):
        assert s.truth == actions[i] and s.truth in s.candidates
        assert s.prefix == actions[:i]
        assert s.seed == 5 + segments[0].header.episode_id
        assert [h[1] for h in s.history] == actions[max(0, i - 2):i]
        assert abs(sum(s.visits) - 1.0) < 1e-5
    assert len(tr) == 0  # the episode ended: forgotten


def test_tracker_marks_a_gap_in_the_stream(segments):
    tr = EpisodeTracker()
    tr.add(segments[0], seed_base=0)
    late = tr.add(segments[2], seed_base=0)  # segment 1 never arrived
    assert all(s.prefix is None and s.seed is None for s in late)


def test_prefix_replays_to_the_same_observation(segments):
    """What the progress reward relies on: reset(seed) + prefix reproduces the step's state."""
    tr = EpisodeTracker()
    out = [x for seg in segments for x in tr.add(seg, seed_base=5)]
    s = out[4]
    g = open_game("default")
    g.reset(seed=s.seed)
    for a in s.prefix:
        obs = g.step(a).observation
    g.close()
    assert obs == s.observation


def test_sample_round_trips_through_a_dict(segments):
    s = EpisodeTracker().add(segments[0], seed_base=1)[1]
    assert PromptSample.from_dict(s.to_dict()) == s


def test_prompt_is_orz_with_candidates_and_fits():
    from pzstream.llm.backend import load_model_and_tokenizer

    _, tok = load_model_and_tokenizer("tiny")
    s = walkthrough_samples(limit=3)[2]
    p = render_prompt(s, tok, prompt_max_len=400)
    assert p.endswith("Assistant: <think>") and "<answer>" in p and s.candidates[0] in p
    assert len(tok(p, add_special_tokens=False)["input_ids"]) <= 400
    short = render_prompt(s, tok, prompt_max_len=120)
    assert len(tok(short, add_special_tokens=False)["input_ids"]) <= 120
    assert answer_choices(["go north"]) == ["</think>\n<answer>go north</answer>"]


def test_walkthrough_prompt_set_has_the_truth_among_k_candidates():
    ss = walkthrough_samples(max_candidates=4, limit=6)
    assert len(ss) == 6 and all(len(s.candidates) == 4 and s.truth in s.candidates for s in ss)
    assert chance_of(ss) == pytest.approx(0.25)


def test_queue_is_bounded_counts_evictions_and_fires_at_threshold():
    q = PromptQueue(capacity=5, fire_threshold=3)
    for i in range(2):
        q.add(i)
    assert not q.ready()
    q.add(2)
    assert q.ready()
    for i in range(3, 9):
        q.add(i)
    assert len(q) == 5 and q.evicted == 4 and q.added == 9
    got = q.take(2, random.Random(0))
    assert len(got) == 2 and set(got) <= {4, 5, 6, 7, 8} and got == sorted(got)
    assert len(q) == 0 and q.taken == 2 and q.skipped == 3 and not q.ready()
    with pytest.raises(ValueError):
        PromptQueue(capacity=2, fire_threshold=3)


@pytest.mark.parametrize("overrides, words", [
    (["ppo.rollout_batch_size=3", "ppo.n_samples_per_prompt=3", "ppo.policy_update_steps=2"],
     ["ppo.rollout_batch_size", "ppo.n_samples_per_prompt", "ppo.policy_update_steps"]),
    (["ppo.rollout_batch_size=4", "ppo.n_samples_per_prompt=2", "ppo.micro_train_batch_size=3",
      "ppo.policy_update_steps=1", "ppo.critic_update_steps=1"], ["ppo.micro_train_batch_size"]),
    (["ppo.rollout_batch_size=16", "ppo.fire_threshold=8"], ["ppo.fire_threshold", "ppo.rollout_batch_size"]),
    (["ppo.use_grpo=true", "ppo.n_samples_per_prompt=1", "ppo.micro_train_batch_size=8"], ["ppo.use_grpo"]),
    (["llm.train=true"], ["ppo.enabled", "llm.train"]),
    (["ppo.rewards=[exact, bogus]"], ["bogus"]),
])
def test_bad_ppo_configs_are_rejected_naming_the_keys(overrides, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, ["ppo.enabled=true", *overrides])
    for w in words:
        assert w in str(e.value)
