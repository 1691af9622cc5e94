"""TextWorld-generated games (the embedded default game), played through TextWorld's API.

Valid actions: TextWorld computes ``admissible_commands`` from its logical game state on
every step anyway (cheap, exact), so they bypass the cache lookup; each call is counted
as an uncached computation (``computes``) with zero extra seconds in ``cache_stats()``.

Save/restore: a TextWorld env is a wrapper chain TWInform7 -> StateTracking ->
Inform7Data -> GameData -> JerichoEnv(FrotzEnv). Future steps depend on (a) the
z-machine state and (b) StateTracking's logical progression (GameProgression, which
drives admissible commands and quest tracking) plus its move/last-action/policy fields,
and (c) the shared per-step GameState dict (Inform7Data carries score/moves over from it).
``get_state`` snapshots all three (the progression through GameProgression.copy());
``set_state`` writes them back, copying the progression again so a snapshot can be
restored any number of times.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import jericho
import textworld
from textworld.core import GameState

from .cache import ValidActionCache
from .games import FALLBACK_ACTIONS, StepResult, decode_text

INFOS = dict(admissible_commands=True, score=True, max_score=True, won=True, lost=True, moves=True)


@dataclass(frozen=True)
class TextWorldState:
    machine: tuple
    progression: object
    last_action: object
    tracked_moves: int
    previous_policy: tuple | None
    current_policy: tuple | None
    game_state: dict
    observation: str
    actions: tuple
    score: int
    started: bool


def _layers(env) -> dict[str, object]:
    out, e = {}, env
    while e is not None:
        out[type(e).__name__] = e
        e = vars(e).get("_wrapped_env")
    return out


class TextWorldGame:
    def __init__(self, path: str | Path, *, name: str | None = None, cache: ValidActionCache | None = None,
                 seed: int = 0, policy_commands: bool = False) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem
        self.cache = cache if cache is not None else ValidActionCache()
        infos = textworld.EnvInfos(**INFOS, policy_commands=policy_commands)
        self._env = textworld.start(str(self.path), request_infos=infos)
        self._layers = _layers(self._env)
        if "StateTracking" not in self._layers:
            raise ValueError(f"{self.path} is not a TextWorld-generated game (no {self.path.with_suffix('.json').name})")
        self._seed = seed
        self._gs: GameState | None = None
        self._obs, self._actions, self._score = "", (), 0
        self.max_score = int(self._layers["GameData"]._game.max_score)
        self.last_lookup = ""

    def _take(self, gs: GameState) -> None:
        self._gs = gs
        self._obs = decode_text(gs["feedback"])
        self._actions = tuple(gs["admissible_commands"] or ())
        self._score = int(gs["score"] or 0)
        self.max_score = int(gs["max_score"] or 0)

    def reset(self, seed: int | None = None) -> str:
        if seed is not None:
            self._seed = seed
        self._env.seed(self._seed if self._seed else 1)  # JerichoEnv's default (-1) is time-based
        with warnings.catch_warnings():  # TextWorld asks Jericho for actions it can't give
            warnings.simplefilter("ignore", jericho.UnsupportedGameWarning)
            self._take(self._env.reset())
        return self._obs

    def step(self, action: str) -> StepResult:
        if self._gs is None:
            raise RuntimeError(f"{self.name}: call reset() before step()")
        before = self._score
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jericho.UnsupportedGameWarning)
            gs, score, done = self._env.step(action.replace("\r", " ").replace("\n", " "))
        self._take(gs)
        return StepResult(self._obs, float(self._score - before), self._score, bool(done), int(gs["moves"] or 0))

    def valid_actions(self) -> list[str]:
        if self._gs is None:
            raise RuntimeError(f"{self.name}: call reset() before valid_actions()")
        self.cache.record_uncached(self.name)
        self.last_lookup = "uncached"
        return list(self._actions) or list(FALLBACK_ACTIONS)

    def policy_commands(self) -> list[str]:
        """Commands that win from the current state (needs policy_commands=True)."""
        return list(self._gs.get("policy_commands") or []) if self._gs is not None else []

    def walkthrough(self) -> list[str]:
        """The generator's walkthrough from reset (win in few steps)."""
        return list(self._gs.get("extra.walkthrough") or []) if self._gs is not None else []

    def get_state(self) -> TextWorldState:
        st = self._layers["StateTracking"]
        gp = st._game_progression
        pol = lambda p: tuple(p) if p is not None else None  # noqa: E731
        return TextWorldState(
            machine=self._env.unwrapped._jericho.get_state(),
            progression=gp.copy() if gp is not None else None,
            last_action=st._last_action, tracked_moves=st._moves,
            previous_policy=pol(st._previous_winning_policy), current_policy=pol(st._current_winning_policy),
            game_state=dict(self._gs) if self._gs is not None else {},
            observation=self._obs, actions=self._actions, score=self._score, started=self._gs is not None)

    def set_state(self, state: object) -> None:
        if not isinstance(state, TextWorldState):
            raise TypeError(f"expected a TextWorldState from {self.name}.get_state(), got {type(state).__name__}")
        self._env.unwrapped._jericho.set_state(state.machine)
        st = self._layers["StateTracking"]
        gp = state.progression.copy() if state.progression is not None else None
        st._game_progression = gp
        st._last_action, st._moves = state.last_action, state.tracked_moves
        st._previous_winning_policy = list(state.previous_policy) if state.previous_policy is not None else None
        st._current_winning_policy = list(state.current_policy) if state.current_policy is not None else None
        gs = GameState(state.game_state)
        if "_game_progression" in gs:
            gs["_game_progression"] = gp
        for layer in self._layers.values():
            if "state" in vars(layer):
                layer.state = gs
        self._layers["Inform7Data"]._prev_state = None
        self._gs = gs if state.started else None
        self._obs, self._actions, self._score = state.observation, state.actions, state.score

    @property
    def score(self) -> int:
        return self._score

    @property
    def observation(self) -> str:
        return self._obs

    def cache_stats(self) -> dict[str, float]:
        return self.cache.stats(self.name)

    def close(self) -> None:
        self._env.close()
        self._gs = None
