"""Story files from the Jericho suite, played through ``jericho.FrotzEnv``."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import jericho
from jericho.jericho import INPUT_BUFFER_SIZE

from .cache import ValidActionCache, state_digest
from .games import FALLBACK_ACTIONS, StepResult, decode_text
from .spacy_offline import ensure_spacy


@dataclass(frozen=True)
class JerichoState:
    machine: tuple        # FrotzEnv.get_state(): ram, stack, registers, rng, narrative
    observation: str
    started: bool


class JerichoGame:
    """A z-machine story file.

    Seeds: 0 (the default) means Jericho's walkthrough seed for the game, or 1 for games
    without bindings; other values go to the interpreter's RNG (negative = time-based).
    Games Jericho has no bindings for (``supported`` False) still play, but score/moves are
    unreliable and ``valid_actions()`` returns FALLBACK_ACTIONS (with a warning, once).
    Actions longer than the interpreter's 198-byte input buffer are cut by Jericho's rule
    (with its TruncatedInputActionWarning); newlines in actions become spaces.
    """

    def __init__(self, path: str | Path, *, name: str | None = None,
                 cache: ValidActionCache | None = None, seed: int = 0, parallel: bool = False) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jericho.UnsupportedGameWarning)
            self._env = jericho.FrotzEnv(str(self.path))
        self.supported = bool(self._env.is_fully_supported and self._env.act_gen is not None)
        self.max_score = int(self._env.get_max_score()) if self.supported else 0
        self.cache = cache if cache is not None else ValidActionCache()
        self.parallel = parallel  # jericho's multiprocessing filter; off: one process per collector
        self.last_lookup = ""     # "exact" / "world" / "miss" / "fallback" for the last valid_actions()
        self._seed = self._jericho_seed(seed)
        self._obs = ""
        self._started = False
        self._warned = False

    def _jericho_seed(self, seed: int) -> int:
        return seed if seed else int((self._env.bindings or {}).get("seed", 1))

    def reset(self, seed: int | None = None) -> str:
        if seed is not None:
            self._seed = self._jericho_seed(seed)
        env = self._env
        env.seed(self._seed)
        env.close()  # what FrotzEnv.reset does, but keeping the raw bytes for safe decoding
        rom = env._cache[env.story_file.decode()][0]
        self._obs = decode_text(env.frotz_lib.setup(env.story_file, env._seed, rom, len(rom)))
        self._started = True
        return self._obs

    def step(self, action: str) -> StepResult:
        if not self._started:
            raise RuntimeError(f"{self.name}: call reset() before step()")
        data = action.replace("\r", " ").replace("\n", " ").encode("utf-8")
        if len(data) > INPUT_BUFFER_SIZE:
            warnings.warn(f"action longer than {INPUT_BUFFER_SIZE} bytes was cut: {action!r}",
                          jericho.TruncatedInputActionWarning)
            data = data[:INPUT_BUFFER_SIZE]
        lib = self._env.frotz_lib
        old = lib.get_score()
        self._obs = decode_text(lib.step(data + b"\n"))
        score = lib.get_score()
        done = self._env.game_over() or self._env.victory()
        return StepResult(self._obs, float(score - old), int(score), bool(done), int(lib.get_moves()))

    def _compute_valid_actions(self) -> list[str]:
        ensure_spacy()
        return self._env.get_valid_actions(use_parallel=self.parallel)

    def valid_actions(self) -> list[str]:
        if not self._started:
            raise RuntimeError(f"{self.name}: call reset() before valid_actions()")
        if not self.supported:
            if not self._warned:
                warnings.warn(f"{self.name}: Jericho has no bindings for this game; valid_actions() "
                              f"returns the fallback {list(FALLBACK_ACTIONS)}", RuntimeWarning)
                self._warned = True
            self.cache.record_uncached(self.name)
            self.last_lookup = "fallback"
            return list(FALLBACK_ACTIONS)
        key = state_digest(self._env.get_state())
        acts, self.last_lookup = self.cache.lookup(self.name, key, self._env.get_world_state_hash,
                                                   self._compute_valid_actions)
        return acts or list(FALLBACK_ACTIONS)

    def get_state(self) -> JerichoState:
        return JerichoState(self._env.get_state(), self._obs, self._started)

    def set_state(self, state: object) -> None:
        if not isinstance(state, JerichoState):
            raise TypeError(f"expected a JerichoState from {self.name}.get_state(), got {type(state).__name__}")
        self._env.set_state(state.machine)
        self._obs, self._started = state.observation, state.started

    @property
    def score(self) -> int:
        return int(self._env.get_score())

    @property
    def observation(self) -> str:
        return self._obs

    def walkthrough(self) -> list[str]:
        """Jericho's walkthrough for this game (replay from reset with the default seed)."""
        return list(self._env.get_walkthrough()) if self.supported else []

    def cache_stats(self) -> dict[str, float]:
        return self.cache.stats(self.name)

    def close(self) -> None:
        pool = getattr(self._env, "pool", None)
        if pool is not None:
            pool.terminate()
            del self._env.pool
        if self._started:
            self._env.close()
            self._started = False
