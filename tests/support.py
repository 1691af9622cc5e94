"""Test support: free ports, a hub in a background thread, collector processes."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import anyio
import zmq
from anyio.from_thread import start_blocking_portal

from pzstream.config import Config, load_config
from pzstream.hub.learner import LearnerHub
from pzstream.hub.parts import AcceptedSegment
from pzstream.hub.status import HubStatus
from pzstream.stream.transport import CurveKeys, free_base_port  # noqa: F401  (re-exported for tests)
from pzstream.stream import wire
from pzstream.stream.wire import Segment

REPO = Path(__file__).resolve().parent.parent
GAMES_DIR = Path(os.environ.get("PZSTREAM_GAMES_DIR", REPO.parent / "shared" / "games" / "jericho"))


def hub_config(address: str, *overrides: str) -> Config:
    return load_config(None, [f"hub.address={address}", f"collector.learner={address}", "hub.heartbeat_s=0.2", "hub.peer_timeout_heartbeats=10", "trainer.enabled=false", "ppo.enabled=false",
                              "hub.report_every_s=1", *overrides])


class SegmentRecorder:
    """A hub part that keeps every accepted segment (tests compare them with what was played)."""

    def __init__(self) -> None:
        self.segments: list[Segment] = []

    def on_segment(self, accepted: AcceptedSegment) -> None:
        self.segments.append(accepted.segment)


class LoopThread:
    """An async ``serve(stop) -> summary`` on an event loop in a thread of the test; :meth:`stop`
    sets ``stop`` and returns the summary (once; later calls return it again)."""

    def __init__(self) -> None:
        self.summary: dict | None = None
        self._portal_cm = None
        self._portal = None
        self._future = None
        self._stop: anyio.Event | None = None

    def serve(self, serve) -> None:
        self._portal_cm = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        self._stop = self._portal.call(anyio.Event)
        self._future = self._portal.start_task_soon(serve, self._stop)

    def stop(self) -> dict:
        if self.summary is None:
            self._portal.call(self._stop.set)
            try:
                self.summary = self._future.result(timeout=30)
            finally:
                self._portal_cm.__exit__(None, None, None)
        return self.summary


class HubThread(LoopThread):
    """A real LearnerHub serving on an event loop in a thread, read and stopped from the test.

    Tests read the hub through :meth:`status` (its public snapshot) and :meth:`segments`
    (what a recorder part saw), both taken on the hub's own loop.
    """

    def __init__(self, cfg: Config, curve: CurveKeys | None = None, **hub_kw):
        self.recorder = SegmentRecorder()
        if "run_dir" not in hub_kw:
            # a run directory of its own: the hub numbers versions on from a run's weights mirror,
            # so the default runs/<name> would carry versions over from earlier runs and tests
            self._run_dir = tempfile.TemporaryDirectory(prefix="pzstream-test-run-")
            hub_kw["run_dir"] = Path(self._run_dir.name)
        self.hub = LearnerHub(cfg, curve, extra_parts=[self.recorder], **hub_kw)
        super().__init__()

    def start(self) -> HubThread:
        self.serve(self.hub.serve)
        deadline = time.monotonic() + 10
        while not self.hub.ready.is_set():
            if self._future.done():
                self._future.result()  # raises what stopped it
            assert time.monotonic() < deadline, "hub did not start"
            time.sleep(0.01)
        return self

    def call(self, fn, *args):
        """Run ``fn(*args)`` (sync or async) on the hub's loop and return its result; once the
        hub has stopped, a sync ``fn`` runs here."""
        if self.summary is not None:
            return fn(*args)
        return self._portal.call(fn, *args)

    def status(self) -> HubStatus:
        return self.call(self.hub.status)

    def segments(self) -> list[Segment]:
        return self.call(list, self.recorder.segments)

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "condition") -> None:
        """Poll ``predicate(self)`` until it holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; hub: {self.call(self.hub.summary)}")


def launch(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "launch.py"), *args], cwd=REPO,
                            stdout=kw.pop("stdout", subprocess.PIPE), stderr=kw.pop("stderr", subprocess.PIPE), **kw)


class LastCandidatePrior:
    """An LLM prior source that puts all its prior on the last candidate of every root."""

    net_s = 0.0

    def __init__(self, version: int = 7):
        self.version = version

    def prior(self, histories, observations, candidates):
        import numpy as np

        out = []
        for c in candidates:
            p = np.zeros(len(c), np.float32)
            p[-1] = 1.0
            out.append(p)
        return out


# ----------------------------------------------------------------------------- raw peers of a hub


def dealer(address: str, curve: CurveKeys | None = None, sndhwm: int | None = None) -> zmq.Socket:
    """A raw DEALER connected to ``address``, as an outside client (or an attacker) would make it.
    ``sndhwm=0``: it queues without limit, so only the hub's own caps bound what reaches the hub."""
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if sndhwm is not None:
        s.setsockopt(zmq.SNDHWM, sndhwm)
    if curve is not None:
        curve.make_client(s)
    s.connect(address)
    return s


class FakeHubRouter:
    """A ROUTER on a thread of the test that plays the hub's side of the segment socket as far as a
    test needs: a Hello is counted (``hellos``) and answered with Credit (``window``, ack -1) and a
    Welcome (``hub_id``, ``heartbeat_s``); any other message is answered with what :meth:`answer`
    returns (nothing here: a subclass says more). ``handover``: ROUTER_HANDOVER, so a reconnecting
    client keeps its identity. A subclass sets its own state, then calls :meth:`start`."""

    def __init__(self, address: str, hub_id: str = "fake", window: int = 4, heartbeat_s: float = 1.0,
                 handover: bool = False):
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if handover:
            self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.sock.bind(address)
        self.hub_id, self.window, self.heartbeat_s = hub_id, window, heartbeat_s
        self.hellos = 0
        self._run = True
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> FakeHubRouter:
        self._thread.start()
        return self

    def answer(self, msg: object) -> list[object]:
        """The messages to send back for ``msg`` (not a Hello), in order."""
        return []

    def _serve(self) -> None:
        while self._run:
            if not self.sock.poll(50):
                continue
            ident, data = self.sock.recv_multipart()
            msg = wire.decode(data)
            if isinstance(msg, wire.Hello):
                self.hellos += 1
                replies: list[object] = [wire.Credit(n=self.window, ack=-1),
                                         wire.Welcome(hub_id=self.hub_id, window=self.window, wm_version=0,
                                                      llm_version=0, heartbeat_s=self.heartbeat_s)]
            else:
                replies = self.answer(msg)
            for reply in replies:
                self.sock.send_multipart([ident, wire.encode(reply)])

    def close(self) -> None:
        self._run = False
        if self._thread.is_alive():
            self._thread.join()
        self.sock.close(0)


def recv_kind(sock: zmq.Socket, kind: type, timeout: float = 10.0):
    """The next message of type ``kind`` on ``sock`` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.poll(100):
            msg = wire.decode(sock.recv())
            if isinstance(msg, kind):
                return msg
    raise AssertionError(f"no {kind.__name__} within {timeout}s")


def wait_until(predicate, timeout: float, what: str, proc=None, log_file: Path | None = None) -> None:
    """Poll ``predicate()`` until it holds; give up early when ``proc`` has ended. On timeout the
    assertion names ``what`` and shows the end of ``log_file``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    tail = log_file.read_text()[-4000:] if log_file is not None and log_file.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")
