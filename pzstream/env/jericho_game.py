"""Story files from the Jericho suite, played through ``jericho.FrotzEnv``."""
from __future__ import annotations

import time
import warnings
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

import jericho
from jericho.jericho import INPUT_BUFFER_SIZE

from .cache import ValidActionCache, state_digest
from .games import COMMON_COMMANDS, FALLBACK_ACTIONS, StepResult, decode_text
from .spacy_offline import ensure_spacy
from .va_worker import OnDone, ValidActionWorker

#: Without a budget, a move whose valid actions took longer than this still counts as
#: ``over_budget``, so runs with and without a budget report the same measure.
REFERENCE_BUDGET_S = 0.5


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

    ``valid_actions_budget_s``: None (the default) computes a cache miss in this process and
    waits for it, which keeps evaluation deterministic. A number starts a helper process
    (``va_worker``) that computes misses; a move waits for it at most that long, then plays with
    the fallback: the last candidates computed in the player's room, else COMMON_COMMANDS that
    the game's dictionary knows. The late answer still fills the cache for the next visit.
    ``valid_action_helpers`` such processes (each ~345 MB, spaCy) compute side by side.
    """

    def __init__(self, path: str | Path, *, name: str | None = None,
                 cache: ValidActionCache | None = None, seed: int = 0, parallel: bool = False,
                 valid_actions_budget_s: float | None = None, valid_action_helpers: int = 1) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jericho.UnsupportedGameWarning)
            self._env = jericho.FrotzEnv(str(self.path))
        self.supported = bool(self._env.is_fully_supported and self._env.act_gen is not None)
        self.max_score = int(self._env.get_max_score()) if self.supported else 0
        self.cache = cache if cache is not None else ValidActionCache()
        self.parallel = parallel  # jericho's multiprocessing filter; off: one process per collector
        # the last valid_actions(): "exact" / "world" / "miss" / "fallback" (no bindings) /
        # "fallback:room" / "fallback:common" (past the budget)
        self.last_lookup = ""
        self._seed = self._jericho_seed(seed)
        self._obs = ""
        self._started = False
        self._warned = False
        self.budget_s = valid_actions_budget_s
        self._room_actions: dict[int, tuple[str, ...]] = {}  # room object number -> last candidates
        self._common: list[str] | None = None
        self._worker = (ValidActionWorker(self.path, helpers=valid_action_helpers)
                        if valid_actions_budget_s is not None and self.supported else None)

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
        if self._worker is not None:
            self.common_commands()  # reads the dictionary now, not inside a move's budget
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
        machine = self._env.get_state()
        key = state_digest(machine)
        room = self.room()
        if self._worker is None:
            t0 = time.perf_counter()
            acts, self.last_lookup = self.cache.lookup(self.name, key, self._env.get_world_state_hash,
                                                       self._compute_valid_actions)
            if self.last_lookup == "miss":
                self._room_actions[room] = tuple(acts)
                if time.perf_counter() - t0 > REFERENCE_BUDGET_S:
                    self.cache.count(self.name, over_budget=1)
            return acts or list(FALLBACK_ACTIONS)
        acts, self.last_lookup, world = self.cache.find(self.name, key, self._env.get_world_state_hash)
        if acts is None:
            acts = self._wait_or_fall_back(key, world, machine, room)
        return acts or list(FALLBACK_ACTIONS)

    def _wait_or_fall_back(self, key: bytes, world: str | None, machine: tuple, room: int) -> list[str]:
        """A miss with a budget: the helper's answer if it comes in time, else the fallback."""
        t0 = time.perf_counter()
        fut: Future = self._worker.submit(key, machine, self._filler(key, world, room))
        try:
            acts = fut.result(timeout=self.budget_s)
            self.cache.count(self.name, computes=1, valid_action_s=time.perf_counter() - t0)
            return list(acts)
        except (FutureTimeout, CancelledError, RuntimeError):
            fut.add_done_callback(self._count_late_fill)
        known = self._room_actions.get(room)
        self.last_lookup = "fallback:room" if known else "fallback:common"
        self.cache.count(self.name, over_budget=1, fallbacks=1, fallback_room=1 if known else 0,
                         valid_action_s=time.perf_counter() - t0)
        return list(known) if known else self.common_commands()

    def _filler(self, key: bytes, world: str | None, room: int) -> OnDone:
        def on_done(acts: list[str], seconds: float) -> None:  # the worker's thread, whenever it comes
            self.cache.store(self.name, key, world, acts)
            self.cache.count(self.name, worker_s=seconds)
            self._room_actions[room] = tuple(acts)
        return on_done

    def prefetch(self, actions: list[str]) -> int:
        """Queue the states after ``actions`` from here (behind every move's own state) for the
        helper process; returns how many were not known yet. The game's state is unchanged.
        Only with a budget. Costs one step, one state digest and one world hash per action."""
        if self._worker is None or not self._started:
            return 0
        saved, obs, queued = self._env.get_state(), self._obs, 0
        try:
            for a in actions:
                self._env.set_state(saved)
                if self.step(a).done:
                    continue
                machine = self._env.get_state()
                key, world = state_digest(machine), self._env.get_world_state_hash()
                if not self.cache.contains(self.name, key, world):
                    self._worker.submit(key, machine, self._filler(key, world, self.room()), prefetch=True)
                    queued += 1
        finally:
            self._env.set_state(saved)
            self._obs = obs
        self.cache.count(self.name, prefetched=queued)
        return queued

    def _count_late_fill(self, fut: Future) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.cache.count(self.name, late_fills=1)

    def room(self) -> int:
        """The player's room (object number; -1 when the game hides it): the fallback's key."""
        try:
            return int(self._env.get_player_location().num)
        except Exception:  # noqa: BLE001 - a game whose player object Jericho can't find
            return -1

    def common_commands(self) -> list[str]:
        """COMMON_COMMANDS whose every word is in the game's dictionary (computed once)."""
        if self._common is None:
            words = {str(w) for w in self._env.get_dictionary()}
            width = max(map(len, words), default=0)  # z-machine dictionaries keep 6 or 9 letters
            self._common = ([c for c in COMMON_COMMANDS if all(w[:width] in words for w in c.split())]
                            or list(FALLBACK_ACTIONS))
        return list(self._common)

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        """With a budget: block until the helper process can compute (True; at once without one)."""
        return self._worker.wait_ready(timeout_s) if self._worker is not None else True

    def worker_stats(self) -> dict[str, float]:
        """The helper process's counters (jobs, done, dropped, failed, restarts, compute_s); {} without one."""
        return dict(vars(self._worker.stats)) if self._worker is not None else {}

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

    def world_state_hash(self) -> str:
        """Jericho's hash of the world's objects (1-3 ms): two moves that leave the same world
        give the same hash whatever their spelling ("n" and "north")."""
        return str(self._env.get_world_state_hash())

    def cache_stats(self) -> dict[str, float]:
        return self.cache.stats(self.name)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        pool = getattr(self._env, "pool", None)
        if pool is not None:
            pool.terminate()
            del self._env.pool
        if self._started:
            self._env.close()
            self._started = False
