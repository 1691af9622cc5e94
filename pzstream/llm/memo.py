"""Answers the LLM already gave: the prior of a root whose prompt inputs were scored before.

Text games revisit states all the time: every episode starts in the same opening, and rooms,
``look`` and ``inventory`` come back. A prior depends only on the weights, the fitted prompt and the candidates (fitting
to ``max_prompt_tokens`` often drops the history, so one room's prompt recurs whatever led
there), so ``PriorMemo`` keeps the most recent answers (least recently used out first, at most ``max_entries`` and
``max_bytes`` of key text) and is emptied whenever the weights change. A server that answers
many collectors finds more repeats than one collector alone: the states of one are the states
of the others.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable, Sequence

import numpy as np

Key = tuple[Hashable, ...]


def memo_key(prompt: str, candidates: Sequence[str]) -> Key:
    """What a root's prior depends on besides the weights."""
    return (str(prompt), tuple(str(c) for c in candidates))


def _key_bytes(key: Key) -> int:
    prompt, cands = key
    return len(prompt) + sum(len(c) for c in cands)  # type: ignore[union-attr, arg-type]


class PriorMemo:
    """A bounded least-recently-used map from ``memo_key`` to a root's prior."""

    def __init__(self, max_entries: int = 4096, max_bytes: int = 32 << 20) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("PriorMemo limits must be >= 0")
        self.max_entries, self.max_bytes = int(max_entries), int(max_bytes)
        self._data: OrderedDict[Key, tuple[np.ndarray, int]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()
        self._bytes = 0

    def get(self, key: Key) -> np.ndarray | None:
        item = self._data.get(key)
        if item is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return item[0]

    def put(self, key: Key, prior: np.ndarray) -> None:
        if self.max_entries == 0:
            return
        size = _key_bytes(key) + prior.nbytes
        if size > self.max_bytes:
            return
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        self._data[key] = (prior, size)
        self._bytes += size
        while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            _, (_, n) = self._data.popitem(last=False)
            self._bytes -= n

    def answers(self, keys: Sequence[Key], compute: Callable[[list[int]], Sequence[np.ndarray]]) -> list[np.ndarray]:
        """Each key's answer: from the memo, or by one ``compute(indices)`` call for all the keys it lacks
        (their answers, in that order, are kept). Copies: callers may change what they get."""
        out: list[np.ndarray | None] = [self.get(k) for k in keys]
        todo = [i for i, x in enumerate(out) if x is None]
        if todo:
            for i, value in zip(todo, compute(todo), strict=True):
                out[i] = value
                self.put(keys[i], value)
        return [x.copy() for x in out if x is not None]
