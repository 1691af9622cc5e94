"""The search server's LLM prior in a process of its own (``search_server.prior=process``).

A search server prices a batch (the LLM prior over its roots) and searches it (the world model and
the tree). In one process both stages are mostly Python on the host (prompt fitting, transformers'
modules, kernel launches, the tree's bookkeeping), so they take turns at one interpreter lock even
when they overlap in two threads. Here the prior is a ``--role prior`` server started beside the
search server on the same device, reached over an ipc socket in a private directory: the search
server's pricing thread only fits the prompts and waits on the socket, and the two stages really
run at once.

``PriorProcess`` starts the child (it dies with its parent), waits until it answers, restarts it if
it dies (the search server meanwhile searches with the world model's prior: ``RemotePrior`` answers
None), and stops it. The child follows the hub's LLM weights itself, as any prior server does, and
each answer carries the version it used.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path

from pzstream.config import Config
from pzstream.stream.transport import CurveKeys

log = logging.getLogger("pzstream.search_server")


def _child(cfg: Config, address: str, curve: CurveKeys | None, hub_address: str | None) -> None:
    import anyio
    import torch

    from pzstream.roles.lifecycle import die_with_parent, serve_until_stopped
    from pzstream.roles.prior_server import run_prior_server
    from pzstream.stream.logstream import setup_logging

    die_with_parent()
    torch.set_num_threads(cfg.search_server.threads)
    setup_logging("prior", "server", cfg.run.log_level, hub_address, curve)
    anyio.run(serve_until_stopped, lambda stop: run_prior_server(cfg, address, stop, curve, hub_address), None)


class PriorProcess:
    """A ``--role prior`` child on ``ipc://<private dir>/prior`` with the search server's config."""

    def __init__(self, cfg: Config, curve: CurveKeys | None, hub_address: str | None):
        self.cfg, self.curve, self.hub_address = cfg, curve, hub_address
        self._dir = Path(tempfile.mkdtemp(prefix="pzstream-prior-"))
        self.address = f"ipc://{self._dir}/prior"
        self.restarts = 0
        self._proc: mp.process.BaseProcess | None = None
        self.start()

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        self._proc = ctx.Process(target=_child, args=(self.cfg, self.address, self.curve, self.hub_address),
                                 name="pzstream-prior", daemon=True)
        self._proc.start()
        log.info("LLM prior in its own process (pid %d) on %s", self._proc.pid, self.address)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def wait_ready(self, ask, timeout_s: float) -> None:
        """Until ``ask()`` (one probe through the client) gets an answer; RuntimeError after ``timeout_s``
        or if the child exits first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"the LLM prior process exited with code {self._proc.exitcode if self._proc else None} "
                                   "before it answered (its log lines above say why)")
            if ask() is not None:
                return
        raise RuntimeError(f"the LLM prior process did not answer in {timeout_s:.0f} s")

    def restart_if_dead(self) -> bool:
        """Start the child again if it died; whether it had to."""
        if self.alive():
            return False
        code = self._proc.exitcode if self._proc is not None else None
        self.restarts += 1
        log.error("the LLM prior process exited (code %s); restarting it (restart %d); until it answers, batches "
                  "search with the world model's prior", code, self.restarts)
        self.start()
        return True

    def stop(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(15)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5)
        shutil.rmtree(self._dir, ignore_errors=True)
