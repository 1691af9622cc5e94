"""pzstream.env: Jericho suite games (zork1). Skipped when the suite directory is absent."""
import time

import pytest

from pzstream.env import Game, StepResult, ValidActionCache, default_games_dir, open_game

GAMES = default_games_dir()
pytestmark = pytest.mark.skipif(not (GAMES / "zork1.z5").is_file(),
                                reason=f"Jericho suite not found at {GAMES} (set PZSTREAM_GAMES_DIR)")


@pytest.fixture(scope="module")
def zork():
    g = open_game("zork1")
    g.reset()
    yield g
    g.close()


def test_zork_reset_step_score(zork):
    assert isinstance(zork, Game) and zork.name == "zork1" and zork.max_score == 350
    obs = zork.reset()
    assert "West of House" in obs
    res = zork.step("open mailbox")
    assert isinstance(res, StepResult) and "leaflet" in res.observation
    assert res.moves == 1 and res.score == zork.score == 0 and res.done is False


def test_zork_valid_actions_and_cache_hits(zork):
    zork.reset()
    s0 = zork.get_state()
    acts = zork.valid_actions()
    assert acts and "north" in acts and zork.last_lookup == "miss"
    zork.step("north")
    zork.valid_actions()
    zork.set_state(s0)                       # revisit: exact hit, fast
    t0 = time.perf_counter()
    again = zork.valid_actions()
    assert time.perf_counter() - t0 < 0.01
    assert again == acts and zork.last_lookup == "exact"
    st = zork.cache_stats()
    assert st["exact_hits"] >= 1 and st["misses"] >= 2 and st["valid_action_s"] > 0


def test_zork_world_hash_hit():
    g = open_game("zork1", cache=ValidActionCache())
    g.reset()
    first = g.valid_actions()
    g.step("look")                           # turn counter moves, the world does not
    assert g.valid_actions() == first and g.last_lookup == "world"
    g.step("look")
    g.valid_actions()
    st = g.cache_stats()
    assert st["world_hits"] == 2 and st["misses"] == 1 and st["hit_rate"] == pytest.approx(2 / 3)
    g.close()


def test_zork_state_restore_replays(zork):
    zork.reset()
    zork.step("open mailbox")
    s = zork.get_state()
    a = [zork.step(x) for x in ("take leaflet", "read leaflet", "north")]
    zork.set_state(s)
    assert [zork.step(x) for x in ("take leaflet", "read leaflet", "north")] == a


def test_shared_cache_counts_per_game(zork):
    cache = ValidActionCache()
    g = open_game("zork1", cache=cache)
    g.reset()
    g.valid_actions()
    assert cache.stats("zork1")["misses"] == 1 and cache.stats("other")["misses"] == 0
    g.close()


def test_open_by_file_name_and_path():
    g = open_game("zork1.z5")
    assert g.name == "zork1"
    g.close()
    g = open_game(str(GAMES / "detective.z5"))
    assert g.name == "detective" and g.max_score > 0
    g.close()
