"""The Game interface collectors use: what a step returns and how game text is decoded."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


#: Returned by ``valid_actions()`` when the game offers none (game over, or a story file
#: Jericho has no bindings for): always-parseable, state-preserving-ish commands.
FALLBACK_ACTIONS = ("look", "inventory", "wait")

#: What a move past the valid-action budget plays with when its room has no known candidates:
#: movement (the object-free templates Jericho's action generator has for every game) and the
#: basic commands, each kept only where all its words are in the game's dictionary.
COMMON_COMMANDS = ("north", "south", "east", "west", "northeast", "northwest", "southeast", "southwest",
                   "up", "down", "enter", "exit", "look", "inventory", "wait")


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
