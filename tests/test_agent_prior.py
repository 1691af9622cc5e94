"""The LLM prior at the root: mixing math, and an LLM fault never stops play."""
from __future__ import annotations

import threading

import numpy as np
from support import LastCandidatePrior

from pzstream.agent import GamePlayer, LlmPolicy, MctsPolicy, llm_prior_shift
from pzstream.config import load_config
from pzstream.env import open_game
from pzstream.search import entropy_llm_weight, mix_root_prior, softmax_masked


def test_entropy_weight_follows_world_model_entropy():
    legal = np.array([[True, True, True, False], [True, True, True, True], [True, False, False, False]])
    confident = np.array([1.0, 0.0, 0.0, 0.0])
    uniform = np.full(4, 0.25)
    w = entropy_llm_weight(np.stack([confident, uniform, confident]).astype(np.float32), legal)
    assert np.allclose(w, [0.3, 0.7, 0.3])
    mid = entropy_llm_weight(np.array([[0.7, 0.2, 0.1]], np.float32), np.ones((1, 3), bool))
    assert 0.3 < mid[0] < 0.7


def test_fixed_mix_is_half_and_half_over_legal_slots():
    legal = np.array([[True, True, False]])
    wm = softmax_masked(np.array([[0.0, 0.0, 5.0]], np.float32), legal)
    assert np.allclose(wm, [[0.5, 0.5, 0.0]])
    mixed = mix_root_prior(wm, np.array([[1.0, 0.0, 0.0]], np.float32), 0.5, legal)
    assert np.allclose(mixed, [[0.75, 0.25, 0.0]])


class BrokenPrior:
    version = 0
    net_s = 0.0

    def prior(self, histories, observations, candidates):
        raise RuntimeError("the LLM fell over")


def play(prior, steps: int = 6, fixed_weight: float = 0.5):
    cfg = load_config(None, ["search.num_simulations=4"])
    policy = MctsPolicy(cfg.world_model(), cfg.search_config(), seed=0, prior=prior, fixed_weight=fixed_weight)
    game = open_game("default")
    player = GamePlayer(game, policy, "t", 10, 50, 0)
    seg = player.play_segment(threading.Event(), max_steps=steps)
    game.close()
    return policy, seg


def test_an_llm_fault_falls_back_to_the_world_model_prior():
    policy, seg = play(BrokenPrior())
    assert seg.n_steps == 6 and policy.prior_errors == 6
    sizes = np.diff(seg.cand_offsets)
    assert np.allclose(seg.prior, np.repeat(1.0 / sizes, sizes))  # no LLM prior recorded


def test_llm_prior_is_recorded_and_steers_the_search():
    policy, seg = play(LastCandidatePrior())
    assert seg.header.llm_version == 7
    last = seg.cand_offsets[1:] - 1
    assert np.allclose(seg.prior[last], 1.0)
    # with a 0.5 mix and an untrained world model, the last candidate gets the most visits
    picks = [int(np.argmax(seg.visits[a:b])) == b - a - 1 for a, b in zip(seg.cand_offsets[:-1], seg.cand_offsets[1:])]
    assert sum(picks) >= 4


class UniformPrior:
    """An LLM with no preference: the same probability for every candidate."""

    version, net_s = 3, 0.0

    def prior(self, histories, observations, candidates):
        return [np.full(len(c), 1.0 / len(c), np.float32) for c in candidates]


class SilentPrior:
    """A prior server that never answers (RemotePrior returns None)."""

    version, net_s = 0, 0.0

    def prior(self, histories, observations, candidates):
        return None


def test_the_llm_prior_shift_is_its_weight_times_its_distance_from_uniform():
    legal = np.array([[True, True, True, True], [True, True, False, False], [True, False, False, False]])
    one_hot = np.array([[1.0, 0, 0, 0], [0.0, 1.0, 0.0, 0.0], [1.0, 0, 0, 0]])
    shift = llm_prior_shift(one_hot, np.array([0.5, 0.5, 0.5]), legal)
    assert np.allclose(shift, [0.5 * 0.75, 0.5 * 0.5, 0.0])  # one legal candidate: nothing to steer
    uniform = np.where(legal, 1.0, 0.0)  # any scale: renormalised over the legal slots
    assert np.allclose(llm_prior_shift(uniform, np.full(3, 0.7), legal), 0.0)
    assert np.allclose(llm_prior_shift(one_hot, np.zeros(3), legal), 0.0)
    illegal_mass = np.array([[0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 9.0, 9.0], [1.0, 0, 0, 0]])
    assert np.allclose(llm_prior_shift(illegal_mass, np.ones(3), legal), 0.0)  # what is illegal does not count


def test_moves_whose_llm_prior_cannot_steer_the_search_are_counted_and_logged_once(caplog):
    """Issue 21: wm_llm played the very moves of wm alone, and nothing said so."""
    import logging

    with caplog.at_level(logging.WARNING, logger="pzstream.agent"):
        flat, _ = play(UniformPrior())
        muted, _ = play(LastCandidatePrior(), fixed_weight=0.0)
    for policy in (flat, muted):
        c = policy.prior_counts
        assert (c.moves, c.ignored, c.fallbacks, c.errors) == (6, 6, 0, 0), c
        assert policy.prior_counts.as_stats()["prior_shift_mean"] == 0.0
    assert caplog.text.count("counted as prior_ignored") == 2  # once per policy, not once per move
    steering, _ = play(LastCandidatePrior())
    c = steering.prior_counts
    assert (c.moves, c.ignored) == (6, 0) and c.as_stats()["prior_shift_mean"] > 0.3, c


def test_moves_played_without_a_configured_llm_prior_are_counted_as_fallbacks():
    broken, _ = play(BrokenPrior())
    silent, _ = play(SilentPrior())
    assert broken.prior_counts.as_stats() == {"prior_moves": 0.0, "prior_errors": 6.0, "prior_fallbacks": 6.0,
                                              "prior_ignored": 0.0, "prior_shift_mean": 0.0}
    assert (silent.prior_counts.errors, silent.prior_counts.fallbacks) == (0, 6)
    alone, _ = play(None)
    assert alone.prior_counts.fallbacks == 0  # no LLM configured: nothing fell back


def test_the_llm_alone_counts_a_uniform_prior_as_ignored():
    policy = LlmPolicy(UniformPrior())
    for _ in range(3):
        policy.act([], "a room", ["north", "south", "take lamp"])
    assert (policy.prior_counts.moves, policy.prior_counts.ignored) == (3, 3)
    steered = LlmPolicy(LastCandidatePrior())
    assert steered.act([], "a room", ["north", "south"]).index == 1 and steered.prior_counts.ignored == 0
    silent = LlmPolicy(SilentPrior())
    silent.act([], "a room", ["north", "south"])
    assert silent.prior_counts.fallbacks == 1
