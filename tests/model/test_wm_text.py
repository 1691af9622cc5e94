"""The world model's text encoder: deterministic hashed bags, and a cache that peers cannot grow."""
from __future__ import annotations

import torch

import pzstream.model.text as text_mod
from pzstream.model.config import WorldModelConfig
from pzstream.model.text import TextEncoder, hashed_ids


def test_hashed_ids_are_stable_and_an_empty_text_is_an_empty_bag():
    assert hashed_ids("Take the lamp", 4096, 64) == hashed_ids("take THE lamp!", 4096, 64)
    assert hashed_ids("...", 4096, 64) == []
    enc = TextEncoder(WorldModelConfig())
    out = enc(["take lamp", "", "take lamp"])
    assert torch.equal(out[0], out[2]) and not out[1].any()


def test_the_cache_is_bounded_in_bytes_and_gives_the_same_vectors(monkeypatch):
    monkeypatch.setattr(text_mod, "_CACHE_BYTES", 1 << 20)
    enc = TextEncoder(WorldModelConfig())
    first = enc(["a long observation " + "word " * 100 + "0"])
    for i in range(400):  # 400 distinct observations of ~10 kB each: 4 MB of text
        enc([f"observation {i} " + "x" * 10_000])
        assert enc._cache_bytes <= 1 << 20
    assert len(enc._cache) < 400
    assert torch.equal(enc(["a long observation " + "word " * 100 + "0"]), first)  # computed again, alike
