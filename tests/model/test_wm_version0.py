"""Weights version 0 is one model: every process builds the same untrained world model."""
import torch

from pzstream.config import load_config
from pzstream.model.world_model import untrained_world_model


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_version0_is_identical_whatever_the_global_rng():
    cfg = load_config(None, []).world_model()
    torch.manual_seed(123)
    a = untrained_world_model(cfg)
    torch.rand(1000)  # a process that drew random numbers before building its model
    b = untrained_world_model(cfg)
    assert _same(a, b)


def test_version0_leaves_the_callers_rng_alone():
    cfg = load_config(None, []).world_model()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    untrained_world_model(cfg)
    assert torch.equal(torch.rand(3), expected)


def test_roles_build_version0_through_the_one_function():
    """The collector's search policy starts from exactly the model the trainer starts from."""
    from pzstream.agent import MctsPolicy

    cfg = load_config(None, [])
    torch.manual_seed(99)
    policy = MctsPolicy(cfg.world_model(), cfg.search, seed=0)
    assert _same(policy.adapter.model, untrained_world_model(cfg.world_model()))
