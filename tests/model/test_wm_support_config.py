import pytest
import torch

from pzstream.model.config import WorldModelConfig
from pzstream.model.support import (h_inverse, h_transform, logits_to_scalar, probs_to_scalar,
                                    scalar_to_two_hot)


def test_h_inverse_round_trip():
    x = torch.linspace(-500, 500, 2001, dtype=torch.float64)
    assert torch.allclose(h_inverse(h_transform(x)), x, atol=1e-6)
    y = torch.linspace(-20, 20, 401, dtype=torch.float64)
    assert torch.allclose(h_transform(h_inverse(y)), y, atol=1e-9)


@pytest.mark.parametrize("support", [5, 10])
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
    assert cfg.value_bins == 21 and cfg.reward_bins == 11
