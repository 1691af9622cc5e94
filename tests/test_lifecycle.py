"""Every role stops the same way: a deadline or a signal sets its stop event; it returns its summary."""
from __future__ import annotations

import os
import signal
import threading
import time

import anyio

from pzstream.roles.lifecycle import serve_until_stopped


async def _role(stop: anyio.Event) -> dict[str, float]:
    """A role that counts ticks until stopped, then cleans up and reports."""
    t0, ticks = time.monotonic(), 0
    with anyio.move_on_after(30):
        while not stop.is_set():
            ticks += 1
            await anyio.sleep(0.01)
    return {"ticks": ticks, "elapsed": time.monotonic() - t0, "stopped": stop.is_set()}


def test_deadline_stops_the_role_and_returns_its_summary():
    summary = anyio.run(serve_until_stopped, _role, 0.3)
    assert summary["stopped"] and 0.25 < summary["elapsed"] < 5 and summary["ticks"] > 0


def test_sigterm_stops_the_role_cleanly():
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        summary = anyio.run(serve_until_stopped, _role, None)
    finally:
        timer.cancel()
    assert summary["stopped"] and summary["elapsed"] < 10
