"""Two-level LRU cache of valid actions, the dominant cost of playing a Jericho game.

Level 1 (exact): blake2b digest of the full z-machine state (RAM, stack, registers, RNG,
narrative) -- microseconds to compute; a hit means the very same machine state.
Level 2 (world): Jericho's ``get_world_state_hash()`` (1-3 ms), which ignores turn counters
and similar noise; consulted only on an exact miss, before computing. A world hit is also
stored under the exact key so the next visit is an exact hit.

Both levels share one LRU of ``capacity`` entries; keys include the game name so one
cache can serve several games. ``capacity=0`` disables caching (every call computes) while
still counting time, which is how the benchmark measures the uncached cost.

A game with a valid-action time budget splits a lookup in two: ``find`` (the two levels, no
computing) and, when the helper process's answer arrives, ``store``. It counts the outcome
with ``count``: ``over_budget`` (moves whose answer was not there within the budget),
``fallbacks`` (moves played with fallback candidates instead; ``fallback_room`` of them with
the last candidates known for the player's room), ``late_fills`` (answers that came after
their move and wait in the cache for the next visit) and ``worker_s`` (computing time in the
helper process, off the critical path), ``prefetched`` (states queued ahead of the moves that
may reach them). ``valid_action_s`` is always time on the critical path.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from typing import Callable, Sequence

import numpy as np


def state_digest(state: Sequence) -> bytes:
    """Fast digest of a Jericho ``FrotzEnv.get_state()`` tuple.

    Layout: (ram, stack, pc, sp, fp, frame_count, opcode, rng, narrative). Frotz's stack grows
    down from the top of a fixed buffer and ``sp`` is a word index into it, so only
    ``stack[2*sp:]`` is live; the dead part below holds leftovers of earlier calls (e.g. of
    valid-action probing) and would make identical game states hash differently.
    """
    h = hashlib.blake2b(digest_size=16)
    parts = list(state)
    if len(parts) >= 4 and isinstance(parts[1], np.ndarray) and isinstance(parts[3], int):
        live = 2 * parts[3]
        if 0 <= live <= parts[1].nbytes:
            parts[1] = parts[1].view(np.uint8)[live:]
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(part.tobytes())
        elif isinstance(part, (bytes, bytearray)):
            h.update(part)
        else:
            h.update(repr(part).encode())
        h.update(b"\x00")
    return h.digest()


_COUNTERS = ("hits", "misses", "exact_hits", "world_hits", "valid_action_s", "world_hash_s", "computes",
             "over_budget", "fallbacks", "fallback_room", "late_fills", "worker_s", "prefetched")


class ValidActionCache:
    def __init__(self, capacity: int = 100_000, use_world_hash: bool = True) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self.use_world_hash = use_world_hash
        self._lru: OrderedDict[tuple, tuple[str, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self._stats: dict[str, dict[str, float]] = {}
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._lru)

    def _get(self, key: tuple) -> tuple[str, ...] | None:
        with self._lock:
            acts = self._lru.get(key)
            if acts is not None:
                self._lru.move_to_end(key)
            return acts

    def _put(self, key: tuple, acts: tuple[str, ...]) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._lru[key] = acts
            self._lru.move_to_end(key)
            while len(self._lru) > self.capacity:
                self._lru.popitem(last=False)
                self.evictions += 1

    def _count(self, game: str, **inc: float) -> None:
        with self._lock:
            s = self._stats.setdefault(game, dict.fromkeys(_COUNTERS, 0.0))
            for k, v in inc.items():
                s[k] += v

    def find(self, game: str, exact_key: bytes,
             world_key: Callable[[], str] | None) -> tuple[list[str] | None, str, str | None]:
        """(actions, "exact" | "world", world hash) on a hit, (None, "miss", world hash) on a miss.

        ``world_key`` is called (lazily) only on an exact miss; a miss is counted here.
        """
        ek = (game, "x", exact_key)
        acts = self._get(ek)
        if acts is not None:
            self._count(game, hits=1, exact_hits=1)
            return list(acts), "exact", None
        wh = None
        if world_key is not None and self.use_world_hash and self.capacity:
            t0 = time.perf_counter()
            wh = world_key()
            self._count(game, world_hash_s=time.perf_counter() - t0)
            acts = self._get((game, "w", wh))
            if acts is not None:
                self._put(ek, acts)
                self._count(game, hits=1, world_hits=1)
                return list(acts), "world", wh
        self._count(game, misses=1)
        return None, "miss", wh

    def contains(self, game: str, exact_key: bytes, world_hash: str | None) -> bool:
        """Whether a lookup would hit (nothing counted, LRU order kept): for prefetching."""
        with self._lock:
            return (game, "x", exact_key) in self._lru or (world_hash is not None and (game, "w", world_hash) in self._lru)

    def store(self, game: str, exact_key: bytes, world_hash: str | None, acts: Sequence[str]) -> None:
        """Remember a computed answer under the exact key (and the world hash when known)."""
        acts = tuple(acts)
        self._put((game, "x", exact_key), acts)
        if world_hash is not None:
            self._put((game, "w", world_hash), acts)

    def count(self, game: str, **inc: float) -> None:
        """Add to a game's counters (names from _COUNTERS)."""
        self._count(game, **inc)

    def lookup(self, game: str, exact_key: bytes, world_key: Callable[[], str] | None,
               compute: Callable[[], list[str]]) -> tuple[list[str], str]:
        """Valid actions for a state, and which level answered: "exact", "world" or "miss".

        ``world_key`` is called (lazily) only on an exact miss; ``compute`` only on a full miss.
        The lock is not held while computing, so two threads may compute the same state once each.
        """
        acts, level, wh = self.find(game, exact_key, world_key)
        if acts is not None:
            return acts, level
        t0 = time.perf_counter()
        computed = tuple(compute())
        self._count(game, computes=1, valid_action_s=time.perf_counter() - t0)
        self.store(game, exact_key, wh, computed)
        return list(computed), "miss"

    def record_uncached(self, game: str, seconds: float = 0.0) -> None:
        """Count a valid-action answer that was computed outside the cache (e.g. TextWorld)."""
        self._count(game, computes=1, valid_action_s=seconds)

    def stats(self, game: str | None = None) -> dict[str, float]:
        """Counters for one game (or summed over all); hit_rate = hits / (hits + misses);
        over_budget_share and fallback_share are per lookup (one lookup per move)."""
        with self._lock:
            rows = [self._stats.get(game, {})] if game is not None else list(self._stats.values())
            out = {k: float(sum(r.get(k, 0.0) for r in rows)) for k in _COUNTERS}
            out["entries"] = float(len(self._lru))
            out["capacity"] = float(self.capacity)
            out["evictions"] = float(self.evictions)
        lookups = out["hits"] + out["misses"]
        out["hit_rate"] = out["hits"] / lookups if lookups else 0.0
        out["over_budget_share"] = out["over_budget"] / lookups if lookups else 0.0
        out["fallback_share"] = out["fallbacks"] / lookups if lookups else 0.0
        return out

    def clear(self) -> None:
        with self._lock:
            self._lru.clear()
            self._stats.clear()
            self.evictions = 0
