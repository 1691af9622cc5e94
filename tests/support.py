"""Test support: free ports, a hub in a background thread, collector processes."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio

from pzstream.config import Config, load_config
from pzstream.hub.ingest import LearnerHub
from pzstream.stream.transport import CurveKeys, free_base_port  # noqa: F401  (re-exported for tests)

REPO = Path(__file__).resolve().parent.parent
GAMES_DIR = Path(os.environ.get("PZSTREAM_GAMES_DIR", REPO.parent / "shared" / "games" / "jericho"))


def hub_config(address: str, *overrides: str) -> Config:
    return load_config(None, [f"hub.address={address}", f"collector.learner={address}", "hub.heartbeat_s=0.2", "hub.peer_timeout_heartbeats=10", "trainer.enabled=false", "ppo.enabled=false",
                              "hub.report_every_s=1", *overrides])


class HubThread:
    """A real LearnerHub serving on its own event loop in a thread, stoppable from the test."""

    def __init__(self, cfg: Config, curve: CurveKeys | None = None):
        self.hub = LearnerHub(cfg, curve)
        self._halt = threading.Event()
        self._ready = threading.Event()
        self.summary: dict | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            stop = anyio.Event()

            async def watch() -> None:
                await self.hub.ready.wait()
                self._ready.set()
                while not self._halt.is_set():
                    await anyio.sleep(0.02)
                stop.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                self.summary = await self.hub.serve(stop)
        try:
            anyio.run(main)
        except BaseException as e:  # surfaced by start()/stop()
            self.error = e
            self._ready.set()

    def start(self) -> "HubThread":
        self._thread.start()
        assert self._ready.wait(10), "hub did not start"
        if self.error:
            raise self.error
        return self

    def stop(self) -> dict:
        self._halt.set()
        self._thread.join(10)
        if self.error:
            raise self.error
        assert self.summary is not None
        return self.summary

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.hub):
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; hub: {self.hub.summary()}")


def launch(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "launch.py"), *args], cwd=REPO,
                            stdout=kw.pop("stdout", subprocess.PIPE), stderr=kw.pop("stderr", subprocess.PIPE), **kw)
