"""Every role stops the same way: a deadline or a signal sets its stop event; it returns its summary."""
from __future__ import annotations

import os
import signal
import threading
import time

import anyio
import pytest

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


@pytest.mark.slow
def test_a_run_stops_at_its_deadline_while_a_ppo_episode_runs_and_prints_its_summary(tmp_path, procs):
    """Issue 21: a PPO episode of 150 s kept ``--role all --max-seconds 240`` running 60 s past its
    deadline (the hub waited checkpoint.stop_grace_s for a worker that reads no message in an
    episode). Here an episode of many minutes (16 prompts x 512 samples on the tiny model) is in
    flight at the deadline: the run still ends within a short grace, with its JSON summary."""
    import json
    import subprocess

    from support import free_base_port, launch

    deadline, grace = 45.0, 25.0
    p = launch("--role", "all", "--max-seconds", str(deadline), "--collectors", "1",
               "--learner", f"tcp://127.0.0.1:{free_base_port()}", f"run.out_dir={tmp_path}", "run.name=deadline",
               "collector.segment_steps=10", "ppo.fire_threshold=16", "ppo.rollout_batch_size=16",
               "ppo.n_samples_per_prompt=512", "ppo.micro_train_batch_size=16", stderr=subprocess.PIPE)
    procs.append(p)
    lines: list[tuple[float, str]] = []  # (when it arrived, the terminal line)

    def read() -> None:
        for raw in p.stderr:
            lines.append((time.monotonic(), raw.decode(errors="replace")))

    stdout: list[bytes] = []
    readers = [threading.Thread(target=read, daemon=True),
               threading.Thread(target=lambda: stdout.append(p.stdout.read()), daemon=True)]
    for r in readers:
        r.start()
    p.wait(timeout=deadline + 300)
    ended = time.monotonic()
    for r in readers:
        r.join(timeout=10)
    out = b"".join(stdout)  # the summary, printed last
    terminal = "".join(line for _, line in lines)
    assert p.returncode == 0, terminal[-3000:]
    listening = next(t for t, line in lines if "listening" in line)  # the deadline's clock started just before
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert "PPO episode 1 fired" in terminal, terminal[-3000:]
    assert summary["ppo"]["episode_in_flight"] == 1, ("the episode ended before the deadline: no test of the stop",
                                                      summary["ppo"])
    assert "stopping it within" in terminal  # the worker was not waited for
    took = ended - listening
    print(f"ended {took - deadline:.1f}s after the deadline (from the hub's listening line)")
    assert took < deadline + grace, f"the run ended {took - deadline:.1f}s after its deadline\n{terminal[-3000:]}"
    assert summary["collector_exit_codes"] == [0] and summary["segments_accepted"] > 0
