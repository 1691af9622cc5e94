"""What a search server keeps between batches: a fair queue of roots and each collector's context.

Pure bookkeeping, no sockets and no models (pzstream/roles/search_server.py does the I/O):

- ``FairQueue``: one FIFO per collector; a batch takes one root from each collector in turn, so a
  collector that floods the server waits behind its own requests, never in front of others'.
- ``ContextStore``: the recent (observation, action, reward) steps of each collector's episode, so
  a request carries only what is new since its last one (as SEED RL keeps recurrent state at the
  learner). A collector the store does not know, or whose episode it lost, is told to resend.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Step = tuple[str, str, float]  # (observation, action text, reward) of one played step


class FairQueue(Generic[Item]):
    """Per-collector FIFOs served round-robin; each collector holds at most ``per_collector`` items."""

    def __init__(self, per_collector: int):
        self.per_collector = per_collector
        self._queues: OrderedDict[Hashable, deque[Item]] = OrderedDict()
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def has_room(self, who: Hashable) -> bool:
        q = self._queues.get(who)
        return q is None or len(q) < self.per_collector

    def put(self, who: Hashable, item: Item) -> bool:
        """Queue ``item`` for ``who``; False (nothing queued) when ``who`` already has its share waiting."""
        if not self.has_room(who):
            return False
        self._queues.setdefault(who, deque()).append(item)
        self._n += 1
        return True

    def take(self, max_items: int) -> list[Item]:
        """Up to ``max_items``: rounds of one item per waiting collector, in the order they started waiting.

        A collector served in this batch moves behind those that were not, so the next batch starts
        with whoever was cut off.
        """
        out: list[Item] = []
        while len(out) < max_items and self._queues:
            for who in list(self._queues):
                if len(out) >= max_items:
                    break
                q = self._queues[who]
                out.append(q.popleft())
                self._n -= 1
                if q:
                    self._queues.move_to_end(who)
                else:
                    del self._queues[who]
        return out


@dataclass
class _Context:
    episode_id: int
    steps: list[Step] = field(default_factory=list)  # before ``pending``, oldest first, at most keep_steps
    pending: str | None = None  # the observation of the collector's last request (its move is not known yet)


class ContextStore:
    """Recent history of each collector's episode, updated by the deltas of its requests.

    keep_steps: steps kept per collector (what the world model and the LLM prompt read, at least);
    max_collectors: contexts kept, least recently used dropped first (that collector resends).
    """

    def __init__(self, keep_steps: int, max_collectors: int = 4096):
        self.keep_steps = keep_steps
        self.max_collectors = max_collectors
        self._ctx: OrderedDict[str, _Context] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ctx)

    def forget(self, collector_id: str) -> None:
        self._ctx.pop(collector_id, None)

    def advance(self, collector_id: str, episode_id: int, reset: bool, observation: str, last_action: str,
                last_reward: float, history: list[Step]) -> list[Step] | None:
        """The history before ``observation`` after applying one request, or None: unknown, resend it.

        reset: a new episode (history = the given steps, normally none); a non-empty ``history``
        replaces what is kept; otherwise the last request's observation, with ``last_action`` and
        ``last_reward``, becomes the newest step.
        """
        ctx = self._ctx.get(collector_id)
        if reset or history:
            ctx = _Context(episode_id, list(history[-self.keep_steps:]) if self.keep_steps else [])
        elif ctx is None or ctx.episode_id != episode_id or ctx.pending is None:
            return None
        else:
            ctx.steps.append((ctx.pending, last_action, float(last_reward)))
            del ctx.steps[:max(0, len(ctx.steps) - self.keep_steps)]
        ctx.pending = observation
        self._ctx[collector_id] = ctx
        self._ctx.move_to_end(collector_id)
        while len(self._ctx) > self.max_collectors:
            self._ctx.popitem(last=False)
        return list(ctx.steps)
