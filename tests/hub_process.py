"""A hub in a process of its own, for tests that measure its memory (tests/test_memory_caps.py).

    python tests/hub_process.py RUN_DIR WEIGHTS_BYTES [key=value ...]

Publishes WEIGHTS_BYTES of world-model weights (0: none) before it serves, prints ``READY`` when it
listens, ``TRAINER <pid>`` when its trainer (if the config enables one) has said it is ready, and on
SIGTERM prints its summary as one JSON line.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio


async def serve_until_stopped_printing(hub) -> None:
    """Serve ``hub`` until SIGTERM: print ``READY`` once it listens, then its summary as one JSON line."""
    from pzstream.roles.lifecycle import serve_until_stopped

    async def serve(stop: anyio.Event) -> dict[str, object]:
        async def say_ready() -> None:
            await hub.ready.wait()
            print("READY", flush=True)

        async with anyio.create_task_group() as tg:
            tg.start_soon(say_ready)
            summary = await hub.serve(stop)
            tg.cancel_scope.cancel()
        return summary

    summary = await serve_until_stopped(serve, None)
    print(json.dumps(summary, default=str), flush=True)


async def main(run_dir: Path, weights_bytes: int, overrides: list[str]) -> None:
    from pzstream.config import load_config
    from pzstream.hub.learner import LearnerHub
    from pzstream.roles.lifecycle import die_with_parent
    from pzstream.stream.logstream import setup_logging

    die_with_parent()
    cfg = load_config(None, overrides)
    setup_logging("learner", "hub", "WARNING", cfg.hub.address)
    hub = LearnerHub(cfg, run_dir=run_dir)
    if weights_bytes:
        await hub.publish("wm", os.urandom(weights_bytes))

    async def say_trainer_ready() -> None:
        while not (hub.trainer.attached and hub.trainer.helper is not None and hub.trainer.helper.pid):
            await anyio.sleep(0.05)
        print(f"TRAINER {hub.trainer.helper.pid}", flush=True)

    async with anyio.create_task_group() as tg:
        if cfg.trainer.enabled:
            tg.start_soon(say_trainer_ready)
        await serve_until_stopped_printing(hub)
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
