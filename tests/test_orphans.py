"""Nothing a run starts outlives it: kill -9 of `launch.py --role all` ends its collectors, its search
server and its helper processes (trainer, PPO worker) too."""
from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from support import free_base_port, launch


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow
def test_kill_9_of_a_run_takes_every_process_it_started_with_it():
    addr = f"tcp://127.0.0.1:{free_base_port()}"
    run = launch("--role", "all", "--max-seconds", "300", "--learner", addr, "run.name=test-orphans",
                 "search_server.start=always", "llm.enabled=false", "ppo.enabled=false", "trainer.min_replay_steps=20")
    try:
        deadline = time.monotonic() + 120
        started: list[psutil.Process] = []
        while time.monotonic() < deadline:
            started = _descendants(run.pid)
            cmdlines = " ".join(" ".join(p.cmdline()) for p in started if p.is_running())
            # two collectors and the search server (launch.py children), and the trainer (a spawned helper)
            if cmdlines.count("--role collector") >= 2 and "--role search" in cmdlines and "spawn_main" in cmdlines:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the run did not start its processes: {[p.cmdline()[:4] for p in started]}")
        time.sleep(3)  # let them settle into serving
        started = _descendants(run.pid)
        os.kill(run.pid, signal.SIGKILL)
        run.wait(10)
        gone, alive = psutil.wait_procs(started, timeout=30)
        assert not alive, f"outlived kill -9 of their run: {[(p.pid, p.cmdline()[:4]) for p in alive]}"
    finally:
        for p in _descendants(run.pid):
            p.kill()
        if run.poll() is None:
            run.kill()


def test_the_suite_fails_and_cleans_up_when_a_test_leaves_a_process_behind(tmp_path):
    """The orphan guard (tests/orphan_guard.py) finds a process a test started and left running,
    even one re-parented away from the test process, kills it and fails the session."""
    import subprocess
    import sys
    from pathlib import Path

    tests_dir = Path(__file__).resolve().parent
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(tests_dir)!r})\n"
        "from orphan_guard import pytest_configure, pytest_sessionfinish  # noqa: F401\n")
    (tmp_path / "test_leaky.py").write_text(
        "import subprocess, pathlib\n"
        "def test_leaves_a_sleeper():\n"
        "    p = subprocess.Popen(['sleep', '120'], start_new_session=True)\n"
        "    pathlib.Path('sleeper.pid').write_text(str(p.pid))\n")
    # a session of its own (its own process group): the inner guard must not see this suite's processes
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, start_new_session=True)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "orphan guard: 1 process(es)" in out.stderr and "sleep 120" in out.stderr
    pid = int((tmp_path / "sleeper.pid").read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
