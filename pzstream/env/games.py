"""The Game interface collectors use, and ``open_game`` to get one from a spec."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from .cache import ValidActionCache
from .sources import DEFAULT_SPECS, ensure_default_game, resolve_story_file

#: Returned by ``valid_actions()`` when the game offers none (game over, or a story file
#: Jericho has no bindings for): always-parseable, state-preserving-ish commands.
FALLBACK_ACTIONS = ("look", "inventory", "wait")


@dataclass(frozen=True)
class StepResult:
    observation: str
    reward: float   # score change caused by this step
    score: int      # cumulative game score after the step
    done: bool      # game won or lost
    moves: int      # the game's move counter after the step


@runtime_checkable
class Game(Protocol):
    name: str
    max_score: int

    def reset(self, seed: int | None = None) -> str: ...
    def valid_actions(self) -> list[str]: ...
    def step(self, action: str) -> StepResult: ...
    def get_state(self) -> object: ...
    def set_state(self, state: object) -> None: ...
    @property
    def score(self) -> int: ...
    def cache_stats(self) -> dict[str, float]: ...
    def close(self) -> None: ...


def decode_text(raw: bytes | str) -> str:
    """Decode interpreter output without ever raising.

    UTF-8 when the bytes are valid UTF-8 (plain ASCII is), else cp1252 -- what Frotz emits
    for Latin characters -- with undefined bytes replaced by U+FFFD. Nothing is truncated.
    """
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def open_game(spec: str, *, games_dir: str | Path | None = None, cache_dir: str | Path | None = None,
              cache: ValidActionCache | None = None, seed: int = 0) -> Game:
    """Open a game by spec: "default"/"tw-default", a suite name ("zork1"), or a story-file path.

    The game is not reset yet; call ``reset()`` first. ``cache`` may be shared between games
    of one process; by default each game gets its own ValidActionCache.
    """
    if spec in DEFAULT_SPECS:
        from .tw_game import TextWorldGame
        return TextWorldGame(ensure_default_game(cache_dir), name="tw-default", cache=cache, seed=seed)
    path = resolve_story_file(spec, games_dir)
    if path.suffix == ".z8" and path.with_suffix(".json").is_file():
        from .tw_game import TextWorldGame  # a TextWorld-generated game: Jericho can't list its actions
        return TextWorldGame(path, cache=cache, seed=seed)
    from .jericho_game import JerichoGame
    return JerichoGame(path, cache=cache, seed=seed)
