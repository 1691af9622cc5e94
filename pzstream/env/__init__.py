"""Games for pzstream collectors: open a game, play it, cache its valid actions.

    from pzstream.env import open_game
    game = open_game("zork1")          # or "default" (embedded TextWorld game) or a path
    obs = game.reset()
    res = game.step(game.valid_actions()[0])
"""
from .cache import ValidActionCache, state_digest
from .games import COMMON_COMMANDS, FALLBACK_ACTIONS, Game, StepResult, decode_text
from .open_game import open_game
from .sources import (DEFAULT_GAME_SEED, GameNotFound, available_games, default_cache_dir,
                      default_games_dir, ensure_default_game, resolve_story_file)
from .spacy_offline import ensure_spacy

__all__ = [
    "COMMON_COMMANDS", "FALLBACK_ACTIONS", "DEFAULT_GAME_SEED", "Game", "GameNotFound", "StepResult", "ValidActionCache",
    "available_games", "decode_text", "default_cache_dir", "default_games_dir", "ensure_default_game",
    "ensure_spacy", "open_game", "resolve_story_file", "state_digest",
]


def __getattr__(name):  # the concrete classes import jericho/textworld; load them lazily
    if name == "JerichoGame":
        from .jericho_game import JerichoGame
        return JerichoGame
    if name == "TextWorldGame":
        from .tw_game import TextWorldGame
        return TextWorldGame
    raise AttributeError(name)
