"""The game-progress reward of an ORZ-style episode: play the LLM's answer in the real game.

A prompt is a point in an episode: the game, the seed its episode was reset with and the
actions played so far (the prefix). Its reward for an answer is

    step reward (score change) + value_weight * value_fn(next observation, next valid actions)

with the value term 0 when ``value_fn`` is None or the answer ends the episode. A malformed
answer (None: the response had no usable ``<answer>``) earns ``invalid_penalty``; an answer
the game's parser does not understand is an ordinary step (its reward is whatever the game
gives, 0 in practice). Characters no interpreter can take (``UNPLAYABLE``) are sent as
spaces, in answers and prefixes alike. An exception from the game also earns
``invalid_penalty`` and is counted in ``errors``: one bad game must not stop a PPO step.
(An exception from ``value_fn``, the caller's own code, propagates.)

Many answers are scored per prompt (n_samples_per_prompt), so the state after the prefix is
saved once (``get_state``) and restored (``set_state``) before each answer: the prefix is
replayed once per (game, seed, prefix) while it stays in a bounded LRU cache, and every call
starts from the same state whatever earlier calls played. Resets are deterministic for a seed
(the collectors reset with ``reset(seed=...)`` too), so a replay reaches the state the
episode was in.

Not thread-safe: one ProgressReward per worker thread or process.
"""
from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

from pzstream.env import Game, open_game
from pzstream.env.sources import GameNotFound, peer_game_spec

from .rewards import DEFAULT_INVALID_PENALTY

log = logging.getLogger(__name__)

#: The seed a prompt without one is replayed with: the one ``open_game`` gives a game.
DEFAULT_SEED = 0

#: Characters no game receives: control characters (a NUL hangs or crashes the interpreter)
#: and lone surrogates (not encodable as UTF-8). Each becomes a space.
UNPLAYABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def playable(action: str) -> str:
    """``action`` as a game can take it: each ``UNPLAYABLE`` character replaced by a space."""
    return UNPLAYABLE.sub(" ", action)


#: value_fn(observation, valid_actions) -> an estimate of the return still to come.
ValueFn = Callable[[str, list[str]], float]


class ProgressReward:
    """Scores answers by playing them in the real game from the prompt's state.

    games_dir / cache_dir: where ``open_game`` looks for story files / the default game.
    value_fn, value_weight: the optional bootstrap term (see the module docstring).
    invalid_penalty: the reward of a malformed answer or a game error.
    max_games: games kept open (LRU; an evicted game is closed).
    max_states: saved prefix states kept (LRU).
    Counters: ``calls`` (answers scored), ``replays`` (prefixes played from reset), ``refused``
    (game names that are not a known game: never opened, scored ``invalid_penalty``),
    ``errors`` (game exceptions caught).
    """

    def __init__(self, games_dir: str | Path | None = None, value_fn: ValueFn | None = None,
                 value_weight: float = 0.0, invalid_penalty: float = DEFAULT_INVALID_PENALTY,
                 max_games: int = 4, max_states: int = 1024, cache_dir: str | Path | None = None) -> None:
        if max_games < 1 or max_states < 1:
            raise ValueError(f"max_games ({max_games}) and max_states ({max_states}) must be >= 1")
        self.games_dir = games_dir
        self.cache_dir = cache_dir
        self.value_fn = value_fn
        self.value_weight = value_weight
        self.invalid_penalty = invalid_penalty
        self.max_games = max_games
        self.max_states = max_states
        self.calls = 0
        self.replays = 0
        self.errors = 0
        self.refused = 0   # answers whose game name is not a game this side knows (never opened)
        self._games: OrderedDict[str, Game] = OrderedDict()
        self._states: OrderedDict[tuple[str, int, tuple[str, ...]], object] = OrderedDict()

    def __call__(self, game: str, prefix: Sequence[str], seed: int | None, answer: str | None) -> float:
        """The reward of playing ``answer`` after ``prefix`` in ``game`` reset with ``seed``."""
        self.calls += 1
        if answer is None:
            return self.invalid_penalty
        want_value = self.value_fn is not None and self.value_weight != 0.0
        try:
            peer_game_spec(game, self.games_dir)  # a name from the network opens only a known game
        except GameNotFound as e:
            self.refused += 1
            if self.refused == 1:
                log.warning("progress reward: %s; such answers score %s", e, self.invalid_penalty)
            return self.invalid_penalty
        try:
            g = self._game(game)
            g.set_state(self._prefix_state(g, game, DEFAULT_SEED if seed is None else seed, prefix))
            res = g.step(playable(answer))
            actions = g.valid_actions() if want_value and not res.done else None
        except Exception:
            self.errors += 1
            log.warning("progress reward: game %r failed on %r after %d prefix actions; scoring %s",
                        game, answer, len(prefix), self.invalid_penalty, exc_info=self.errors == 1)
            self._drop_game(game)  # it may be in any state now; the next call reopens it
            return self.invalid_penalty
        if actions is None:
            return res.reward
        return res.reward + self.value_weight * float(self.value_fn(res.observation, actions))

    def _game(self, spec: str) -> Game:
        g = self._games.get(spec)
        if g is not None:
            self._games.move_to_end(spec)
            return g
        g = open_game(spec, games_dir=self.games_dir, cache_dir=self.cache_dir)
        self._games[spec] = g
        while len(self._games) > self.max_games:
            self._drop_game(next(iter(self._games)))
        return g

    def _prefix_state(self, g: Game, spec: str, seed: int, prefix: Sequence[str]) -> object:
        key = (spec, seed, tuple(prefix))
        state = self._states.get(key)
        if state is not None:
            self._states.move_to_end(key)
            return state
        g.reset(seed=seed)
        for action in prefix:
            g.step(playable(action))
        self.replays += 1
        state = g.get_state()
        self._states[key] = state
        while len(self._states) > self.max_states:
            self._states.popitem(last=False)
        return state

    def _forget_states(self, spec: str) -> None:
        # a state restores only into the game object that saved it
        for key in [k for k in self._states if k[0] == spec]:
            del self._states[key]

    def _drop_game(self, spec: str) -> None:
        self._forget_states(spec)
        g = self._games.pop(spec, None)
        if g is not None:
            try:
                g.close()
            except Exception:
                log.debug("closing game %r failed", spec, exc_info=True)

    def close(self) -> None:
        """Close every open game; the object stays usable (games reopen on demand)."""
        while self._games:
            self._drop_game(next(iter(self._games)))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
