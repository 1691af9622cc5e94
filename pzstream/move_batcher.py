"""Part: one search for the moves of every game a collector plays (issue 22, item 1).

A collector of ``collector.games`` game instances plays each in its own thread. Each thread asks its
:class:`Seat` (a :class:`~pzstream.agent.Policy`) for a move; the :class:`MoveBatcher` gathers the
seats that wait and searches all their roots in one ``MctsPolicy.search_roots`` call (one world-model
forward, one LLM prior call and one tree batch for B roots, where B single moves cost B of each).

A batch is searched as soon as every live seat waits, or ``max_wait_s`` after its first move arrived,
so a slow instance (a valid-action miss, a game stepping slowly) never holds the others back by more
than that. A seat whose game ended (:meth:`Seat.close`) is no longer waited for. A search that raises
is raised in every thread of that batch; the batcher goes on with the next.

Inbox: ``Seat.act(history, observation, valid)`` from the instances' threads. Outbox: the
:class:`~pzstream.agent.Move` of each, from ``search_roots`` of the shared policy.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from pzstream.agent import MctsPolicy, Move
from pzstream.llm.factory import History


@dataclass
class _Ask:
    history: History
    observation: str
    valid: list[str]
    done: threading.Event = field(default_factory=threading.Event)
    move: Move | None = None
    error: BaseException | None = None


@dataclass
class BatchStats:
    batches: int = 0
    roots: int = 0
    full: int = 0  # batches searched because every live seat waited (the rest: max_wait_s ran out)

    @property
    def mean_batch(self) -> float:
        return self.roots / self.batches if self.batches else 0.0


class MoveBatcher:
    """Batches the moves of ``seats`` game instances into searches of ``policy`` (shared by them)."""

    def __init__(self, policy: MctsPolicy, seats: int, max_wait_s: float = 0.005):
        if seats < 1:
            raise ValueError(f"a move batcher needs at least one seat, got {seats}")
        self.policy, self.max_wait_s = policy, max_wait_s
        self.stats = BatchStats()
        self._cond = threading.Condition()
        self._waiting: list[_Ask] = []
        self._live = seats
        self._searching = threading.Lock()  # one batch searches at a time: the policy is not thread-safe
        self._seats = [Seat(self, i) for i in range(seats)]

    def seat(self, i: int) -> "Seat":
        return self._seats[i]

    def _leave(self) -> None:
        with self._cond:
            self._live -= 1
            self._cond.notify_all()

    def _ask(self, ask: _Ask) -> Move:
        with self._cond:
            self._waiting.append(ask)
            self._cond.notify_all()
        # the waiting threads take turns to lead: the leader forms the batch and searches it
        while not ask.done.is_set():
            if self._searching.acquire(timeout=0.05):
                try:
                    if not ask.done.is_set():
                        self._lead()
                finally:
                    self._searching.release()
        if ask.error is not None:
            raise ask.error
        assert ask.move is not None
        return ask.move

    def _lead(self) -> None:
        """Wait until every live seat waits or ``max_wait_s`` passed, then search what waits."""
        deadline = time.monotonic() + self.max_wait_s
        with self._cond:
            while len(self._waiting) < self._live and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            batch, self._waiting = self._waiting, []
            full = len(batch) >= self._live
        if not batch:
            return
        try:
            moves = self.policy.search_roots([a.history for a in batch], [a.observation for a in batch],
                                             [a.valid for a in batch])
        except BaseException as e:  # every thread of the batch sees its search's fault
            for a in batch:
                a.error = e
                a.done.set()
            return
        self.stats.batches += 1
        self.stats.roots += len(batch)
        self.stats.full += int(full)
        for a, m in zip(batch, moves):
            a.move = m
            a.done.set()


class Seat:
    """One game instance's policy: its moves are searched in batches with the other seats'."""

    name = "mcts"

    def __init__(self, batcher: MoveBatcher, index: int):
        self.batcher, self.index = batcher, index
        self._closed = False

    @property
    def wm_version(self) -> int:
        return self.batcher.policy.wm_version

    @property
    def llm_version(self) -> int:
        return self.batcher.policy.llm_version

    @property
    def net_s(self) -> float:
        return self.batcher.policy.net_s

    def act(self, history: History, observation: str, valid: list[str]) -> Move:
        if self._closed:
            raise RuntimeError(f"seat {self.index} is closed: its game ended")
        return self.batcher._ask(_Ask(history, observation, valid))

    def close(self) -> None:
        """This instance plays no more: the batcher stops waiting for it."""
        if not self._closed:
            self._closed = True
            self.batcher._leave()
