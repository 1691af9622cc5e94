import pytest
import torch

from pzstream.model.config import WorldModelConfig
from pzstream.model.support import (
    h_inverse,
    h_transform,
    logits_to_scalar,
    probs_to_scalar,
    scalar_to_two_hot,
    support_for,
    support_limit,
)


def test_h_inverse_round_trip():
    x = torch.linspace(-500, 500, 2001, dtype=torch.float64)
    assert torch.allclose(h_inverse(h_transform(x)), x, atol=1e-6)
    y = torch.linspace(-20, 20, 401, dtype=torch.float64)
    assert torch.allclose(h_transform(h_inverse(y)), y, atol=1e-9)


@pytest.mark.parametrize("support", [5, 10, 32])
def test_two_hot_round_trip(support):
    hi = float(h_inverse(torch.tensor(float(support))))
    x = torch.cat([torch.linspace(-hi, hi, 1001), torch.tensor([0.0, 1.0, -1.0, hi, -hi])])
    p = scalar_to_two_hot(x, support)
    assert p.shape == (x.numel(), 2 * support + 1)
    assert torch.allclose(p.sum(-1), torch.ones(x.numel()))
    assert (p >= 0).all() and ((p > 0).sum(-1) <= 2).all()
    assert torch.allclose(probs_to_scalar(p, support), x, atol=1e-3 * (1 + hi))
    # out of the support: clipped to its edge
    assert float(probs_to_scalar(scalar_to_two_hot(torch.tensor([1e6]), support), support)) == pytest.approx(hi, rel=1e-4)
    # logits that put (almost) all mass on a two-hot recover the scalar
    assert float(logits_to_scalar(torch.log(scalar_to_two_hot(torch.tensor([1.0]), support) + 1e-12), support)) \
        == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("value", [350.0, 360.0, 600.0, -350.0, 1000.0])
def test_default_value_support_keeps_jericho_returns(value):
    # zork1 350, detective 360, spellbrkr 600 (the suite's largest max score); 1000 is headroom
    cfg = WorldModelConfig()
    x = torch.tensor([value])
    back = probs_to_scalar(scalar_to_two_hot(x, cfg.value_support, cfg.h_eps), cfg.value_support, cfg.h_eps)
    assert float(back) == pytest.approx(value, rel=1e-4, abs=1e-2)


@pytest.mark.parametrize("reward", [50.0, -50.0, 100.0, 0.5])
def test_default_reward_support_keeps_large_step_rewards(reward):
    cfg = WorldModelConfig()
    x = torch.tensor([reward])
    back = probs_to_scalar(scalar_to_two_hot(x, cfg.reward_support, cfg.h_eps), cfg.reward_support, cfg.h_eps)
    assert float(back) == pytest.approx(reward, rel=1e-4, abs=1e-3)


@pytest.mark.parametrize("max_abs", [1.0, 7.0, 35.0, 350.0, 600.0, 5000.0])
def test_support_for_sizes_a_support_from_a_max_score(max_abs):
    s = support_for(max_abs)
    assert support_limit(s) >= max_abs > (support_limit(s - 1) if s > 1 else 0.0)
    back = probs_to_scalar(scalar_to_two_hot(torch.tensor([max_abs]), s), s)
    assert float(back) == pytest.approx(max_abs, rel=1e-4)


def test_support_for_rejects_negative_scores():
    with pytest.raises(ValueError, match="max_abs"):
        support_for(-1.0)


def test_two_hot_batched_shape():
    assert scalar_to_two_hot(torch.zeros(4, 6), 5).shape == (4, 6, 11)


@pytest.mark.parametrize("kwargs,field", [
    (dict(latent_dim=30, n_heads=4), "latent_dim"),
    (dict(unroll_steps=0), "unroll_steps"),
    (dict(n_layers=0), "n_layers"),
    (dict(context_steps=-1), "context_steps"),
    (dict(simnorm_group=7), "simnorm_group"),
    (dict(text_encoder="bert"), "text_encoder"),
    (dict(discount=1.5), "discount"),
    (dict(target_tau=0.0), "target_tau"),
    (dict(w_value=-1.0), "w_value"),
    (dict(lr=0.0), "lr"),
    (dict(td_steps=0), "td_steps"),
    (dict(hash_buckets=0), "hash_buckets"),
])
def test_validate_names_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        WorldModelConfig(**kwargs).validate()


def test_default_config_is_valid():
    cfg = WorldModelConfig().validate()
    assert cfg.max_tokens == 2 * (cfg.context_steps + cfg.unroll_steps) + 1
    assert cfg.value_bins == 2 * cfg.value_support + 1 and cfg.reward_bins == 2 * cfg.reward_support + 1
    # the defaults cover the Jericho suite: returns to ~1000, per-step rewards to ~100
    assert support_limit(cfg.value_support, cfg.h_eps) >= 1000 and support_limit(cfg.reward_support, cfg.h_eps) >= 100


def test_support_warning_names_the_setting_that_covers_the_game():
    from pzstream.model.support import support_for, support_warning

    assert support_warning(350, 32) is None  # the default covers zork1
    assert support_warning(0, 1) is None  # a game without a score
    msg = support_warning(350, 10)
    assert msg is not None and f"model.value_support={support_for(350)}" in msg and "350" in msg
