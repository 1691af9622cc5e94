"""How much the LLM's prior counts at the root: the named rules, the `adaptive` alias, the config."""
from __future__ import annotations

import numpy as np
import pytest
from support import LastCandidatePrior

from pzstream.config import ConfigError, load_config
from pzstream.search import mix_root_prior, softmax_masked
from pzstream.search.mixing import (
    ADAPTIVE_MEANS,
    MIX_MODES,
    entropy_llm_weight,
    normalised_entropy,
    priorzero_llm_weight,
    root_llm_weight,
)

LEGAL = np.array([[True, True, True, False], [True, True, True, True], [True, False, False, False]])
CONFIDENT = np.array([1.0, 0.0, 0.0, 0.0], np.float32)
UNIFORM = np.full(4, 0.25, np.float32)
WM = np.stack([CONFIDENT, UNIFORM, CONFIDENT])  # confident, undecided, one legal action


def test_normalised_entropy_is_zero_when_confident_and_one_when_uniform():
    assert np.allclose(normalised_entropy(WM, LEGAL), [0.0, 1.0, 0.0])


def test_priorzero_rule_trusts_the_llm_more_when_the_world_model_is_confident():
    # PriorZero (LightZero zoo/jericho/priorzero): w = low + (high - low) * (1 - H_norm(wm))
    w = priorzero_llm_weight(WM, LEGAL, 0.3, 0.7)
    assert np.allclose(w[:2], [0.7, 0.3])
    mid = priorzero_llm_weight(np.array([[0.7, 0.2, 0.1]], np.float32), np.ones((1, 3), bool), 0.3, 0.7)
    assert 0.3 < mid[0] < 0.7


def test_entropy_rule_trusts_the_llm_more_when_the_world_model_is_undecided():
    w = entropy_llm_weight(WM, LEGAL, 0.3, 0.7)
    assert np.allclose(w[:2], [0.3, 0.7])


def test_the_two_rules_are_mirror_images_within_the_range():
    rng = np.random.default_rng(0)
    wm = softmax_masked(rng.normal(size=(16, 6)).astype(np.float32) * 3, np.ones((16, 6), bool))
    legal = np.ones((16, 6), bool)
    assert np.allclose(priorzero_llm_weight(wm, legal, 0.2, 0.9) + entropy_llm_weight(wm, legal, 0.2, 0.9), 1.1)


@pytest.mark.parametrize("mode", ["adaptive_priorzero", "adaptive_entropy"])
def test_root_llm_weight_dispatches_by_name(mode):
    rule = priorzero_llm_weight if mode == "adaptive_priorzero" else entropy_llm_weight
    assert np.allclose(root_llm_weight(mode, WM, LEGAL, 0.5, 0.3, 0.7), rule(WM, LEGAL, 0.3, 0.7))


def test_adaptive_is_the_documented_alias_and_fixed_is_constant():
    assert ADAPTIVE_MEANS in ("adaptive_priorzero", "adaptive_entropy")
    assert np.allclose(root_llm_weight("adaptive", WM, LEGAL, 0.5, 0.3, 0.7),
                       root_llm_weight(ADAPTIVE_MEANS, WM, LEGAL, 0.5, 0.3, 0.7))
    assert np.allclose(root_llm_weight("fixed", WM, LEGAL, 0.4, 0.3, 0.7), 0.4)
    with pytest.raises(ValueError, match="mix"):
        root_llm_weight("adaptiv", WM, LEGAL, 0.5, 0.3, 0.7)


@pytest.mark.parametrize("mode", MIX_MODES)
def test_config_accepts_every_mix_name(mode):
    assert load_config(None, [f"llm.mix={mode}"]).llm.mix == mode


def test_config_rejects_an_unknown_mix_name():
    with pytest.raises(ConfigError, match="llm.mix"):
        load_config(None, ["llm.mix=adaptive_backwards"])


@pytest.mark.parametrize("mode", ["adaptive_priorzero", "adaptive_entropy", "adaptive"])
def test_the_collectors_policy_mixes_with_the_named_rule(mode):
    from pzstream.agent import mcts_policy

    cfg = load_config(None, [f"llm.mix={mode}", "llm.adaptive_low=0.2", "llm.adaptive_high=0.9"])
    policy = mcts_policy(cfg, seed=0, prior=LastCandidatePrior())
    legal = np.ones((1, 3), bool)
    logits = np.array([[6.0, 0.0, 0.0]], np.float32)  # a confident world model
    llm = policy.llm_priors([[]], ["a room"], [["north", "south", "take lamp"]])
    mixed = policy.roots_prior(logits, legal, llm)
    wm = softmax_masked(logits, legal)
    rule = ADAPTIVE_MEANS if mode == "adaptive" else mode
    expected = mix_root_prior(wm, np.array([[0.0, 0.0, 1.0]], np.float32),
                              root_llm_weight(rule, wm, legal, 0.5, 0.2, 0.9), legal)
    assert np.allclose(mixed, expected, atol=1e-6)
