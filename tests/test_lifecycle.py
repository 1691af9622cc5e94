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


CHILD = '''
import time


def child(flag):
    time.sleep(2.0)  # still importing, say, when the parent ends
    from pzstream.roles.lifecycle import die_with_parent

    die_with_parent()
    open(flag, "w").write("outlived its parent")
'''

PARENT = '''
import multiprocessing as mp, os, sys
sys.path.insert(0, {dir!r})
import slowchild

if __name__ == "__main__":
    p = mp.get_context("spawn").Process(target=slowchild.child, args=({flag!r},))
    p.start()
    print(p.pid, flush=True)
    os._exit(0)  # like kill -9: no clean-up, the child is not told
'''


def test_a_child_whose_parent_ended_before_it_asked_for_the_signal_ends_too(tmp_path):
    """die_with_parent closes the race of a child still importing when its parent dies."""
    import subprocess
    import sys

    import psutil

    (tmp_path / "slowchild.py").write_text(CHILD)
    flag = tmp_path / "flag"
    out = subprocess.run([sys.executable, "-c", PARENT.format(dir=str(tmp_path), flag=str(flag))],
                         capture_output=True, text=True, timeout=60)
    pid = int(out.stdout.split()[0])
    try:
        psutil.Process(pid).wait(30)
    except psutil.NoSuchProcess:
        pass
    assert not flag.exists(), "the child ran on after its parent had ended"
