"""The whole system for a while, as a user starts it: throughput of every part, versions reaching
collectors, GPU and CPU use sampled over the run.

    python bench/e2e.py [--quick] [--config gpu] [--minutes 10] [--out bench/results/gpu_e2e_h100.json] [key=value ...]

One ``launch.py --role all`` run (the config and overrides given; default the embedded
``config/debug.yaml``). While it runs, GPU utilisation and memory (``nvidia-smi``, every 2 s, where
there is one) and the load average are sampled. Reported: env steps/s (one move each) overall and
per collector, the search server's mean batch and ms per batch (when one ran), world-model
updates/s and samples/s, PPO episodes fired/ok/failed, the lowest world-model and LLM versions any
collector played with at the end, segments rejected. ``--quick``: 60 s on the embedded default.
``PZSTREAM_BENCH_SMOKE=1``: 25 s without the LLM. The last stdout line is one JSON object;
``--out`` also writes it to a file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.launched import run_all  # noqa: E402
from pzstream.stream.transport import free_base_port  # noqa: E402

SMOKE = os.environ.get("PZSTREAM_BENCH_SMOKE") == "1"


class Sampler:
    """GPU utilisation and memory (nvidia-smi) and the 1-minute load average, every ``every_s``."""

    def __init__(self, every_s: float = 2.0):
        self.every_s = every_s
        self.gpu: list[list[float]] = []   # per sample: [util %, memory MiB] of each GPU, flattened per GPU
        self.load: list[float] = []
        self._stop = threading.Event()
        self._smi = shutil.which("nvidia-smi")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.load.append(os.getloadavg()[0])
            if self._smi is None:
                continue
            try:
                out = subprocess.run([self._smi, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=10).stdout
                self.gpu.append([float(x) for line in out.strip().splitlines() for x in line.split(",")])
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def summary(self) -> dict[str, object]:
        gpus = len(self.gpu[0]) // 2 if self.gpu else 0
        util = [[s[2 * g] for s in self.gpu if len(s) == 2 * gpus] for g in range(gpus)]
        mem = [[s[2 * g + 1] for s in self.gpu if len(s) == 2 * gpus] for g in range(gpus)]
        mean = lambda xs: round(sum(xs) / len(xs), 1) if xs else None  # noqa: E731
        return {"gpu_util_mean": mean([u for per in util for u in per]),
                "gpu_util_mean_per_gpu": [mean(u) for u in util],
                "gpu_util_busy_share": round(sum(u > 0 for per in util for u in per) / max(1, sum(map(len, util))), 3)
                if gpus else None,
                "gpu_mem_max_mib": [max(m) if m else None for m in mem], "gpu_samples": len(self.gpu),
                "load_avg_mean": mean(self.load), "cpus": os.cpu_count()}


def gpu_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001 - no torch, no GPU name
        return "cpu"


def report(summary: dict, sampled: dict, minutes: float, batch_size: int) -> dict:
    elapsed = float(summary["elapsed_s"])
    collectors = max(1, int(summary["collectors_seen"]))
    readers = [r for r in summary.get("readers", {}).values() if "mean_batch" in r]
    search = readers[0] if readers else {}
    updates = int(summary["wm_updates"])
    return {
        "device": gpu_name(), "minutes": minutes, "collectors": collectors,
        "env_steps": summary["env_steps"], "env_steps_per_s": round(summary["env_steps"] / elapsed, 2),
        "moves_per_s": round(summary["env_steps"] / elapsed, 2),
        "moves_per_s_per_collector": round(summary["env_steps"] / elapsed / collectors, 3),
        "search_mean_batch": round(search["mean_batch"], 2) if search else None,
        "search_ms_per_batch": round(1000 * search["search_s"] / max(1.0, search["batches"]), 1) if search else None,
        "search_prior_share": round(search.get("prior_s", 0.0) / max(1e-9, search["search_s"]), 3) if search else None,
        "wm_updates": updates, "wm_updates_per_s": round(updates / elapsed, 3),
        "wm_samples_per_s": round(updates * batch_size / elapsed, 1),
        "ppo_episodes_fired": summary["ppo_episodes_fired"], "ppo_episodes_ok": summary["ppo_episodes_ok"],
        "ppo_episodes_failed": summary["ppo_episodes_failed"], "ppo_runtime": summary.get("ppo", {}).get("runtime"),
        "prompt_samples_queued": (summary.get("ppo", {}).get("queue") or {}).get("added"),
        "wm_version_published": summary["wm_version_published"], "llm_version_published": summary["llm_version_published"],
        "min_collector_wm_version": summary["min_collector_wm_version"],
        "min_collector_llm_version": summary["min_collector_llm_version"],
        "segments_rejected": summary["segments_rejected"], "rejected_by_reason": summary["rejected_by_reason"],
        "collectors_lost": summary["collectors_lost"],
        "valid_action_cache_hit_rate": summary.get("valid_action_cache_hit_rate"),
        "valid_action_share": {g: c.get("valid_action_share") for g, c in summary.get("per_game", {}).items()},
        "elapsed_s": elapsed, **sampled,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="60 s on the embedded default")
    ap.add_argument("--config", default=None, help="config file (default config/debug.yaml)")
    ap.add_argument("--minutes", type=float, default=None, help="run length (default 10)")
    ap.add_argument("--out", default=None, help="also write the JSON result here")
    ap.add_argument("overrides", nargs="*", help="config overrides")
    args = ap.parse_intermixed_args()
    minutes = args.minutes or (25 / 60 if SMOKE else 1.0 if args.quick else 10.0)
    overrides = (["llm.enabled=false", "ppo.enabled=false", "collector.segment_steps=5", "trainer.min_replay_steps=20"]
                 if SMOKE else []) + list(args.overrides)
    from pzstream.config import load_config

    cfg = load_config(args.config, overrides)
    batch_size = cfg.world_model().batch_size
    seconds = 60 * minutes
    with Sampler() as sampler:
        summary = run_all(["--max-seconds", str(seconds), *(["--config", args.config] if args.config else []),
                           f"run.name=e2e-{os.getpid()}", *overrides,
                           "--learner", f"tcp://127.0.0.1:{free_base_port()}"], seconds, "e2e")
    result = report(summary, sampler.summary(), minutes, batch_size)
    result["python"], result["config"] = platform.python_version(), args.config or "debug"
    result["games_per_collector"], result["num_simulations"] = cfg.collector.games, cfg.search.num_simulations
    result["collector_processes"] = cfg.collector.count  # "collectors" counts game instances (hello ids)
    rows = [("env steps/s", result["env_steps_per_s"]), ("moves/s per collector", result["moves_per_s_per_collector"]),
            ("search mean batch", result["search_mean_batch"]), ("search ms per batch", result["search_ms_per_batch"]),
            ("search prior share", result["search_prior_share"]), ("wm updates/s", result["wm_updates_per_s"]), ("wm samples/s", result["wm_samples_per_s"]),
            ("PPO episodes fired/ok/failed",
             f"{result['ppo_episodes_fired']}/{result['ppo_episodes_ok']}/{result['ppo_episodes_failed']}"),
            ("min collector wm/llm version", f"{result['min_collector_wm_version']}/{result['min_collector_llm_version']}"),
            ("GPU util mean %", result["gpu_util_mean"]), ("load average", result["load_avg_mean"]),
            ("segments rejected", result["segments_rejected"]),
            ("valid-action share / cache hit", f"{result['valid_action_share']} / {result['valid_action_cache_hit_rate']}")]
    for name, value in rows:
        print(f"{name:>30} {value}")
    line = json.dumps(result)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(line + "\n")
    print(line, flush=True)


if __name__ == "__main__":
    main()
