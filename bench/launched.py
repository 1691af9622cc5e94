"""One ``launch.py --role all`` run from a bench: its hub's summary (the last stdout line), or a clear error.

While it runs, the hub's periodic report lines (steps/s, the search servers' batch, ms a batch, prior
share and GPU use) and every warning or error line are passed on to stderr with the bench's label, so the
bottleneck of a long run is visible before its end. The run is its own process group: a bench that is
stopped (SIGTERM, SIGINT, its timeout) stops the whole run with it, and leaves no collector behind.
"""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT_MARK = " collectors live "  # in every periodic report line of the hub (pzstream/hub/report.py)


def shown(line: str) -> bool:
    """Whether a line of the run's stderr is passed on while it runs: the hub's report, warnings, errors."""
    return REPORT_MARK in line or " WARNING " in line or " ERROR " in line or line.startswith("Traceback")


def _stop_group(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM to the run's process group (launch.py stops its roles and writes its summary), SIGKILL after
    ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            pass


def run_all(args: list[str], seconds: float, label: str) -> dict:
    """``launch.py --role all *args`` (which should carry ``--max-seconds``), printed to stderr first; the summary
    has ``wall_s`` added. Raises RuntimeError with the end of stderr when the run fails or runs past
    ``seconds`` + 300 s."""
    cmd = [sys.executable, str(ROOT / "launch.py"), "--role", "all", *args]
    print(f"[{label}] {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=200)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True)
    out: list[str] = []

    def follow() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line)
            if shown(line):
                print(f"[{label} {time.monotonic() - t0:5.0f}s] {line.rstrip()}", file=sys.stderr, flush=True)

    def collect() -> None:
        assert proc.stdout is not None
        out.append(proc.stdout.read())

    readers = [threading.Thread(target=f, daemon=True) for f in (follow, collect)]
    for r in readers:
        r.start()
    # the main thread polls rather than blocks in a read: a signal handler (SIGTERM below) runs only there
    old_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143)) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        while proc.poll() is None and time.monotonic() - t0 <= seconds + 300:
            time.sleep(0.2)
        timed_out = proc.poll() is None
    finally:
        _stop_group(proc)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    for r in readers:
        r.join(timeout=10)
    stdout = "".join(out)
    wall = time.monotonic() - t0
    err = "".join(tail)
    if timed_out:
        raise RuntimeError(f"{label}: launch.py ran past {seconds + 300:.0f} s and was stopped:\n{err[-3000:]}")
    if proc.returncode != 0:
        raise RuntimeError(f"{label}: launch.py exited {proc.returncode}:\n{err[-3000:]}")
    lines = stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{label}: launch.py printed no summary:\n{err[-3000:]}")
    summary = json.loads(lines[-1])
    summary["wall_s"] = wall
    return summary
