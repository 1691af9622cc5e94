"""Valid actions computed in a helper process, so a collector's move never waits on them.

Jericho's ``get_valid_actions()`` cannot be stopped half-way, and in a thread of the playing
process it still stalls the player: its spaCy and candidate-building parts hold the GIL (stalls
of 0.6-1.4 s measured on acorncourt while a thread computed). So the computation runs in a child
process with its own ``FrotzEnv`` of the same story file; a job carries the z-machine state
(``FrotzEnv.get_state()``, 10-15 KB pickled), and the answer fills the ValidActionCache when it
arrives, however late, so the next visit of that state is a hit.

Jobs run newest first: the state the player stands in now matters more than one it has left.
A state already queued or running is not queued twice. At most ``max_pending`` jobs wait;
the oldest are dropped beyond that.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

#: on_done(actions, seconds computing): where a finished job's answer goes (the cache), called in the worker's thread.
OnDone = Callable[[list[str], float], None]


@dataclass
class _Job:
    exact_key: bytes
    state: tuple
    on_done: OnDone
    future: Future = field(default_factory=Future)


@dataclass
class WorkerStats:
    """Counts of the helper processes. compute_s: time it spent computing (off the critical path)."""

    jobs: int = 0
    done: int = 0
    dropped: int = 0
    failed: int = 0
    restarts: int = 0
    compute_s: float = 0.0


class _Helper:
    """One helper process and its two pipes."""

    def __init__(self, story_file: str) -> None:
        self.story_file = story_file
        self.proc: subprocess.Popen | None = None
        self.conn_in: Connection | None = None
        self.conn_out: Connection | None = None
        self.ready = False  # started and answered "ready"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        parent_r, child_w = os.pipe()
        child_r, parent_w = os.pipe()
        env = dict(os.environ)
        pkg_root = str(Path(__file__).resolve().parents[2])  # this checkout's pzstream, not another one
        env["PYTHONPATH"] = pkg_root + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pzstream.env.va_worker", self.story_file, str(child_r), str(child_w)],
            pass_fds=(child_r, child_w), env=env, stdin=subprocess.DEVNULL)
        os.close(child_r)
        os.close(child_w)
        self.conn_in, self.conn_out = Connection(parent_r), Connection(parent_w)
        if self.conn_in.recv() != "ready":
            raise EOFError("the helper process did not start")
        self.ready = True

    def compute(self, state: tuple) -> tuple[list[str] | str, float]:
        """(valid actions, seconds), or (the error text, seconds) when Jericho raised on this state."""
        self.conn_out.send(state)
        return self.conn_in.recv()

    def stop(self) -> None:
        # close() and the dispatcher thread may both get here: take the handles first
        conns, self.conn_in, self.conn_out = (self.conn_in, self.conn_out), None, None
        proc, self.proc = self.proc, None
        self.ready = False
        for c in conns:
            if c is not None:
                c.close()
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class ValidActionWorker:
    """``helpers`` helper processes per game; ``submit`` returns a Future of a state's valid actions.

    ``exact_key`` names the state (its digest) so that a state is never queued twice. With two
    helpers a move's state need not wait behind the state the player has just left."""

    def __init__(self, story_file: str | Path, max_pending: int = 8, helpers: int = 1) -> None:
        if helpers < 1:
            raise ValueError("helpers must be >= 1")
        self.story_file = str(story_file)
        self.max_pending = max_pending
        self.stats = WorkerStats()
        self._pending: deque[_Job] = deque()
        self._running: list[_Job] = []
        self._cv = threading.Condition()
        self._closed = False
        self._helpers = [_Helper(self.story_file) for _ in range(helpers)]
        self.ready = threading.Event()  # a helper process has loaded spaCy and the story file
        self._threads = [threading.Thread(target=self._dispatch, args=(h,), name=f"pzstream-valid-actions-{i}",
                                          daemon=True) for i, h in enumerate(self._helpers)]
        for t in self._threads:
            t.start()

    def submit(self, exact_key: bytes, state: tuple, on_done: OnDone, prefetch: bool = False) -> Future:
        """Queue a state first in line (``prefetch``: last in line, and first to be dropped);
        a state already queued or running gives its Future."""
        with self._cv:
            if self._closed:
                raise RuntimeError("ValidActionWorker is closed")
            for job in self._running + list(self._pending):
                if job.exact_key == exact_key:
                    return job.future
            job = _Job(exact_key, state, on_done)
            if prefetch:
                self._pending.appendleft(job)
            else:
                self._pending.append(job)
            self.stats.jobs += 1
            while len(self._pending) > self.max_pending:
                old = self._pending.popleft()
                old.future.cancel()
                self.stats.dropped += 1
            self._cv.notify()
            return job.future

    def busy(self) -> bool:
        with self._cv:
            return bool(self._running) or bool(self._pending)

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until a helper process can compute (it loads spaCy first: seconds)."""
        return self.ready.wait(timeout_s)

    def _dispatch(self, helper: _Helper) -> None:
        try:  # start at once: the game is opened well before its first move
            helper.start()
            self.ready.set()
        except (EOFError, OSError):
            helper.stop()
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                job = self._pending.pop()  # newest first
                self._running.append(job)
            try:
                if not helper.alive():
                    if helper.proc is not None:
                        with self._cv:
                            self.stats.restarts += 1
                    helper.stop()
                    helper.start()
                    self.ready.set()
                acts, seconds = helper.compute(job.state)
                with self._cv:
                    self.stats.compute_s += seconds
                    if isinstance(acts, str):
                        self.stats.failed += 1
                    else:
                        self.stats.done += 1
                if isinstance(acts, str):  # nothing cached: a later visit may try again
                    job.future.set_exception(RuntimeError(f"valid actions failed in {self.story_file}: {acts}"))
                else:
                    job.on_done(acts, seconds)
                    job.future.set_result(acts)
            except (EOFError, OSError, AttributeError) as exc:  # AttributeError: close() took the pipes
                if self._closed:
                    return
                with self._cv:
                    self.stats.failed += 1
                helper.stop()
                job.future.set_exception(RuntimeError(f"valid-action helper for {self.story_file} died: {exc!r}"))
            finally:
                with self._cv:
                    self._running.remove(job)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            for job in self._pending:
                job.future.cancel()
            self._pending.clear()
            self._cv.notify_all()
        for h in self._helpers:  # a computation in progress cannot be interrupted: end the process
            h.stop()
        for t in self._threads:
            t.join(timeout=5)


def _serve(story_file: str, rfd: int, wfd: int) -> None:
    """The helper process: answer each z-machine state with its valid actions and the seconds taken."""
    import jericho

    from pzstream.env.spacy_offline import ensure_spacy

    conn_in, conn_out = Connection(rfd), Connection(wfd)
    ensure_spacy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jericho.UnsupportedGameWarning)
        env = jericho.FrotzEnv(story_file)
    env.reset()
    conn_out.send("ready")
    while True:
        try:
            state = conn_in.recv()
        except EOFError:
            return
        t0 = time.perf_counter()
        try:
            env.set_state(state)
            acts: list[str] | str = list(env.get_valid_actions(use_parallel=False))
        except Exception as exc:  # noqa: BLE001 - a state this game's generator trips on: say so, keep serving
            acts = f"{type(exc).__name__}: {exc}"
        conn_out.send((acts, time.perf_counter() - t0))


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
