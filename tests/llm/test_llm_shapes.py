"""Real LLM shapes with random weights (`llm.model=random:qwen2.5-0.5b`): the published sizes
without allocating them, and a small shape built, cached, loaded and scoring end to end."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from pzstream.config import load_config
from pzstream.llm import shapes
from pzstream.llm.shapes import SHAPES, LLMShape, build_random_model, shape_named
from pzstream.llm.tiny import resolve_model

# A Qwen2 architecture small enough to build in a second, but with Qwen2.5's real vocabulary
# rows, so the local tokenizer's ids sit inside a 151,936-row embedding as they do at 0.5B.
SMALL = LLMShape("qwen2-small-test", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=128, vocab_size=151_936, tie_word_embeddings=True,
                 initializer_range=0.25)


@pytest.mark.parametrize("name,params", [("qwen2.5-0.5b", 494_032_768), ("qwen2.5-1.5b", 1_543_714_304),
                                         ("qwen2.5-7b", 7_615_616_512)])
def test_published_shapes_have_their_parameter_counts(name, params):
    shape = shape_named(name)
    assert shape.param_count() == shape.published_params == params
    # the real module, built on the meta device: nothing is allocated, every shape is real
    model = build_random_model(shape, eos_id=0, device="meta")
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.dtype == torch.bfloat16
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.intermediate_size, cfg.vocab_size, cfg.tie_word_embeddings) == (
        shape.hidden_size, shape.num_hidden_layers, shape.num_attention_heads, shape.num_key_value_heads,
        shape.intermediate_size, shape.vocab_size, shape.tie_word_embeddings)
    # transformers 5 keeps rope theta in rope_parameters; older versions as a plain field
    theta = getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"]
    assert theta == shape.rope_theta == 1_000_000.0


def test_qwen2_5_0_5b_layer_shapes():
    model = build_random_model(shape_named("Qwen2.5-0.5B"), eos_id=0, device="meta")
    attn = model.model.layers[0].self_attn
    assert tuple(model.model.embed_tokens.weight.shape) == (151_936, 896)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as published
    assert tuple(attn.q_proj.weight.shape) == (896, 896)
    assert tuple(attn.k_proj.weight.shape) == (128, 896)  # 2 KV heads of 64
    assert tuple(model.model.layers[0].mlp.gate_proj.weight.shape) == (4864, 896)
    assert len(model.model.layers) == 24


def test_unknown_shape_is_refused_with_the_known_names():
    with pytest.raises(ValueError) as e:
        resolve_model("random:qwen2.5-3b")
    msg = str(e.value)
    assert "qwen2.5-3b" in msg
    for name in SHAPES:
        assert "random:" + name in msg
    with pytest.raises(ValueError, match="num_key_value_heads"):
        replace(SMALL, num_key_value_heads=3).validate()


@pytest.fixture()
def small_named(monkeypatch, tmp_path):
    """`random:qwen2-small-test` resolves like the published names, cached under tmp_path."""
    monkeypatch.setitem(SHAPES, SMALL.name, SMALL)
    monkeypatch.setenv("PZSTREAM_CACHE_DIR", str(tmp_path))
    return "random:" + SMALL.name


def test_small_shape_builds_once_loads_and_scores(small_named, tmp_path):
    path = resolve_model(small_named)
    assert path == str(tmp_path / "models" / f"random-{SMALL.name}-{shapes.BUILD_VERSION}")
    cfg = json.loads((tmp_path / "models" / f"random-{SMALL.name}-{shapes.BUILD_VERSION}" / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["vocab_size"], cfg["num_key_value_heads"]) == (64, 151_936, 2)
    marker = tmp_path / "models" / f"random-{SMALL.name}-{shapes.BUILD_VERSION}" / "BUILD_OK"
    stamp = marker.stat().st_mtime_ns
    assert resolve_model(small_named) == path and marker.stat().st_mtime_ns == stamp  # reused, not rebuilt

    # the config's llm.model takes the name: the backend the collectors and prior servers use
    from pzstream.llm.factory import LocalPrior

    llm = load_config(None, [f"llm.model={small_named}"]).llm
    prior = LocalPrior(llm)
    tok = prior.backend.tokenizer
    ids = tok("West of House. You see a small mailbox. <answer>open mailbox</answer>", add_special_tokens=False)["input_ids"]
    assert max(ids) < 5000 and tok.convert_tokens_to_ids("<answer>") in ids  # byte-level BPE, added tokens whole
    assert prior.backend.model.get_input_embeddings().weight.shape[0] == 151_936
    out = prior.prior([[]], ["West of House. There is a small mailbox here."], [["open mailbox", "go north", "take leaflet"]])
    assert out[0].shape == (3,) and np.isclose(out[0].sum(), 1.0, atol=1e-5)
    assert float(np.ptp(out[0])) > 1e-3  # random weights, yet the candidates are told apart


def test_ppo_policy_model_loads_a_random_shape(small_named):
    from pzstream.orz.models import PolicyModel

    policy = PolicyModel(resolve_model(small_named), lr=1e-4)
    assert sum(p.numel() for p in policy.model.parameters()) == SMALL.param_count()
    assert policy.tied


def test_untied_shape_saves_and_loads_its_own_lm_head(tmp_path):
    # 7B's layout (separate lm-head) at a size that builds in a second
    from transformers import AutoModelForCausalLM

    untied = replace(SMALL, name="qwen2-small-untied", vocab_size=4096, tie_word_embeddings=False)
    path = shapes.build_random(untied, tmp_path / "untied")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == untied.param_count()
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    # the stored (bf16) weights are the seeded ones: a second build writes the same tensors
    again = AutoModelForCausalLM.from_pretrained(shapes.build_random(untied, tmp_path / "again"), dtype=torch.float32)
    assert torch.equal(model.lm_head.weight, again.lm_head.weight)
    assert float(model.lm_head.weight.detach().std()) > 0.1  # drawn at the shape's initializer_range, not zeros
