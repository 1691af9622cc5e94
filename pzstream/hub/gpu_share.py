"""Part: the search server keeps its pace on a GPU it shares with the trainer (issue 22, item 4).

On one card the trainer's updates and the search server's batches take turns (two processes' kernels
are time-sliced, never run side by side), and a search step waits on the device several times: a busy
trainer makes every simulation step slower (measured on an H100: 13.6 ms a step at 6 roots beside the
trainer, 4.7 ms at 128 roots alone), so an asynchronous run can collect slower than PriorZero's
alternating one. With ``schedule.gpu_share=auto`` this part paces the trainer by what the search
servers measure themselves, every ``schedule.pace_every_s``:

* **alone**: while the trainer makes no update (it waits for ``trainer.min_replay_steps`` at the start,
  or is paused), the servers' milliseconds a batch are their pace alone, kept per batch size (powers of
  two: a batch of 6 and one of 128 do not cost the same);
* **slowed**: with the trainer at work, a batch that takes more than ``schedule.search_slowdown`` times
  its pace alone halves the trainer's updates a second (never below ``schedule.min_updates_per_s``:
  the world model keeps learning);
* **room**: a batch within 0.8 x that bound lets the trainer go 1.25x faster, until the limit no longer
  binds (the trainer runs below it), when it is lifted.

``next_pace`` is the rule, a pure function of the state, one interval's search load and the trainer's
updates in it; ``GpuSharePart`` reads them from the hub's status every interval and sends the trainer a
``Pace`` when its limit changes. PPO episodes are not paced by it (``ppo.min_interval_s`` stays by hand).
Measured on a CPU host only (where the trainer and the search server share the cores): not yet on a GPU.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import anyio

from pzstream.hub.search_load import SearchTotals, search_load, search_totals
from pzstream.stream.report_record import SearchLoad

log = logging.getLogger("pzstream.learner")

BACK_OFF = 0.5    # the trainer's limit is multiplied by this when the search is slowed
SPEED_UP = 1.25   # and by this when the search has room
ROOM = 0.8        # "room": a batch within this share of the slowdown bound


@dataclass(frozen=True)
class PaceState:
    """What the rule knows: the servers' best ms a batch alone per batch-size bucket, the trainer's limit
    now (None: none), and why it last changed."""

    alone_ms: dict[int, float] = field(default_factory=dict)
    limit: float | None = None
    why: str = "no search load measured yet"


def batch_bucket(mean_batch: float) -> int:
    """The power of two nearest a mean batch (1, 2, 4, ...), as its exponent."""
    return max(0, round(math.log2(max(1.0, mean_batch))))


def next_pace(state: PaceState, load: SearchLoad | None, trainer_updates: float, interval_s: float,
              slowdown: float, min_rate: float) -> PaceState:
    """The state after one interval: its search load (None: no server reported) and the trainer's updates."""
    if load is None or load.ms_per_batch is None or load.mean_batch is None or interval_s <= 0:
        return state
    b, ms = batch_bucket(load.mean_batch), load.ms_per_batch
    if trainer_updates <= 0:
        best = min(ms, state.alone_ms.get(b, math.inf))
        return replace(state, alone_ms={**state.alone_ms, b: best}, why=f"alone: {best:.1f} ms a batch of ~{2 ** b}")
    alone = state.alone_ms.get(b)
    if alone is None or alone <= 0:
        return replace(state, why=f"no pace alone measured at batches of ~{2 ** b}")
    ratio, rate = ms / alone, trainer_updates / interval_s
    if ratio > slowdown:
        limit = max(min_rate, (state.limit if state.limit is not None else rate) * BACK_OFF)
        return replace(state, limit=limit, why=f"search {ratio:.2f}x its pace alone: trainer to {limit:.2f} updates/s")
    if ratio < ROOM * slowdown and state.limit is not None:
        if rate < 0.9 * state.limit:  # the limit does not bind: the trainer is slower than it anyway
            return replace(state, limit=None, why=f"search {ratio:.2f}x its pace alone: trainer unlimited")
        limit = state.limit * SPEED_UP
        return replace(state, limit=limit, why=f"search {ratio:.2f}x its pace alone: trainer to {limit:.2f} updates/s")
    return replace(state, why=f"search {ratio:.2f}x its pace alone: trainer limit kept")


class GpuSharePart:
    """Every ``every_s``: the search servers' load over the interval (from their heartbeat counters,
    ``search_load``) and the trainer's updates in it through ``next_pace``; a changed limit goes to the
    trainer (``send_pace``: updates a second, 0 for none)."""

    def __init__(self, every_s: float, slowdown: float, min_rate: float,
                 peer_stats: Callable[[], Iterable[dict[str, float]]], trainer_updates: Callable[[], float],
                 send_pace: Callable[[float], bool]):
        self.every_s, self.slowdown, self.min_rate = every_s, slowdown, min_rate
        self.peer_stats, self.trainer_updates, self.send_pace = peer_stats, trainer_updates, send_pace
        self.state = PaceState()
        self.changes = 0
        self._before: tuple[float, SearchTotals, float] | None = None  # (time, search totals, trainer updates)

    def step(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        totals, updates = search_totals(self.peer_stats()), float(self.trainer_updates())
        if self._before is not None:
            t, totals_before, updates_before = self._before
            dt = now - t
            limit = self.state.limit
            self.state = next_pace(self.state, search_load(totals, totals_before, dt), updates - updates_before, dt,
                                   self.slowdown, self.min_rate)
            if self.state.limit != limit:
                self.changes += 1
                self.send_pace(self.state.limit or 0.0)
                log.info("gpu share: %s", self.state.why)
        self._before = (now, totals, updates)

    def on_trainer_start(self) -> None:
        """A (re)started trainer knows no limit: it gets the current one again."""
        if self.state.limit is not None:
            self.send_pace(self.state.limit)

    async def run(self) -> None:
        self.step()
        while True:
            await anyio.sleep(self.every_s)
            self.step()

    def summary(self) -> dict[str, object]:
        return {"limit_updates_per_s": self.state.limit, "changes": self.changes, "why": self.state.why,
                "alone_ms": {str(2 ** b): ms for b, ms in sorted(self.state.alone_ms.items())}}
