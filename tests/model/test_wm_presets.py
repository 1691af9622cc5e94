"""World-model presets: `model.preset=unizero-jericho` builds UniZero's Jericho sizes, explicit
fields override it, and an unknown preset stops with the known names."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from wm_helpers import make_segment

from pzstream.config import ConfigError, load_config
from pzstream.model.config import PRESETS, world_model_config
from pzstream.model.inference import SearchAdapter
from pzstream.model.support import logits_to_scalar
from pzstream.model.targets import build_windows, collate
from pzstream.model.world_model import WorldModel


def test_unizero_jericho_preset_has_lightzero_sizes():
    cfg = load_config(None, ["model.preset=unizero-jericho"]).world_model()
    # LightZero jericho_unizero_config: embed_dim 768, num_layers 2, num_heads 24,
    # infer_context_length 4, num_unroll_steps 10, support_size 101, batch_size 64
    assert (cfg.latent_dim, cfg.n_layers, cfg.n_heads) == (768, 2, 24)
    assert (cfg.context_steps, cfg.unroll_steps) == (4, 10)
    assert cfg.value_bins == cfg.reward_bins == 101
    assert (cfg.batch_size, cfg.w_entropy) == (64, 5e-2)
    # config/debug.yaml sets model.lr itself, and a field beside the preset wins over it
    assert cfg.lr == 1e-3
    assert world_model_config({"preset": "unizero-jericho"}).lr == 1e-4


def test_unizero_jericho_builds_and_runs_a_forward_pass_on_cpu():
    cfg = world_model_config({"preset": "unizero-jericho"})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = WorldModel(cfg).eval()
    n_params = sum(p.numel() for p in model.parameters())
    # 2 blocks x 12 x 768^2 (~14 M, the size of UniZero's Jericho transformer) + the 2^14 x 768
    # hashed text table (~12.6 M, where LightZero has a BGE encoder) + projections and heads
    assert 2.0e7 < n_params < 6.0e7, n_params
    blocks = sum(p.numel() for p in model.blocks.parameters())
    assert 1.3e7 < blocks < 1.5e7, blocks

    seg = make_segment([0.0, 1.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                       dones=[False] * 13 + [True], k=4)
    windows = build_windows([seg], cfg)[:2]
    batch = collate(windows, cfg)
    with torch.no_grad():
        out = model(batch)
    u = cfg.unroll_steps
    assert out.value_logits.shape == (2, u + 1, 101)
    assert out.reward_logits.shape == (2, u, 101)
    assert out.next_latent.shape == (2, u, 768)
    assert torch.isfinite(logits_to_scalar(out.value_logits, cfg.value_support)).all()

    # the search's side at this size: root inference over 2 roots, then imagined steps deeper
    # than the context (the KV cache is re-windowed past 2 * context_steps + 1 tokens)
    adapter = SearchAdapter(model)
    root = adapter.root([[("west of house", "open mailbox")] * 6, []], ["a mailbox", "a forest"],
                        [["take leaflet", "go north", "close mailbox"], ["go east"]])
    assert root.prior_logits.shape == (2, 3) and root.legal.tolist() == [[True] * 3, [True, False, False]]
    handles = root.handle
    for depth in range(cfg.context_steps + 2):
        step = adapter.recurrent(handles, np.array([depth % 3, 0]))
        assert np.isfinite(step.value).all() and np.isfinite(step.reward).all()
        handles = step.handle


def test_explicit_fields_override_the_preset():
    cfg = load_config(None, ["model.preset=unizero-jericho", "model.n_layers=4", "model.lr=3e-4"]).world_model()
    assert (cfg.n_layers, cfg.lr, cfg.latent_dim) == (4, 3e-4, 768)
    assert load_config(None, ["model.preset=default"]).world_model() == load_config(None, []).world_model()


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["model.preset=unizero-atari"])
    msg = str(e.value)
    assert "unizero-atari" in msg and "model" in msg
    for name in PRESETS:
        assert name in msg
    with pytest.raises(ValueError, match="known: default, unizero-jericho"):
        world_model_config({"preset": "nope"})


def test_a_preset_override_that_breaks_a_rule_is_named():
    # 768 is not divisible by 5 heads: the error names the fields, not the preset's internals
    with pytest.raises(ConfigError, match="n_heads"):
        load_config(None, ["model.preset=unizero-jericho", "model.n_heads=5"])
    with pytest.raises(ConfigError, match="n_layers must be int, got 'two'"):
        load_config(None, ["model.preset=unizero-jericho", "model.n_layers=two"])
    with pytest.raises(ConfigError, match="unknown world-model key 'layers'"):
        load_config(None, ["model.preset=unizero-jericho", "model.layers=3"])
