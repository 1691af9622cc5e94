"""Judging a peer's silence on one's own running clock (issue 14: a stall is not a loss).

A process whose event loop stood still (stopped with SIGSTOP, starved of CPU, swapped out) heard
no one meanwhile: what its peers said is still queued, unread. Both ends of the segment stream
tick periodically (the hub's housekeeping, a collector's receive loop); a tick that comes late
tells how long the loop stood still, and that time is excused before a peer is judged silent.

    clock = LoopClock(interval_s)
    stall = clock.tick(now)                  # each tick of the loop: loop_stall_s since the one before
    last_heard = excused(last_heard, stall, now)
"""
from __future__ import annotations

from dataclasses import dataclass


def loop_stall_s(now: float, last_tick: float, interval_s: float) -> float:
    """How long a loop that ticks every ``interval_s`` stood still between its tick at ``last_tick``
    and this one at ``now``, beyond one more interval of allowance (monotonic seconds).

    The allowance keeps a loop that is merely busy judging: each tick still adds at least
    ``interval_s`` of silence, so a peer that really went away is found lost even then."""
    return max(0.0, now - last_tick - 2 * interval_s)


def excused(last_heard: float, stall_s: float, now: float) -> float:
    """``last_heard`` moved on by the part of the stall it was silent through: the loop stood still
    for the ``stall_s`` seconds before ``now``, and a peer heard within them (its queued messages
    read since the loop resumed) is excused only the rest, never past ``now``."""
    return max(last_heard, min(last_heard + stall_s, now))


@dataclass
class LoopClock:
    """The ticks of one periodic loop (every ``interval_s``); counts the times it stood still."""

    interval_s: float
    last_tick: float | None = None  # monotonic seconds; None until the loop's first tick
    stalls: int = 0
    longest_stall_s: float = 0.0

    def tick(self, now: float) -> float:
        """A tick at ``now``: how long the loop stood still since the last one (``loop_stall_s``; 0 at the first)."""
        stalled = 0.0 if self.last_tick is None else loop_stall_s(now, self.last_tick, self.interval_s)
        self.last_tick = now
        if stalled > 0:
            self.stalls += 1
            self.longest_stall_s = max(self.longest_stall_s, stalled)
        return stalled
