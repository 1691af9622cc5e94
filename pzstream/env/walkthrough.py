"""States along a game's walkthrough, each with a known-good next action among its candidates.

Jericho ships a walkthrough for every game it supports; replayed from reset with the game's
walkthrough seed it reaches the maximum score in most of the suite. At every state along it, the
walkthrough's next action is therefore a good move, and a prior over the valid actions (an LLM's,
the world model's policy head) can be judged by where it ranks that action
(``bench/prior_quality.py``).

The walkthrough spells actions its own way ("N", "get lamp", "x door"); Jericho's valid actions
are spelled by its action templates ("north", "take lamp"). Each sampled state's walkthrough action
is matched to a valid action:

* ``text``: a valid action spelled the same (case and surrounding space aside);
* ``hash``: else the first valid action whose world-state hash after the move (``set_state`` then
  ``step``) equals the walkthrough action's: the same move in other words;
* ``added``: else none does (Jericho drops actions that change no object, such as "look" or
  "read leaflet", and some it never generates), and the walkthrough action itself is added to the
  candidates, last.

How often each happens is part of the result (``WalkthroughStates.matches``). Building costs one
valid-action computation per sampled state (0.1-10 s in Jericho) and one step and world hash per
candidate; ``cached_states`` keeps the result in a JSON file keyed by the story file's hash and the
settings, so a second run reads it in milliseconds.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .sources import default_cache_dir

#: Bump when what a cached file holds changes meaning: older files are rebuilt, not misread.
FORMAT_VERSION = 1

MATCHES = ("text", "hash", "added")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class WalkthroughSettings:
    """Which states are built. ``max_states``: at most this many states per game, a sample (by
    ``seed``) of the walkthrough's steps, kept in walkthrough order; all steps when it has fewer.
    ``history_steps``: the (observation, action, reward) steps kept before each state."""

    max_states: int = 30
    history_steps: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_states < 1:
            raise ValueError(f"max_states must be >= 1, got {self.max_states}")
        if self.history_steps < 0:
            raise ValueError(f"history_steps must be >= 0, got {self.history_steps}")

    def key(self) -> str:
        """A short name of these settings (and the format version) for cache file names."""
        text = json.dumps({"v": FORMAT_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class WalkthroughState:
    """One state along a walkthrough.

    ``step``: the index of the walkthrough action played from this state (0: right after reset).
    ``history``: up to ``history_steps`` (observation, action, reward) before it, oldest first, the
    actions spelled as the walkthrough spells them. ``observation``: the game's text at this state.
    ``candidates``: Jericho's valid actions here (plus the walkthrough action when ``match`` is
    ``added``). ``target``: index in ``candidates`` of the walkthrough's action. ``match``: one of
    ``MATCHES``. ``walkthrough_action``: the action as the walkthrough spells it.
    """

    step: int
    history: tuple[tuple[str, str, float], ...]
    observation: str
    candidates: tuple[str, ...]
    target: int
    match: str
    walkthrough_action: str

    def __post_init__(self) -> None:
        if not 0 <= self.target < len(self.candidates):
            raise ValueError(f"target {self.target} outside the {len(self.candidates)} candidates")
        if self.match not in MATCHES:
            raise ValueError(f"match must be one of {MATCHES}, got {self.match!r}")


@dataclass
class WalkthroughStates:
    """A game's sampled walkthrough states and how they were built.

    ``walkthrough_length``: actions in the walkthrough; ``walkthrough_score``: the score its replay
    reached (of ``max_score``); ``build_s``: seconds building took, ``valid_action_s`` of them in
    Jericho's valid-action generation."""

    game: str
    story_sha1: str
    settings: WalkthroughSettings
    walkthrough_length: int
    walkthrough_score: int
    max_score: int
    states: list[WalkthroughState] = field(default_factory=list)
    build_s: float = 0.0
    valid_action_s: float = 0.0

    def matches(self) -> dict[str, int]:
        """How many states' walkthrough action matched by each rule of ``MATCHES``."""
        return {m: sum(s.match == m for s in self.states) for m in MATCHES}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["version"] = FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "WalkthroughStates":
        """The inverse of ``to_dict``; ValueError naming what is wrong with a file of another format."""
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(f"walkthrough states of format {d.get('version')!r}, expected {FORMAT_VERSION}")
        states = [WalkthroughState(step=int(s["step"]),
                                   history=tuple((str(o), str(a), float(r)) for o, a, r in s["history"]),
                                   observation=str(s["observation"]), candidates=tuple(map(str, s["candidates"])),
                                   target=int(s["target"]), match=str(s["match"]),
                                   walkthrough_action=str(s["walkthrough_action"])) for s in d["states"]]
        return cls(game=str(d["game"]), story_sha1=str(d["story_sha1"]),
                   settings=WalkthroughSettings(**d["settings"]), walkthrough_length=int(d["walkthrough_length"]),
                   walkthrough_score=int(d["walkthrough_score"]), max_score=int(d["max_score"]), states=states,
                   build_s=float(d["build_s"]), valid_action_s=float(d["valid_action_s"]))


