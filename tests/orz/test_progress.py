"""The progress reward, played in the real default game (TextWorld, generated once per cache)."""
from __future__ import annotations

import pytest

from pzstream.env import ensure_default_game, open_game
from pzstream.orz.progress import ProgressReward
from pzstream.orz.rewards import DEFAULT_INVALID_PENALTY

SEED = 7


@pytest.fixture(scope="module")
def walk() -> list[tuple[str, float, bool, str]]:
    """The walkthrough played directly: (action, reward, done, observation) per step."""
    g = open_game("default")
    g.reset(seed=SEED)
    steps = []
    for action in g.walkthrough():
        res = g.step(action)
        steps.append((action, res.reward, res.done, res.observation))
    g.close()
    assert steps[-1][2] and any(r > 0 for _, r, _, _ in steps)
    return steps


@pytest.fixture
def progress():
    pr = ProgressReward()
    yield pr
    pr.close()


def test_a_rewarded_valid_action_scores_its_step(progress):
    g = open_game("default")
    g.reset(seed=SEED)
    valid = g.valid_actions()
    g.close()
    rewards = {a: progress("default", [], SEED, a) for a in valid}
    assert max(rewards.values()) == 1.0
    assert min(rewards.values()) == 0.0  # not every valid action progresses
    assert progress.replays == 1 and progress.calls == len(valid) and progress.errors == 0


def test_walkthrough_steps_score_what_direct_play_gives(progress, walk):
    actions = [a for a, _, _, _ in walk]
    for k, (action, reward, _, _) in enumerate(walk):
        assert progress("default", actions[:k], SEED, action) == reward
    assert sum(progress("default", actions[:k], SEED, a) for k, a in enumerate(actions)) > 0
    assert progress.replays == len(walk) and progress.errors == 0


def test_nonsense_answers_score_zero(progress):
    for answer in ("xyzzy plugh", "", "open the moon with the antique trunk", "\u00e9\ud83d\ude42 n\u200b",
                   "\x00", "look\x00", "\ud800"):
        assert progress("default", [], SEED, answer) == 0.0
    assert progress.errors == 0


def test_overlong_answer_is_cut_by_the_game_and_played(progress):
    import jericho
    with pytest.warns(jericho.TruncatedInputActionWarning):
        assert progress("default", [], SEED, "a" * 2000) == 0.0
    assert progress.errors == 0


def test_characters_no_interpreter_takes_become_spaces(progress, walk):
    # a NUL hangs or crashes the interpreter; a lone surrogate cannot be encoded
    first, reward = walk[0][0], walk[0][1]
    assert progress("default", [], SEED, first.replace(" ", "\x00")) == reward
    assert progress("default", [], SEED, first + "\ud800\n\r\t") == reward
    assert progress("default", [first.replace(" ", "\x00")], SEED, walk[1][0]) == walk[1][1]
    assert progress.errors == 0


def test_malformed_answer_gets_the_penalty_without_playing():
    pr = ProgressReward(invalid_penalty=-0.5)
    assert pr("default", [], SEED, None) == -0.5
    assert (pr.calls, pr.replays, pr.errors) == (1, 0, 0)
    assert ProgressReward()("default", [], SEED, None) == DEFAULT_INVALID_PENALTY == 0.0


def test_prefix_replayed_once_per_prompt(progress, walk):
    actions = [a for a, _, _, _ in walk]
    prefix = actions[:3]
    for answer in [actions[3], "look", "inventory", "xyzzy", actions[3], "go west"]:
        progress("default", prefix, SEED, answer)
    assert (progress.calls, progress.replays) == (6, 1)
    progress("default", prefix, SEED + 1, "look")           # another episode seed: another replay
    progress("default", actions[:4], SEED, "look")          # another prefix: another replay
    progress("default", tuple(prefix), SEED, "look")        # any sequence type: same prompt
    assert (progress.calls, progress.replays) == (9, 3)
    progress("default", [], None, "look")                   # no seed: the game's own (0)
    progress("default", [], 0, "look")
    assert progress.replays == 4


def test_calls_are_independent(progress, walk):
    first, reward = walk[0][0], walk[0][1]
    assert reward > 0
    # a second identical call would score 0 if the first one's step had stuck (trunk already open)
    assert [progress("default", [], SEED, first) for _ in range(3)] == [reward] * 3
    second = walk[1][0]
    assert progress("default", [], SEED, second) == 0.0                 # key not reachable yet
    assert progress("default", [first], SEED, second) == walk[1][1]
    assert progress("default", [], SEED, first) == reward


