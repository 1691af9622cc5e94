"""Open a game by name or path: the one place that picks the concrete game class."""
from __future__ import annotations

from pathlib import Path

from .cache import ValidActionCache
from .games import Game
from .sources import DEFAULT_SPECS, ensure_default_game, resolve_story_file


def open_game(spec: str, *, games_dir: str | Path | None = None, cache_dir: str | Path | None = None,
              cache: ValidActionCache | None = None, seed: int = 0,
              valid_actions_budget_s: float | None = None, valid_action_helpers: int = 1) -> Game:
    """Open a game by spec: "default"/"tw-default", a suite name ("zork1"), or a story-file path.

    The game is not reset yet; call ``reset()`` first. ``cache`` may be shared between games
    of one process; by default each game gets its own ValidActionCache.
    ``valid_actions_budget_s``, ``valid_action_helpers``: see JerichoGame (None: wait for every answer; TextWorld games
    answer at once and ignore it).
    """
    if spec in DEFAULT_SPECS:
        from .tw_game import TextWorldGame
        return TextWorldGame(ensure_default_game(cache_dir), name="tw-default", cache=cache, seed=seed)
    path = resolve_story_file(spec, games_dir)
    if path.suffix == ".z8" and path.with_suffix(".json").is_file():
        from .tw_game import TextWorldGame  # a TextWorld-generated game: Jericho can't list its actions
        return TextWorldGame(path, cache=cache, seed=seed)
    from .jericho_game import JerichoGame
    return JerichoGame(path, cache=cache, seed=seed, valid_actions_budget_s=valid_actions_budget_s,
                       valid_action_helpers=valid_action_helpers)
