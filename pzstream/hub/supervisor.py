"""The hub's helper processes (world-model trainer, PPO worker, any later one): start, watch,
restart, stop, all alike.

Each helper talks to the hub over a pair of ipc sockets in a fresh directory, in the typed
messages of ``pzstream.stream.internal``: the hub PUSHes to the helper's inbox without ever
blocking (``hwm`` bounds what waits) and PULLs what it sends back. A helper that dies, or that
its client asks to restart (a hung episode, a runtime that did not start), is stopped and
started again after ``restart_delay_s``; ingestion never waits for any of it. A message that
cannot be decoded or handled (its weights cannot be published, say) is logged and counted
(``message_errors``), never allowed to end the hub.

Stopping (the hub's deadline, a signal) is bounded whatever a helper is doing: every helper is
told to stop at once and they are waited for side by side, not one after the other. An idle helper
may take its ``stop_grace_s`` (it writes its last checkpoint first); one whose client says it is
``busy`` with a task it reads no message during (a PPO episode: minutes on a CPU) would act on the
Stop only when the task ends, so it gets ``BUSY_STOP_GRACE_S`` and is then terminated: the task is
abandoned, as a task in flight at a stop always was (its helper's checkpoint is the one before it).

Messages are read in bursts: everything already waiting is taken at once (up to
``BURST_MESSAGES``). Of the weights in one burst only the newest of each model is handed on
(``newest_weights_only``): after the hub's loop stood still, versions that are already replaced are
neither stored, mirrored nor announced, so collectors never start fetching them
(``weights_coalesced`` counts those skipped).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import anyio
import zmq
import zmq.asyncio

from pzstream.stream import internal
from pzstream.stream.transport import recv_batch

log = logging.getLogger("pzstream.learner")

#: Helper messages taken in one burst (weights are coalesced within a burst).
BURST_MESSAGES = 1024
#: How long a helper busy with a task (``HelperClient.busy``) may take to stop before it is terminated.
BUSY_STOP_GRACE_S = 3.0
#: How long a terminated helper (SIGTERM: it unwinds and closes its runtime) may take before it is killed.
TERMINATE_GRACE_S = 30.0


def newest_weights_only(msgs: list[internal.Internal]) -> tuple[list[internal.Internal], int]:
    """``msgs`` (in the order they arrived) without every ``NewWeights`` that a later one of the
    same model replaces; the rest keep their order, the newest weights their place. Returns
    (the messages to handle, how many weights were left out)."""
    newest = {m.model: i for i, m in enumerate(msgs) if isinstance(m, internal.NewWeights)}
    kept = [m for i, m in enumerate(msgs) if not isinstance(m, internal.NewWeights) or newest[m.model] == i]
    return kept, len(msgs) - len(kept)

# (inbox address, outbox address) -> the started process
StartFn = Callable[[str, str], mp.process.BaseProcess]


@dataclass(frozen=True)
class HelperSpec:
    """How to run one helper. title: its name in log lines; stop_grace_s: how long it may take
    to finish after Stop before it is terminated."""

    name: str
    title: str
    start: StartFn
    hwm: int = 1000
    stop_grace_s: float = 5.0
    restart_delay_s: float = 1.0


class HelperClient(Protocol):
    """The hub part a helper serves: it hears what the helper sends and when it comes and goes.

    A client may also have ``busy() -> str | None``: the task the helper is in during which it reads
    no message (a PPO episode), so that a Stop would wait for the task's end; None (or no such
    method): none.
    """

    async def on_message(self, msg: internal.Internal) -> None: ...

    def on_start(self, pid: int) -> None: ...

    def on_exit(self, why: str) -> None: ...


class Helper:
    """One supervised helper process and its channel."""

    def __init__(self, spec: HelperSpec, ctx: zmq.asyncio.Context, client: HelperClient):
        self.spec, self.client = spec, client
        self._dir = tempfile.mkdtemp(prefix=f"pzstream-{spec.name}-")
        self.inbox, self.outbox = f"ipc://{self._dir}/in", f"ipc://{self._dir}/out"
        # a plain (sync) socket: parts send from the event loop without awaiting
        self._push = zmq.Context.shadow(ctx.underlying).socket(zmq.PUSH)
        self._push.setsockopt(zmq.SNDHWM, spec.hwm)
        self._push.setsockopt(zmq.LINGER, 0)
        self._push.bind(self.inbox)
        self._pull = ctx.socket(zmq.PULL)
        self._pull.setsockopt(zmq.LINGER, 0)
        self._pull.bind(self.outbox)
        self._drain = zmq.Socket.shadow(self._pull.underlying)  # takes what waits without awaiting
        self.proc: mp.process.BaseProcess | None = None
        self.restarts = 0
        self.message_errors = 0
        self.weights_coalesced = 0  # weights replaced by newer ones of the same model in the same burst
        self._restart: tuple[str, float] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def send(self, msg: internal.Internal) -> bool:
        """Queue ``msg`` for the helper without waiting; False when its inbox is full."""
        try:
            self._push.send_multipart(internal.encode(msg), flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            return False

    def restart(self, why: str, delay_s: float | None = None) -> None:
        """Ask for the helper to be stopped and started again (within a second)."""
        self._restart = (why, self.spec.restart_delay_s if delay_s is None else delay_s)

    async def run(self) -> None:
        delay = 0.0
        while True:
            if self.proc is None:
                await anyio.sleep(delay)
                self.proc = self.spec.start(self.inbox, self.outbox)
                log.info("%s started (pid %d)", self.spec.title, self.proc.pid)
                self.client.on_start(self.proc.pid)
            frames = None
            with anyio.move_on_after(1.0):
                frames = await recv_batch(self._pull, self._drain, cap=BURST_MESSAGES)
            if frames is not None:
                await self._deliver(frames)
            if self._restart is not None:
                (why, delay), self._restart = self._restart, None
                log.warning("%s (pid %d) restarting: %s", self.spec.title, self.proc.pid, why)
                proc, self.proc = self.proc, None
                self.send(internal.Stop())  # here, not in the thread: zmq sockets are not thread-safe
                await anyio.to_thread.run_sync(_join_or_kill, proc, self.spec.stop_grace_s)
                self.restarts += 1
                self.client.on_exit(why)
            elif frames is None and not self.proc.is_alive():
                why = f"{self.spec.title} died (exit code {self.proc.exitcode})"
                log.error("%s; restarting it", why)
                self.proc, delay = None, self.spec.restart_delay_s
                self.restarts += 1
                self.client.on_exit(why)

    async def _deliver(self, burst: list[list]) -> None:
        """Hand a burst of messages to the client, replaced weights left out; a failure is its
        message's, not the hub's."""
        msgs: list[internal.Internal] = []
        for frames in burst:
            try:
                msgs.append(internal.decode(frames))
            except internal.InternalError as e:
                self._failed(e)
        msgs, skipped = newest_weights_only(msgs)
        if skipped:
            self.weights_coalesced += skipped
            log.info("%s: %d weights replaced by newer ones waiting with them were not published (%d so far)",
                     self.spec.title, skipped, self.weights_coalesced)
        for msg in msgs:
            try:
                await self.client.on_message(msg)
            except Exception as e:  # noqa: BLE001 - the hub serves on; the helper's next message may do better
                self._failed(e)

    def _failed(self, e: Exception) -> None:
        self.message_errors += 1
        log.error("a message from the %s could not be handled (%d so far): %s: %s", self.spec.title,
                  self.message_errors, type(e).__name__, e, exc_info=e)

    def busy_with(self) -> str | None:
        """The task the helper is in, reading no message until it ends (its client's ``busy``), or None."""
        busy = getattr(self.client, "busy", None)
        return busy() if busy is not None else None

    def stop_grace_s(self) -> float:
        """How long the helper may take to stop now: its spec's grace, or ``BUSY_STOP_GRACE_S`` while
        it is busy (it would read the Stop only after its task)."""
        return min(self.spec.stop_grace_s, BUSY_STOP_GRACE_S) if self.busy_with() else self.spec.stop_grace_s

    def tell_stop(self) -> tuple[mp.process.BaseProcess, float] | None:
        """Send Stop and let go of the process: (it, how long it may take), or None when none runs.
        The channel stays open until :meth:`close_channel`, so the Stop is delivered."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        grace, task = self.stop_grace_s(), self.busy_with()
        if task:
            log.warning("%s (pid %d) is in %s; stopping it within %.0fs, the task abandoned", self.spec.title, proc.pid,
                        task, grace)
        self.send(internal.Stop())
        return proc, grace

    def close_channel(self) -> None:
        self._push.close(0)
        self._pull.close(0)
        shutil.rmtree(self._dir, ignore_errors=True)

    def close(self) -> None:
        """Stop the process and remove the channel (the hub is shutting down)."""
        if (told := self.tell_stop()) is not None:
            _join_or_kill(*told)
        self.close_channel()


def _join_or_kill(proc: mp.process.BaseProcess, grace_s: float) -> None:
    """Wait ``grace_s`` for a helper told to stop, then terminate it, then kill it."""
    proc.join(timeout=grace_s)
    if proc.is_alive():  # busy (starting up, in an episode): SIGTERM still lets it clean up
        proc.terminate()
        proc.join(timeout=TERMINATE_GRACE_S)
    if proc.is_alive():
        proc.kill()
        proc.join(timeout=5)


class Supervisor:
    """Every helper process of one hub."""

    def __init__(self, ctx: zmq.asyncio.Context):
        self.ctx = ctx
        self.helpers: dict[str, Helper] = {}

    def add(self, spec: HelperSpec, client: HelperClient) -> Helper:
        helper = self.helpers[spec.name] = Helper(spec, self.ctx, client)
        return helper

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for helper in self.helpers.values():
                tg.start_soon(helper.run)

    def close(self) -> None:
        """Stop every helper at once and wait for them side by side (the slowest sets the time, not the sum)."""
        told = [t for helper in self.helpers.values() if (t := helper.tell_stop()) is not None]
        waits = [threading.Thread(target=_join_or_kill, args=t, name=f"stop-{t[0].name}") for t in told]
        for w in waits:
            w.start()
        for w in waits:
            w.join()
        for helper in self.helpers.values():
            helper.close_channel()

    def summary(self) -> dict[str, dict[str, object]]:
        return {name: {"pid": h.pid, "restarts": h.restarts, "message_errors": h.message_errors,
                       "weights_coalesced": h.weights_coalesced} for name, h in self.helpers.items()}
