"""The hub's link to the world-model trainer: every accepted segment goes to it, its weights
come back and are published.

A full pipe never stalls ingestion: the segment is dropped for the trainer and counted
(it samples from its own replay anyway). The pipe is full at its high-water mark or when
``pipe_bytes`` of segments are forwarded and not yet taken (the trainer says ``Taken``): a peer
sending large segments faster than the trainer reads them cannot grow the trainer's memory. With ``hold_until_ready`` (checkpoints on) a started
trainer gets no segments until it says it is ready; ``on_ready`` then asks it to save a
checkpoint, and it takes what it missed from the hub's journal (``pzstream.stream.journal``).

Failures are counted over the run: updates that failed and were skipped (each trainer process
reports its own count; those of processes that ended are kept here) and trainer restarts.
Weights that waited behind newer ones of the same model (the hub's loop stood still) are not
published: ``weights_coalesced`` in :attr:`TrainerLink.stats` counts them (``pzstream.hub.supervisor``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from pzstream.hub.parts import AcceptedSegment
from pzstream.hub.publisher import PublishedVersions
from pzstream.stream import internal
from pzstream.stream.internal import (BudgetSpent, NewWeights, Pace, SegmentFrame, Taken, TrainBudget, TrainerStats,
                                      WorkerReady)

log = logging.getLogger("pzstream.learner")


class TrainerLink:
    """Part (segments to the trainer) and helper client (weights and stats from it)."""

    def __init__(self, versions: PublishedVersions, pipe_bytes: int = 256 * 1024 * 1024):
        self.versions = versions
        self.pipe_bytes = pipe_bytes
        self.inflight_bytes = 0  # forwarded, not yet taken by the trainer
        self.dropped_for_bytes = 0
        self.helper = None  # the supervisor's Helper, attached when the hub starts one
        self.dropped = 0
        self.forwarded = 0
        self._stats: dict[str, float] = {}  # the trainer process's last TrainerStats
        self._failed_before = 0  # failed updates of trainer processes that have ended
        self.on_budget_spent = lambda: None  # the schedule's inbox (alternating mode)
        self.on_helper_start = lambda: None  # a (re)started trainer holds no budget: the schedule re-sends one
        self.hold_until_ready = False  # segments wait in the hub's journal until the trainer is ready
        self.attached = False  # the trainer is ready for segments
        self.on_ready: Callable[[], bool] = lambda: True  # the trainer is ready: whether to attach it now

    def train(self, updates: int) -> bool:
        """Send the trainer a budget of updates (alternating schedule); False when it cannot take one."""
        return self.helper is not None and self.helper.send(TrainBudget(updates=updates))

    def pace(self, max_updates_per_s: float) -> bool:
        """Limit the trainer's updates a second (0: no limit; ``pzstream.hub.gpu_share``); False when it cannot take it."""
        return self.helper is not None and self.helper.send(Pace(max_updates_per_s=max_updates_per_s))

    def on_segment(self, accepted: AcceptedSegment) -> None:
        if self.helper is None or (self.hold_until_ready and not self.attached):
            return
        size = len(accepted.data)
        if self.inflight_bytes + size > self.pipe_bytes:
            self.dropped += 1
            self.dropped_for_bytes += 1
        elif self.helper.send(SegmentFrame(accepted.data)):
            self.forwarded += 1
            self.inflight_bytes += size
        else:  # the trainer is behind: say how much it missed
            self.dropped += 1

    async def on_message(self, msg: internal.Internal) -> None:
        if isinstance(msg, NewWeights):
            await self.versions.publish(msg.model, msg.payload)
        elif isinstance(msg, TrainerStats):
            self._stats = dict(msg.stats)
        elif isinstance(msg, Taken):
            self.inflight_bytes = max(0, self.inflight_bytes - msg.nbytes)
        elif isinstance(msg, BudgetSpent):
            self.on_budget_spent()
        elif isinstance(msg, WorkerReady):
            self.attached = self.on_ready()
        else:
            log.error("trainer sent an unexpected %s", type(msg).__name__)

    def on_start(self, pid: int) -> None:
        self.attached = False
        self.inflight_bytes = 0  # a new process: its pipe starts empty
        self.on_helper_start()

    def on_exit(self, why: str) -> None:
        self.attached = False
        self._failed_before += int(self._stats.get("failed_updates", 0))
        self._stats = {k: v for k, v in self._stats.items() if k != "failed_updates"}  # the next process counts from 0

    @property
    def stats(self) -> dict[str, float]:
        """The trainer's counters and last losses, and the hub's count of its weights left unpublished."""
        return {**self._stats, "weights_coalesced": float(self.weights_coalesced)}

    @property
    def weights_coalesced(self) -> int:
        """Weights the trainer sent that newer ones of the same model replaced before the hub read them."""
        return self.helper.weights_coalesced if self.helper is not None else 0

    @property
    def updates(self) -> int:
        return int(self._stats.get("updates", 0))

    @property
    def failed_updates(self) -> int:
        """World-model updates that raised and were skipped, over every trainer process of this hub."""
        return self._failed_before + int(self._stats.get("failed_updates", 0))

    @property
    def restarts(self) -> int:
        """Times the trainer process was started again (it died, or was restarted)."""
        return self.helper.restarts if self.helper is not None else 0