def sample_steps(length: int, max_states: int, seed: int) -> list[int]:
    """``max_states`` of the steps ``0 .. length - 1`` drawn without replacement by ``seed``, sorted
    (all of them when there are no more)."""
    if length <= max_states:
        return list(range(length))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(length, size=max_states, replace=False))


def file_sha1(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def match_action(game, action: str, valid: list[str]) -> tuple[int | None, str]:
    """(index in ``valid``, "text" | "hash") of the valid action that is ``action``, or
    (None, "added") when none is. ``game`` (a JerichoGame) is left in the state it was in."""
    wanted = action.strip().lower()
    for i, v in enumerate(valid):
        if v.strip().lower() == wanted:
            return i, "text"
    saved = game.get_state()

    def world_after(a: str) -> str:
        game.set_state(saved)
        game.step(a)
        return game.world_state_hash()

    try:
        target = world_after(action)
        for i, v in enumerate(valid):
            if world_after(v) == target:
                return i, "hash"
    finally:
        game.set_state(saved)
    return None, "added"


def build_states(game, settings: WalkthroughSettings, story_sha1: str = "",
                 progress: Progress | None = None) -> WalkthroughStates:
    """Replay ``game``'s walkthrough from reset (a JerichoGame, walkthrough seed) and build the
    sampled states (``WalkthroughSettings``). The replay stops where the game ends."""
    walk = game.walkthrough()
    if not walk:
        raise ValueError(f"{game.name}: Jericho has no walkthrough for this game (no bindings)")
    t0 = time.perf_counter()
    wanted = set(sample_steps(len(walk), settings.max_states, settings.seed))
    observation = game.reset()
    history: deque[tuple[str, str, float]] = deque(maxlen=settings.history_steps or None)
    states: list[WalkthroughState] = []
    va_s = 0.0
    for step, action in enumerate(walk):
        if step in wanted:
            t = time.perf_counter()
            valid = list(game.valid_actions())
            va_s += time.perf_counter() - t
            index, how = match_action(game, action, valid)
            if index is None:
                valid.append(action)
                index = len(valid) - 1
            kept = tuple(history) if settings.history_steps else ()
            states.append(WalkthroughState(step, kept, observation, tuple(valid), index, how, action))
            if progress is not None and len(states) % 10 == 0:
                progress(f"{game.name}: {len(states)}/{len(wanted)} states ({time.perf_counter() - t0:.0f} s)")
        result = game.step(action)
        history.append((observation, action, float(result.reward)))
        observation = result.observation
        if result.done:
            break
    return WalkthroughStates(game=game.name, story_sha1=story_sha1, settings=settings, walkthrough_length=len(walk),
                             walkthrough_score=int(game.score), max_score=int(game.max_score), states=states,
                             build_s=time.perf_counter() - t0, valid_action_s=va_s)


def cache_path(story: str | Path, settings: WalkthroughSettings, cache_dir: str | Path | None = None,
               story_sha1: str | None = None) -> Path:
    """Where ``cached_states`` keeps a game's states: ``<cache dir>/walkthrough/<stem>-<sha1>-<settings>.json``."""
    story = Path(story)
    sha = story_sha1 or file_sha1(story)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "walkthrough" / f"{story.stem}-{sha[:12]}-{settings.key()}.json"


def save_states(states: WalkthroughStates, path: str | Path) -> None:
    """Write atomically (a temporary file renamed), so a run cut short leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(states.to_dict(), f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_states(path: str | Path) -> WalkthroughStates:
    return WalkthroughStates.from_dict(json.loads(Path(path).read_text()))


def cached_states(story: str | Path, settings: WalkthroughSettings, cache_dir: str | Path | None = None,
                  progress: Progress | None = None) -> tuple[WalkthroughStates, bool]:
    """(the states of the story file's walkthrough, whether they came from the cache). A cached
    file of another format, story or settings, or one that cannot be read, is rebuilt."""
    from .jericho_game import JerichoGame

    story = Path(story)
    sha = file_sha1(story)
    path = cache_path(story, settings, cache_dir, sha)
    if path.is_file():
        try:
            got = load_states(path)
            if got.story_sha1 == sha and got.settings == settings:
                return got, True
        except (ValueError, KeyError, TypeError) as e:
            if progress is not None:
                progress(f"{path}: unreadable ({e}); building again")
    game = JerichoGame(story)
    try:
        built = build_states(game, settings, sha, progress)
    finally:
        game.close()
    save_states(built, path)
    return built, False
