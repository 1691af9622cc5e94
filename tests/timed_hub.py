"""A hub in a process of its own that writes down when it accepts each segment (tests/test_stall.py).

    python tests/timed_hub.py RUN_DIR ACCEPT_LOG [key=value ...]

Serves with the helpers the config enables (the trainer, so weights are published while the
hub runs), appends ``<time.monotonic()> <collector id> <seq>`` to ACCEPT_LOG for every accepted
segment (the monotonic clock is the machine's, so a test compares it with its own), prints
``READY`` when it listens, and on SIGTERM prints its summary as one JSON line. Logs go to stderr.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

import anyio
from hub_process import serve_until_stopped_printing  # this folder is the script's sys.path[0]


class AcceptLog:
    """A hub part: one line per accepted segment, flushed at once (the test reads it while the hub runs)."""

    def __init__(self, out: TextIO):
        self.out = out

    def on_segment(self, accepted) -> None:
        h = accepted.segment.header
        self.out.write(f"{time.monotonic():.4f} {h.collector_id} {h.seq}\n")
        self.out.flush()


async def main(run_dir: Path, accept_log: Path, overrides: list[str]) -> None:
    from pzstream.config import load_config
    from pzstream.hub.learner import LearnerHub
    from pzstream.roles.lifecycle import die_with_parent
    from pzstream.stream.logstream import setup_logging

    die_with_parent()
    cfg = load_config(None, overrides)
    setup_logging("learner", "hub", "INFO", cfg.hub.address, stream=sys.stderr)
    with accept_log.open("a") as out:
        hub = LearnerHub(cfg, run_dir=run_dir, extra_parts=[AcceptLog(out)])
        await serve_until_stopped_printing(hub)


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
