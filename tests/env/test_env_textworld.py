"""pzstream.env: the embedded default TextWorld game (generated offline, ~6 s once per session)."""
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from pzstream.env import FALLBACK_ACTIONS, Game, StepResult, ensure_default_game, open_game
from pzstream.env.sources import REPO_ROOT

_SNIPPET = "import sys; sys.path.insert(0, {root!r}); from pzstream.env import ensure_default_game; print(ensure_default_game({d!r}))"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("pzcache")


@pytest.fixture(scope="module")
def generated(cache_dir):
    """Two processes generate the default game at once; both must get the same complete game."""
    code = _SNIPPET.format(root=str(REPO_ROOT), d=str(cache_dir))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    paths = {o[0].strip().splitlines()[-1] for o in outs}
    assert len(paths) == 1
    return Path(paths.pop())


@pytest.fixture
def game(generated, cache_dir):
    g = open_game("default", cache_dir=cache_dir)
    g.reset()
    yield g
    g.close()


def test_default_game_generated_once_and_reused(generated, cache_dir):
    assert generated.is_file() and generated.with_suffix(".json").is_file()
    games = cache_dir / "games"
    assert sorted(p.name for p in games.iterdir() if not p.name.endswith(".lock")) == [generated.parent.name]
    t0 = time.perf_counter()
    again = ensure_default_game(cache_dir)
    assert time.perf_counter() - t0 < 0.1
    assert again == generated


def test_reset_actions_step(game):
    assert isinstance(game, Game) and game.name == "tw-default"
    assert game.max_score > 0
    obs = game.reset()
    assert isinstance(obs, str) and obs.strip()
    acts = game.valid_actions()
    assert acts and all(isinstance(a, str) for a in acts)
    res = game.step(acts[0])
    assert isinstance(res, StepResult) and isinstance(res.observation, str)
    assert isinstance(res.reward, float) and res.score == game.score and res.done is False


def test_walkthrough_reaches_max_score(game):
    total = 0.0
    walk = game.walkthrough()
    assert walk
    for i, action in enumerate(walk):
        assert action in game.valid_actions()
        res = game.step(action)
        total += res.reward
        assert res.done == (i == len(walk) - 1)
    assert res.score == game.max_score == total
    assert game.valid_actions()  # never empty, even after the end


def test_policy_commands_reach_max_score(generated):
    from pzstream.env.tw_game import TextWorldGame
    g = TextWorldGame(generated, policy_commands=True)
    g.reset()
    for _ in range(50):
        res = g.step(g.policy_commands()[0])
        if res.done:
            break
    assert res.done and g.score == g.max_score
    g.close()


def test_state_restore_replays_identically(game):
    walk = game.walkthrough()
    game.step(walk[0])
    mid = game.get_state()
    obs_mid, acts_mid, score_mid = game.observation, game.valid_actions(), game.score
    first = [game.step(a) for a in walk[1:]]               # play to the end (mutates tracking)
    assert first[-1].done
    for _ in range(2):                                     # a snapshot restores more than once
        game.set_state(mid)
        assert (game.observation, game.valid_actions(), game.score) == (obs_mid, acts_mid, score_mid)
        again = [game.step(a) for a in walk[1:]]
        assert again == first
    game.set_state(mid)
    assert game.step(walk[1]) == first[0]
    acts_after = game.valid_actions()
    game.set_state(mid)
    game.step(walk[1])
    assert game.valid_actions() == acts_after


def test_cache_stats_report_uncached(game):
    game.valid_actions()
    st = game.cache_stats()
    assert st["computes"] >= 1 and st["hits"] == 0 and st["misses"] == 0


def test_story_file_without_jericho_bindings_falls_back(generated):
    """Played directly by Jericho (no bindings for it), a game still works; actions fall back."""
    from pzstream.env.jericho_game import JerichoGame
    g = JerichoGame(generated)
    assert not g.supported
    assert g.reset().strip()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert g.valid_actions() == list(FALLBACK_ACTIONS)
    assert any("no bindings" in str(x.message) for x in w)
    assert isinstance(g.step("look"), StepResult)
    g.close()


def test_open_game_by_path_picks_textworld(generated):
    g = open_game(str(generated))
    assert g.name == "tw-simple" and type(g).__name__ == "TextWorldGame" and g.max_score > 0
    g.reset()
    assert g.valid_actions()
    g.close()