def test_replay_reproduces_the_observation(walk):
    """The value function sees exactly what playing the episode directly shows."""
    seen: list[tuple[str, list[str]]] = []

    def value_fn(observation: str, actions: list[str]) -> float:
        seen.append((observation, actions))
        return 1.0

    actions = [a for a, _, _, _ in walk]
    k = 4
    for _ in range(2):  # two fresh instances: two independent replays of the prefix
        with ProgressReward(value_fn=value_fn, value_weight=0.5) as pr:
            assert pr("default", actions[:k], SEED, actions[k]) == walk[k][1] + 0.5
            assert pr.replays == 1
    assert seen[0] == seen[1]
    assert seen[0][0] == walk[k][3] and "-= Kitchen =-" in seen[0][0]
    g = open_game("default")
    g.reset(seed=SEED)
    for a in actions[:k + 1]:
        g.step(a)
    assert seen[0][1] == g.valid_actions()
    g.close()


def test_value_term_is_zero_at_the_end_or_without_weight(walk):
    calls = []

    def value_fn(observation: str, actions: list[str]) -> float:
        calls.append(observation)
        return 2.0

    actions = [a for a, _, _, _ in walk]
    with ProgressReward(value_fn=value_fn, value_weight=0.25) as pr:
        assert pr("default", actions[:-1], SEED, actions[-1]) == walk[-1][1]   # the winning step: done
        assert pr("default", [], SEED, "look") == 0.5
    assert len(calls) == 1
    with ProgressReward(value_fn=value_fn) as pr:                            # value_weight 0.0
        assert pr("default", [], SEED, "look") == 0.0
    assert len(calls) == 1


def test_game_errors_score_the_penalty_and_are_counted(tmp_path, monkeypatch):
    import pzstream.orz.progress as progress_mod

    def open_game_failing(spec, **kw):
        if spec == "broken":
            raise RuntimeError("the interpreter could not load it")
        return open_game(spec, **kw)

    (tmp_path / "broken.z5").write_bytes(b"story")  # a known name whose game fails to open
    monkeypatch.setattr(progress_mod, "open_game", open_game_failing)
    with ProgressReward(invalid_penalty=-1.0, games_dir=tmp_path) as pr:
        assert pr("broken", [], SEED, "look") == -1.0
        assert pr("broken", ["look"], SEED, "look") == -1.0
        assert (pr.calls, pr.errors, pr.refused, pr.replays) == (2, 2, 0, 0)
        assert pr("default", [], SEED, "look") == 0.0                        # other games still play
        assert pr.errors == 2


@pytest.mark.parametrize("name", ["/etc/hostname", "../games/zork1.z5", "~/story.z5", "no-such-game-here",
                                  "a/b", "zork1\x00.z5", ".hidden.z5", "x" * 300])
def test_a_game_name_from_a_peer_opens_only_a_known_game(tmp_path, monkeypatch, name):
    """A segment's game name reaches the file system only as a story file in the games directory."""
    import pzstream.orz.progress as progress_mod

    opened = []
    monkeypatch.setattr(progress_mod, "open_game", lambda spec, **kw: opened.append(spec))
    (tmp_path / "zork1.z5").write_bytes(b"story")
    with ProgressReward(invalid_penalty=-1.0, games_dir=tmp_path) as pr:
        assert pr(name, [], SEED, "look") == -1.0
        assert (pr.refused, pr.errors) == (1, 0) and opened == []


def test_peer_game_names_resolve_inside_the_games_directory(tmp_path):
    from pzstream.env.sources import GameNotFound, peer_game_spec

    (tmp_path / "zork1.z5").write_bytes(b"story")
    assert peer_game_spec("default", tmp_path) == "default" and peer_game_spec("tw-default") == "tw-default"
    assert peer_game_spec("zork1", tmp_path) == str(tmp_path.resolve() / "zork1.z5")
    assert peer_game_spec("zork1.z5", tmp_path) == str(tmp_path.resolve() / "zork1.z5")
    for bad in ("zork2", str(tmp_path / "zork1.z5"), "../zork1.z5"):
        with pytest.raises(GameNotFound, match="refused"):
            peer_game_spec(bad, tmp_path)


def test_least_recently_used_game_is_closed_and_reopened(walk, tmp_path):
    import shutil

    story = ensure_default_game()  # the same story (and its TextWorld metadata) under a second name: a second game
    for suffix in (".z8", ".json", ".ni"):
        shutil.copy(story.with_suffix(suffix), tmp_path / f"second{suffix}")
    first = walk[0][0]
    with ProgressReward(max_games=1, games_dir=tmp_path) as pr:
        assert pr("default", [], SEED, first) == 1.0
        assert pr("second", [], SEED, first) == 1.0   # evicts "default"
        assert pr("default", [], SEED, first) == 1.0  # reopened: its saved states went with it
        assert pr.replays == 3 and pr.errors == 0
        pr.close()
        assert pr("default", [], SEED, first) == 1.0  # usable after close
        assert pr.replays == 4
