"""bench/prior_quality.py's ranking math: reciprocal rank and top-k with ties at their expectation
under a random order, and the uniform ranking's exact figures."""
import math
import sys

import numpy as np
import pytest

from support import REPO

sys.path.insert(0, str(REPO))

from bench.prior_quality import (  # noqa: E402
    over_games, parse_models, reciprocal_rank, same_length, state_metrics, target_logprob, top_k,
    uniform_reciprocal_rank)


def test_reciprocal_rank_and_top_k_of_a_strict_order():
    s = np.array([0.1, 3.0, -1.0, 2.0])
    assert reciprocal_rank(s, 1) == 1.0 and reciprocal_rank(s, 3) == 0.5 and reciprocal_rank(s, 2) == 0.25
    assert top_k(s, 3, 1) == 0.0 and top_k(s, 3, 3) == 1.0 and top_k(s, 2, 3) == 0.0


def test_ties_count_at_their_expectation():
    s = np.array([5.0, 1.0, 1.0, 1.0, 0.0])  # target ranks 2, 3 or 4 with equal chance
    assert reciprocal_rank(s, 2) == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3)
    assert top_k(s, 2, 1) == 0.0 and top_k(s, 2, 3) == pytest.approx(2 / 3) and top_k(s, 2, 4) == 1.0
    nan = np.array([np.nan, -np.inf, 0.0])  # NaN is -inf: ties with the -inf candidate, below 0
    assert reciprocal_rank(nan, 0) == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_a_flat_prior_scores_exactly_the_uniform_expectation():
    for n in (1, 2, 7, 40):
        flat = np.zeros(n)
        assert reciprocal_rank(flat, n - 1) == pytest.approx(uniform_reciprocal_rank(n))
        assert uniform_reciprocal_rank(n) == pytest.approx(sum(1 / r for r in range(1, n + 1)) / n)
        assert top_k(flat, 0, 3) == pytest.approx(min(3, n) / n)
        assert target_logprob(flat, 0, 2.0) == pytest.approx(-math.log(n))
    rng = np.random.default_rng(0)  # and it is what random orders average to
    mc = np.mean([reciprocal_rank(rng.permutation(7).astype(float), 0) for _ in range(20000)])
    assert mc == pytest.approx(uniform_reciprocal_rank(7), abs=0.01)


def test_state_metrics_and_the_mean_over_games_weigh_each_game_the_same():
    a = state_metrics([np.array([1.0, 0.0]), np.array([0.0, 1.0])], [0, 0])  # ranks 1 and 2
    assert a["mrr"] == pytest.approx(0.75) and a["top1"] == pytest.approx(0.5) and a["top3"] == 1.0
    b = state_metrics([np.array([1.0, 0.0])], [0])
    assert over_games({"a": a, "b": b})["mrr"] == pytest.approx((0.75 + 1.0) / 2)
    assert a["logp@1"] == pytest.approx(np.mean([-math.log1p(math.exp(-1)), -math.log1p(math.exp(1))]))
    with pytest.raises(ValueError):
        reciprocal_rank(np.zeros(3), 3)


def test_models_are_named_or_labelled():
    assert parse_models("smollm2-135m-instruct, mine=/tmp/dir") == {"smollm2-135m-instruct": "smollm2-135m-instruct",
                                                                   "mine": "/tmp/dir"}


def test_same_length_ranking_leaves_out_candidates_of_other_lengths():
    words = np.array([1, 2, 2, 1, 2])
    scores = np.array([9.0, 1.0, 3.0, 8.0, 2.0])  # the one-word moves score highest
    sub, t = same_length(scores, 4, words)
    assert list(sub) == [1.0, 3.0, 2.0] and t == 2 and reciprocal_rank(sub, t) == 0.5
    m = state_metrics([scores], [4], [words])
    assert m["mrr"] == pytest.approx(1 / 4) and m["mrr_same_length"] == pytest.approx(1 / 2)
