"""pzstream.env.walkthrough on a real game: states along zork1's walkthrough, each with the
walkthrough's next action among its candidates, and the cached file read back as it was written.
Skipped when the Jericho suite is absent."""
import json

import pytest

from pzstream.env import default_games_dir, open_game
from pzstream.env.walkthrough import (MATCHES, WalkthroughSettings, cache_path, cached_states, load_states,
                                      match_action, sample_steps)

GAMES = default_games_dir()
ZORK = GAMES / "zork1.z5"
needs_zork = pytest.mark.skipif(not ZORK.is_file(), reason=f"Jericho suite not found at {GAMES} (set PZSTREAM_GAMES_DIR)")


def test_sample_steps_are_sorted_distinct_and_repeatable():
    a = sample_steps(400, 30, seed=0)
    assert a == sorted(set(a)) and len(a) == 30 and all(0 <= i < 400 for i in a)
    assert a == sample_steps(400, 30, seed=0) and a != sample_steps(400, 30, seed=1)
    assert sample_steps(5, 30, seed=0) == [0, 1, 2, 3, 4]


def test_settings_refuse_nonsense_and_key_by_every_field():
    with pytest.raises(ValueError, match="max_states"):
        WalkthroughSettings(max_states=0)
    keys = {WalkthroughSettings().key(), WalkthroughSettings(max_states=5).key(),
            WalkthroughSettings(seed=1).key(), WalkthroughSettings(history_steps=2).key()}
    assert len(keys) == 4


@needs_zork
def test_a_walkthrough_spelling_maps_to_the_valid_action_with_the_same_world():
    game = open_game("zork1")
    try:
        game.reset()
        game.step("open mailbox")
        valid = game.valid_actions()
        before = game.get_state()
        i, how = match_action(game, "get leaflet", valid)  # Jericho spells it "take leaflet"
        assert how == "hash" and valid[i] == "take leaflet"
        assert match_action(game, valid[0], valid) == (0, "text")
        assert match_action(game, "look", valid) == (None, "added")  # changes no object: never a valid action
        after = game.get_state()
        assert after.observation == before.observation and game.world_state_hash() == _hash_at(game, before)
    finally:
        game.close()


def _hash_at(game, state):
    game.set_state(state)
    return game.world_state_hash()


@needs_zork
def test_zork_states_hold_the_walkthrough_action_and_the_cache_round_trips(tmp_path):
    settings = WalkthroughSettings(max_states=4, history_steps=2, seed=3)
    built, hit = cached_states(ZORK, settings, cache_dir=tmp_path)
    assert not hit and built.game == "zork1" and len(built.states) == 4
    assert built.walkthrough_score == built.max_score == 350  # the walkthrough works: it is a yardstick
    assert sum(built.matches().values()) == 4 and set(built.matches()) == set(MATCHES)
    game = open_game("zork1")
    walk = game.walkthrough()
    game.close()
    for s in built.states:
        assert s.walkthrough_action == walk[s.step]
        assert 0 <= s.target < len(s.candidates) and len(s.candidates) == len(set(s.candidates))
        if s.match == "added":
            assert s.candidates[s.target] == s.walkthrough_action and s.target == len(s.candidates) - 1
        assert len(s.history) == min(2, s.step) and s.observation
    path = cache_path(ZORK, settings, tmp_path)
    assert path.is_file() and json.loads(path.read_text())["story_sha1"] == built.story_sha1
    again, hit = cached_states(ZORK, settings, cache_dir=tmp_path)
    assert hit and again == built == load_states(path)


@needs_zork
def test_a_damaged_cache_file_is_rebuilt(tmp_path):
    settings = WalkthroughSettings(max_states=1, history_steps=0)
    path = cache_path(ZORK, settings, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 1, "states": [')
    notes = []
    got, hit = cached_states(ZORK, settings, cache_dir=tmp_path, progress=notes.append)
    assert not hit and len(got.states) == 1 and "building again" in notes[0]
    assert load_states(path) == got
