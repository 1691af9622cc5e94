"""pzstream.env: game sources, errors, text decoding and the ValidActionCache (no games needed)."""
import re

import pytest

from pzstream.env import (FALLBACK_ACTIONS, GameNotFound, ValidActionCache, decode_text, open_game,
                          state_digest)


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.z5"
    with pytest.raises(GameNotFound) as ei:
        open_game(str(missing))
    assert isinstance(ei.value, FileNotFoundError)
    assert "nope.z5" in str(ei.value)


def test_missing_games_dir_says_how_to_point_at_one(tmp_path):
    d = tmp_path / "no-such-dir"
    with pytest.raises(GameNotFound) as ei:
        open_game("zork1", games_dir=d)
    msg = str(ei.value)
    assert "zork1" in msg and str(d) in msg and "does not exist" in msg and "PZSTREAM_GAMES_DIR" in msg


def test_unknown_name_lists_available(tmp_path):
    (tmp_path / "alpha.z5").write_bytes(b"\0" * 64)
    (tmp_path / "beta.z8").write_bytes(b"\0" * 64)
    with pytest.raises(GameNotFound) as ei:
        open_game("gamma", games_dir=tmp_path)
    msg = str(ei.value)
    assert "gamma" in msg and str(tmp_path) in msg and "alpha" in msg and "beta" in msg


def test_games_dir_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("PZSTREAM_GAMES_DIR", str(tmp_path))
    with pytest.raises(GameNotFound, match=re.escape(str(tmp_path))):
        open_game("zork1")


def test_decode_text_never_raises():
    assert decode_text(b"plain ascii") == "plain ascii"
    assert decode_text("caf\u00e9".encode()) == "caf\u00e9"            # valid UTF-8
    out = decode_text(b"caf\xe9 \x81\x8d end")                         # not UTF-8, cp1252 holes
    assert out.startswith("caf\u00e9 ") and "\ufffd" in out and out.endswith(" end")


def _compute(acts, calls):
    def f():
        calls.append(1)
        return list(acts)
    return f


def test_cache_levels_and_counts():
    c = ValidActionCache()
    calls = []
    acts, lvl = c.lookup("g", b"s1", lambda: "w1", _compute(["a", "b"], calls))
    assert (acts, lvl, len(calls)) == (["a", "b"], "miss", 1)
    assert c.lookup("g", b"s1", lambda: "w1", _compute(["x"], calls)) == (["a", "b"], "exact")
    # a new exact state with a known world hash: world hit, then stored under the exact key
    assert c.lookup("g", b"s2", lambda: "w1", _compute(["x"], calls)) == (["a", "b"], "world")
    assert c.lookup("g", b"s2", lambda: 1 / 0, _compute(["x"], calls)) == (["a", "b"], "exact")
    # other game, same keys: separate entries
    assert c.lookup("h", b"s1", lambda: "w1", _compute(["h"], calls)) == (["h"], "miss")
    assert len(calls) == 2
    g = c.stats("g")
    assert (g["hits"], g["misses"], g["exact_hits"], g["world_hits"]) == (3, 1, 2, 1)
    assert g["hit_rate"] == pytest.approx(0.75)
    assert g["valid_action_s"] >= 0
    assert c.stats()["misses"] == 2


def test_cache_lru_bound():
    c = ValidActionCache(capacity=3, use_world_hash=False)
    for i in range(4):
        c.lookup("g", b"%d" % i, None, lambda: ["a"])
    assert len(c) == 3 and c.stats()["evictions"] == 1
    assert c.lookup("g", b"0", None, lambda: ["new"]) == (["new"], "miss")   # evicted
    assert c.lookup("g", b"3", None, lambda: ["new"]) == (["a"], "exact")    # kept


def test_cache_capacity_zero_never_stores():
    c = ValidActionCache(capacity=0)
    for _ in range(3):
        assert c.lookup("g", b"s", lambda: "w", lambda: ["a"])[1] == "miss"
    assert len(c) == 0 and c.stats("g")["misses"] == 3


def test_state_digest_ignores_dead_stack():
    import numpy as np
    ram = np.arange(16, dtype=np.uint8)
    s1 = np.zeros(32, dtype=np.uint8)
    s2 = s1.copy()
    s2[:8] = 7                                    # below sp (word 8 = byte 16): dead
    a = (ram, s1, 100, 8, 9, 1, 0, (1, 0, 0), b"")
    b = (ram, s2, 100, 8, 9, 1, 0, (1, 0, 0), b"")
    assert state_digest(a) == state_digest(b)
    s2[20] = 1                                    # live part differs
    assert state_digest(a) != state_digest(b)


def test_fallback_actions_are_small_and_documented():
    assert list(FALLBACK_ACTIONS) == ["look", "inventory", "wait"]
