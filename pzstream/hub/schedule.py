"""How collection, world-model training and PPO share a run: all at once, or in turns.

``schedule.mode=async`` (the design): collectors, the trainer and PPO episodes all run at once;
this part then does nothing.

``schedule.mode=alternating`` (PriorZero's schedule, for comparison, ``bench/schedule.py``): the
hub runs cycles of three phases and enforces them itself.
  1. collect: collectors play until ``collect_steps`` env steps were accepted in the phase; the
     trainer trains nothing and no PPO episode fires.
  2. train: the hub closes every collector's credit window at once (a collector finishes the
     segment it is playing, then waits in its send: use short segments for a sharp pause), and
     the trainer makes ``train_updates`` updates (it
     answers at once when its replay is still below ``trainer.min_replay_steps``).
  3. ppo: one PPO episode fires from the prompt queue, collectors still paused; when it
     ends, or when none can fire (no worker, queue below its threshold), the next cycle begins
     and credit returns to every collector.

``AlternatingSchedule`` is the pure state machine (inbox: steps accepted, training done, episode
done or skipped; outbox: the phase). ``SchedulePart`` is the hub part around it: it counts
accepted steps and turns each phase change into the gates of the other parts (ingest's credit
window, the trainer's update budget, the PPO episode).
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from enum import Enum

from pzstream.config import ScheduleConfig
from pzstream.hub.parts import AcceptedSegment

log = logging.getLogger("pzstream.learner")


class Phase(str, Enum):
    ASYNC = "async"
    COLLECT = "collect"
    TRAIN = "train"
    PPO = "ppo"


class AlternatingSchedule:
    """collect K steps -> train M updates -> one PPO episode -> collect ... (no I/O here)."""

    def __init__(self, cfg: ScheduleConfig, clock: Callable[[], float] = time.monotonic):
        self.cfg, self.clock = cfg, clock
        self.phase = Phase.COLLECT if cfg.mode == "alternating" else Phase.ASYNC
        self.cycles = 1 if self.phase is Phase.COLLECT else 0  # cycles begun
        self.steps_in_phase = 0
        self.seconds: Counter[str] = Counter()  # wall time spent in each phase
        self._since = clock()

    def _enter(self, phase: Phase) -> Phase:
        now = self.clock()
        self.seconds[self.phase.value] += now - self._since
        self._since, self.phase, self.steps_in_phase = now, phase, 0
        if phase is Phase.COLLECT:
            self.cycles += 1
        return phase

    def on_steps(self, n: int) -> Phase | None:
        """Env steps accepted; the new phase when this ends the collect phase."""
        if self.phase is not Phase.COLLECT:
            return None  # a segment already in flight when the phase ended: kept, not counted
        self.steps_in_phase += n
        return self._enter(Phase.TRAIN) if self.steps_in_phase >= self.cfg.collect_steps else None

    def on_trained(self) -> Phase | None:
        """The trainer spent its budget (or had too little replay to start)."""
        if self.phase is not Phase.TRAIN:
            return None
        return self._enter(Phase.PPO if self.cfg.ppo_episodes > 0 else Phase.COLLECT)

    def on_ppo_over(self) -> Phase | None:
        """The phase's episode ended (ok or failed), or none could fire."""
        return self._enter(Phase.COLLECT) if self.phase is Phase.PPO else None

    def collecting(self) -> bool:
        return self.phase in (Phase.ASYNC, Phase.COLLECT)

    def ppo_allowed(self) -> bool:
        return self.phase in (Phase.ASYNC, Phase.PPO)

    def summary(self) -> dict[str, object]:
        seconds = dict(self.seconds)
        seconds[self.phase.value] = seconds.get(self.phase.value, 0.0) + self.clock() - self._since
        return {"mode": self.cfg.mode, "phase": self.phase.value, "cycles": self.cycles,
                "seconds_by_phase": {k: round(v, 1) for k, v in seconds.items()}}


class SchedulePart:
    """The hub part that enforces ``AlternatingSchedule`` through the other parts' gates.

    Outbox (callables the hub wires): ``announce_window()`` tells every collector the window now (its
    credit back when collection opens, none when it closes);
    ``train(updates)`` sends the trainer its budget; ``fire_ppo()`` fires one episode and says
    whether it did.
    """

    def __init__(self, cfg: ScheduleConfig, announce_window: Callable[[], Awaitable[None]],
                 train: Callable[[int], bool], fire_ppo: Callable[[], bool]):
        self.cfg = cfg
        self.state = AlternatingSchedule(cfg)
        self._announce_window, self._train, self._fire_ppo = announce_window, train, fire_ppo
        self._pending_credit = False  # a phase change whose window every collector must be told

    @property
    def active(self) -> bool:
        return self.state.phase is not Phase.ASYNC

    def window(self, full: int) -> int:
        """The credit window collectors get now: ``full``, or 0 while they are paused."""
        return full if self.state.collecting() else 0

    def on_segment(self, accepted: AcceptedSegment) -> None:
        if self.active:
            self._enter(self.state.on_steps(accepted.segment.n_steps))

    def on_trained(self) -> None:
        self._enter(self.state.on_trained())

    def on_ppo_over(self) -> None:
        self._enter(self.state.on_ppo_over())

    def on_trainer_start(self) -> None:
        """A trainer (re)started during a train phase lost its budget: send it again."""
        if self.state.phase is Phase.TRAIN and not self._train(self.cfg.train_updates):
            self._enter(self.state.on_trained())

    def _enter(self, phase: Phase | None) -> None:
        if phase is None:
            return
        log.info("schedule: %s (cycle %d)", phase.value, self.state.cycles)
        if phase is Phase.TRAIN:
            self._pending_credit = True  # every collector's window closes now, not at its next segment
        if phase is Phase.TRAIN and not self._train(self.cfg.train_updates):
            log.warning("schedule: the trainer is not taking a budget; skipping the training phase")
            self._enter(self.state.on_trained())
        elif phase is Phase.PPO and not self._fire_ppo():
            self._enter(self.state.on_ppo_over())
        elif phase is Phase.COLLECT:
            self._pending_credit = True

    async def run(self) -> None:
        """Tell every collector its window when a phase opens or closes collection (sending is async;
        phase changes are not)."""
        import anyio

        while True:
            if self._pending_credit:
                self._pending_credit = False
                await self._announce_window()
            await anyio.sleep(0.02)

    def summary(self) -> dict[str, object]:
        return self.state.summary()
