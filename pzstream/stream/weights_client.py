"""Every reader of weights follows one path: notice -> fetch -> check -> swap.

Readers are collectors (the world model, and the LLM when it runs in process), the prior server
(the LLM), the PPO worker (the world model, for the progress reward) and evaluation (a run's
mirror on disk). Each names what it reads with one *installer* per model: a blocking function
``install(data, version)`` that loads the bytes or raises ValueError and keeps the old weights.

    client = WeightsClient({"wm": policy_install, "llm": prior.load}, who="collector c1")
    await client.follow(notices.recv, connection.fetch)      # live: the hub's notices
    client.load_mirror(Path("runs/debug/weights"))            # offline: a run's mirror

A notice is tried once per (model, version): a version that failed its checksum or its load is
not fetched again, and a newer one still is. Faults are counted and logged, never raised. Two are
no fault of the weights and are handled quietly: a version the hub replaced before it was fetched
(after a stall, issue 14) is counted in ``gone`` and logged once, and the newest notice is fetched
next; a fetch that timed out is counted in ``timeouts`` and may be tried again when the hub
repeats that notice.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Mapping

import anyio

from pzstream.stream.weights import DEFAULT_MAX_WEIGHTS_BYTES, WeightsError, WeightsGone, read_mirrored
from pzstream.stream.wire import Weights

log = logging.getLogger("pzstream.weights")

#: Loads ``data`` as weights ``version`` of one model; raises ValueError (and keeps the old weights) on a mismatch.
Install = Callable[[bytes, int], None]


@dataclass
class WeightsClientStats:
    """What a reader did with the notices it saw: per model, the version it holds now."""

    versions: dict[str, int] = field(default_factory=dict)
    installed: int = 0
    rejected: int = 0
    too_large: int = 0  # notices declaring more than max_bytes: refused before fetching anything
    gone: int = 0  # versions the hub had replaced before they were fetched (not a fault: newer ones exist)
    timeouts: int = 0  # fetches the hub did not answer in time (it was away); tried again on its next notice
    errors: list[str] = field(default_factory=list)  # the last few faults, for summaries


class WeightsClient:
    """Follows weights notices for the models in ``installers``; fetches, checks and swaps in newer versions."""

    def __init__(self, installers: Mapping[str, Install], who: str = "reader",
                 versions: Mapping[str, int] | None = None, max_bytes: int = DEFAULT_MAX_WEIGHTS_BYTES):
        self.installers = dict(installers)
        self.who = who
        self.max_bytes = max_bytes  # wire.max_weights_bytes: the most a notice may make this reader buffer
        self.stats = WeightsClientStats(versions={m: 0 for m in self.installers} | dict(versions or {}))
        self._tried: set[tuple[str, int]] = set()
        self._timed_out: tuple[str, int] | None = None  # the last version whose fetch timed out (logged once)

    def version(self, model: str) -> int:
        return self.stats.versions.get(model, 0)

    def wants(self, note: Weights) -> bool:
        """A notice for a model this reader loads, with bytes to fetch, newer than it holds, not tried before."""
        return (note.model in self.installers and bool(note.uri) and note.nbytes > 0
                and note.version > self.version(note.model) and (note.model, note.version) not in self._tried)

    async def follow(self, recv: Callable[[], Awaitable[Weights]],
                     fetch: Callable[[Weights], Awaitable[bytes]]) -> None:
        """Serve until cancelled: ``recv`` gives the next notice, ``fetch`` its checked bytes."""
        while True:
            note = await recv()
            if not self.wants(note):
                continue
            self._tried.add((note.model, note.version))
            if note.nbytes > self.max_bytes:  # checked before a single chunk is fetched and buffered
                self.stats.too_large += 1
                self._reject(note.model, note.version, f"notice declares {note.nbytes} bytes > {self.max_bytes} "
                             "(wire.max_weights_bytes); not fetched")
                continue
            try:
                data = await fetch(note)
            except WeightsGone as e:
                self._gone(e)
                continue
            except TimeoutError:
                self._timeout(note)
                continue
            except WeightsError as e:
                self._reject(note.model, note.version, f"fetch failed: {e}")
                continue
            await anyio.to_thread.run_sync(self.install, note.model, note.version, data)

    def install(self, model: str, version: int, data: bytes) -> bool:
        """Load checked bytes through the model's installer; on a fault keep the old weights."""
        try:
            self.installers[model](data, version)
        except (ValueError, RuntimeError, KeyError) as e:  # shape/dtype mismatch, bad archive
            self._reject(model, version, f"load failed: {e}")
            return False
        self.stats.versions[model] = version
        self.stats.installed += 1
        log.info("%s: %s v%d installed (%d bytes, sha256 ok)", self.who, model, version, len(data))
        return True

    def load_mirror(self, directory: Path) -> dict[str, int]:
        """Install the newest weights of each model found in a hub's mirror directory (checked
        against the sha256 the hub wrote beside them). Returns the versions held afterwards;
        a model with no weights there stays at its version (0: untrained)."""
        for model in self.installers:
            try:
                found = read_mirrored(directory, model)
            except (OSError, WeightsError) as e:  # a file being replaced, or damaged
                self._reject(model, -1, f"mirror {directory}: {e}")
                continue
            if found is not None and found[0] > self.version(model):
                self.install(model, found[0], found[1])
        return dict(self.stats.versions)

    def _gone(self, e: WeightsGone) -> None:
        """A version replaced on the hub before we fetched it: a newer notice is on its way (queued, or the
        hub's next repeat); only the first of these is worth a log line."""
        self.stats.gone += 1
        log.log(logging.INFO if self.stats.gone == 1 else logging.DEBUG,
                "%s: %s; fetching the newest version instead (further replaced versions are only counted)", self.who, e)

    def _timeout(self, note: Weights) -> None:
        """The hub did not answer in time (stopped, or reconnecting): not the weights' fault, so the version
        may be fetched again when the hub repeats its notice."""
        key = (note.model, note.version)
        self.stats.timeouts += 1
        self._tried.discard(key)
        log.log(logging.DEBUG if key == self._timed_out else logging.WARNING,
                "%s: fetching %s v%d timed out (the hub is away?); keeping v%d, trying again on its next notice",
                self.who, note.model, note.version, self.version(note.model))
        self._timed_out = key

    def _reject(self, model: str, version: int, why: str) -> None:
        self.stats.rejected += 1
        self.stats.errors = (self.stats.errors + [f"{model} v{version}: {why}"])[-5:]
        log.error("%s: rejected %s v%d, keeping v%d: %s", self.who, model, version, self.version(model), why)
