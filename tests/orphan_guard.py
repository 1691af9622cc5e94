"""No process the test suite starts outlives it.

At the start of a session every process started from then on inherits a marker in its environment
(``PZSTREAM_TEST_SESSION``). At the end, the processes that carry this session's marker, or that sit
in the session's process group (vLLM starts its EngineCore with an environment of its own, which
drops the marker, but not in a group of its own), found through ``/proc`` so that children
re-parented to init after their parent died count too (a vLLM EngineCore, a Ray raylet, a
collector), are given 15 s to end, then killed and reported. The session's own ancestors (the shell
that ran it), the processes of its pipeline (``pytest | tail``: same group, started before the
session) and the multiprocessing resource tracker of the test process (it ends with it) are not
leftovers. The session
then fails: a leftover process is a defect of the code or of a test's clean-up. Linux only (elsewhere
nothing is checked).
"""
from __future__ import annotations

import os
import sys
import time
import uuid

KEY = "PZSTREAM_TEST_SESSION"


def _marked(mark: str, since: float) -> list[int]:
    """Pids of this session's leftovers: its marker, or its process group and started after ``since``
    (the pipeline beside the suite, ``pytest | tail``, shares the group but started before it)."""
    import psutil

    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}
    tracker = getattr(getattr(__import__("multiprocessing.resource_tracker").resource_tracker, "_resource_tracker", None),
                      "_pid", None)
    if tracker:
        spared.add(tracker)
    group, out = os.getpgid(0), []
    for p in psutil.process_iter():
        if p.pid in spared:
            continue
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            if (os.getpgid(p.pid) == group and p.create_time() >= since) or p.environ().get(KEY) == mark:
                out.append(p.pid)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
            continue
    return out


_STARTED = [0.0]


def pytest_configure(config) -> None:
    os.environ[KEY] = uuid.uuid4().hex
    _STARTED[0] = time.time()


def pytest_sessionfinish(session, exitstatus) -> None:
    if not sys.platform.startswith("linux"):
        return
    import psutil

    mark = os.environ.get(KEY, "")
    deadline = time.monotonic() + 15
    left = _marked(mark, _STARTED[0])
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _marked(mark, _STARTED[0])
    if not left:
        return
    described = []
    for pid in left:
        try:
            p = psutil.Process(pid)
            described.append(f"{pid} {' '.join(p.cmdline())[:160]}")
            p.kill()
        except psutil.Error:
            continue
    if described:
        print(f"\norphan guard: {len(described)} process(es) started by the tests outlived them (killed):\n  "
              + "\n  ".join(described), file=sys.stderr)
        if session.exitstatus == 0:
            session.exitstatus = 1
