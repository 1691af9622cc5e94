"""The asynchronous schedule against PriorZero's alternating one: same machine, models and wall time.

    python bench/schedule.py [--quick] [--seconds S] [--config config/gpu.yaml] [--collect-steps K]
                             [--replay-ratio R] [--order async,alternating] [key=value ...]

Two ``launch.py --role all`` runs of S seconds each (the config and overrides the same):
  async        everything at once (``schedule.mode=async``, the design);
  alternating  PriorZero's turns, enforced by the hub (``schedule.mode=alternating``): collect K
               env steps with training paused, then M = K x R world-model updates with the
               collectors paused (R: updates per env step, UniZero's ``replay_ratio``, default
               0.25), then one PPO episode, repeat.
``--async-set KEY=VALUE`` overrides the async run only (its pace on a shared GPU, for example
``trainer.max_updates_per_s`` and ``ppo.min_interval_s``); the JSON records them as ``async_overrides``.
Each run reports env steps, world-model updates and PPO episodes (ok) per hour; the ratios are
async over alternating. Start-up (models loading, helpers spawning) is inside both runs alike.
``device`` names the GPU when ``search_server.device`` or ``llm.device`` is a CUDA device, else
``cpu``. ``--quick``: 60-second runs with the embedded default (the CI mode; no goal there).
``PZSTREAM_BENCH_SMOKE=1``: 25-second runs without the LLM, to check that the bench works.
The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.launched import run_all  # noqa: E402
from pzstream.stream.transport import free_base_port  # noqa: E402

SMOKE = os.environ.get("PZSTREAM_BENCH_SMOKE") == "1"
MODES = ("async", "alternating")


def run(mode: str, seconds: float, config: str | None, overrides: list[str], collect_steps: int,
        train_updates: int) -> dict:
    """One ``--role all`` run under ``mode``: its summary (the hub's last JSON line)."""
    address = f"tcp://127.0.0.1:{free_base_port()}"
    return run_all(["--max-seconds", str(seconds), *(["--config", config] if config else []),
                    f"run.name=schedule-{mode}-{os.getpid()}", "run.log_level=WARNING", f"schedule.mode={mode}",
                    f"schedule.collect_steps={collect_steps}", f"schedule.train_updates={train_updates}", *overrides,
                    "--learner", address], seconds, mode)


def per_hour(summary: dict) -> dict[str, float]:
    hours = max(1e-9, float(summary["elapsed_s"]) / 3600)
    return {"env_steps_per_h": round(summary["env_steps"] / hours, 1),
            "wm_updates_per_h": round(summary["wm_updates"] / hours, 1),
            "ppo_episodes_per_h": round(summary["ppo_episodes_ok"] / hours, 2)}


def device_name(config: str | None, overrides: list[str]) -> str:
    from pzstream.config import load_config

    cfg = load_config(config, overrides)
    devices = [cfg.search_server.device, cfg.llm.device, str(cfg.model.get("device", "cpu"))]
    if any(d.startswith("cuda") for d in devices):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name()
        return "cuda (not available)"
    return "cpu"


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="60-second runs on the embedded default (CI)")
    ap.add_argument("--seconds", type=float, default=None, help="wall time of each run (default 600)")
    ap.add_argument("--config", default=None, help="config file for both runs (default config/debug.yaml)")
    ap.add_argument("--collect-steps", type=int, default=None,
                    help="alternating: env steps per collect phase (default 200 with --quick, 2000 otherwise)")
    ap.add_argument("--replay-ratio", type=float, default=0.25, help="alternating: world-model updates per env step")
    ap.add_argument("--order", default="async,alternating", help="which run goes first")
    ap.add_argument("--async-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for the async run only, such as its pace where everything shares one "
                         "GPU: trainer.max_updates_per_s=4, ppo.min_interval_s=50 (repeatable)")
    ap.add_argument("overrides", nargs="*", help="config overrides for both runs")
    args = ap.parse_intermixed_args()
    seconds = args.seconds or (25.0 if SMOKE else 60.0 if args.quick else 600.0)
    collect = args.collect_steps or (50 if SMOKE else 200 if args.quick else 2000)
    updates = max(1, round(collect * args.replay_ratio))
    # short segments for both: a collector finishes the segment it is playing before it pauses
    overrides = ["collector.segment_steps=10", *args.overrides]
    if SMOKE:  # the smoke run checks that the bench works: small segments, an early first update
        overrides = ["collector.segment_steps=5", "trainer.min_replay_steps=20", "search.num_simulations=4",
                     "llm.enabled=false", "ppo.enabled=false", *overrides]
    order = [m.strip() for m in args.order.split(",")]
    if sorted(order) != sorted(MODES):
        sys.exit(f"error: --order must name {' and '.join(MODES)} once each, got {args.order!r}")
    only = {"async": args.async_set, "alternating": []}
    results = {m: run(m, seconds, args.config, overrides + only[m], collect, updates) for m in order}
    rates = {m: per_hour(results[m]) for m in MODES}
    a, b = rates["async"], rates["alternating"]
    print(f"{'schedule':>12} {'env steps/h':>12} {'wm updates/h':>13} {'PPO episodes/h':>15} {'cycles':>7}")
    for m in MODES:
        r, sched = rates[m], results[m].get("schedule", {})
        print(f"{m:>12} {r['env_steps_per_h']:>12.0f} {r['wm_updates_per_h']:>13.0f} {r['ppo_episodes_per_h']:>15.1f} "
              f"{sched.get('cycles', 0):>7}")
    result = {
        "async_env_steps_per_h": a["env_steps_per_h"], "alternating_env_steps_per_h": b["env_steps_per_h"],
        "env_ratio": ratio(a["env_steps_per_h"], b["env_steps_per_h"]),
        "async_wm_updates_per_h": a["wm_updates_per_h"], "alternating_wm_updates_per_h": b["wm_updates_per_h"],
        "wm_ratio": ratio(a["wm_updates_per_h"], b["wm_updates_per_h"]),
        "async_ppo_episodes_per_h": a["ppo_episodes_per_h"], "alternating_ppo_episodes_per_h": b["ppo_episodes_per_h"],
        "device": device_name(args.config, overrides), "seconds": seconds, "collect_steps": collect,
        "train_updates": updates, "async_overrides": args.async_set,
        "alternating_seconds_by_phase": results["alternating"].get("schedule", {}).get("seconds_by_phase", {}),
        "segments_rejected": {m: results[m]["segments_rejected"] for m in MODES},
        "python": platform.python_version(), "cpus": os.cpu_count(),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
