"""One lifecycle for every long-running role: start, serve until stopped, return a summary.

A role is an ``async serve(stop) -> summary`` function: it starts its sockets and helpers, serves
until the ``stop`` event is set, shuts down cleanly and returns what it did as a JSON-able dict.
``serve_until_stopped`` sets ``stop`` on SIGINT, SIGTERM or after ``max_seconds``, so every role
(hub, collector, prior server, monitor) stops the same way from a terminal, a deadline or a
supervisor. Helper processes (trainer, PPO worker) are stopped by their supervisor in the hub.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Awaitable, Callable, TypeVar

import anyio

Summary = TypeVar("Summary")

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Have Linux send this process ``sig`` when its parent ends, even by kill -9 (``prctl
    PR_SET_PDEATHSIG``), so nothing a role starts outlives it. Call it first in a child process
    (or as ``preexec_fn`` of a ``subprocess.Popen`` made on the parent's main thread: the signal
    follows the thread that forked). Elsewhere than Linux, a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import multiprocessing

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    # a multiprocessing child asks only once its imports are done: a parent that ended before
    # then sent nothing (seen under load: a trainer outlived kill -9 of its run), so end now
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os.kill(os.getpid(), sig)


async def stop_on_signal_or_deadline(stop: anyio.Event, max_seconds: float | None) -> None:
    """Set ``stop`` at the first SIGINT/SIGTERM or after ``max_seconds`` (None: no deadline)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        with anyio.move_on_after(max_seconds if max_seconds else float("inf")):
            async for _ in signals:
                break
    stop.set()


async def serve_until_stopped(serve: Callable[[anyio.Event], Awaitable[Summary]],
                              max_seconds: float | None) -> Summary:
    """Run one role: ``serve(stop)`` until a signal or the deadline sets ``stop``; its summary."""
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_on_signal_or_deadline, stop, max_seconds)
        summary = await serve(stop)
        tg.cancel_scope.cancel()
    return summary
