"""The LLM prior at the root: mixing math, and an LLM fault never stops play."""
from __future__ import annotations

import threading

import numpy as np
from support import LastCandidatePrior

from pzstream.agent import GamePlayer, MctsPolicy
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


def play(prior, steps: int = 6):
    cfg = load_config(None, ["search.num_simulations=4"])
    policy = MctsPolicy(cfg.world_model(), cfg.search_config(), seed=0, prior=prior)
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
