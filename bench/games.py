"""Several games per collector against one: env steps/s of the same number of game instances played
by one collector of G games, by G collectors of one game, and by one collector of one game.

    python bench/games.py [--quick] [--games 4] [--seconds 60] [--rounds 2] [--config debug] [key=value ...]

Each arm is one ``launch.py --role all`` run of ``--seconds`` (the world-model trainer and PPO off, so
what is measured is collection: the game, the valid actions, the search with the LLM prior where the
config has one):

- ``1x1``: one collector playing one game (the baseline);
- ``1xG``: one collector playing G instances (``collector.games=G``: their moves are one search batch,
  ``pzstream/move_batcher.py``);
- ``Gx1``: G collectors of one game each (G processes, each searching alone).

The arms run in turn, ``--rounds`` times, so load from other jobs drifts into all alike; a figure is the
median over rounds of env steps/s (the hub's env steps over its elapsed time, the collectors' start
included alike in every arm). The last stdout line is one JSON object (``steps_per_s`` per arm, ``batched_over_single`` =
1xG / 1x1, ``batched_over_processes`` = 1xG / Gx1). ``PZSTREAM_BENCH_SMOKE=1``: G=2, one round of 20 s.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.launched import run_all  # noqa: E402
from pzstream.stream.transport import free_base_port  # noqa: E402

SMOKE = os.environ.get("PZSTREAM_BENCH_SMOKE") == "1"
QUIET = ["trainer.enabled=false", "ppo.enabled=false", "run.log_level=WARNING"]


def arms(g: int) -> dict[str, list[str]]:
    return {"1x1": ["--collectors", "1"], f"1x{g}": ["--collectors", "1", f"collector.games={g}"],
            f"{g}x1": ["--collectors", str(g)]}


def one_run(name: str, extra: list[str], args) -> float:
    address = f"tcp://127.0.0.1:{free_base_port()}"
    summary = run_all(["--config", args.config, "--max-seconds", str(args.seconds), "--learner", address,
                       f"run.name=games-{name}", *QUIET, *extra, *args.overrides], args.seconds, name)
    return float(summary["steps_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="G=4, one round of 40 s")
    ap.add_argument("--games", type=int, default=None, help="G: game instances per arm (default 4)")
    ap.add_argument("--seconds", type=float, default=None, help="each run's wall time (default 60, quick 40)")
    ap.add_argument("--rounds", type=int, default=None, help="times every arm runs (default 2, quick 1)")
    ap.add_argument("--config", default="debug")
    ap.add_argument("overrides", nargs="*", help="config overrides for every arm")
    args = ap.parse_args()
    g = args.games or (2 if SMOKE else 4)
    args.seconds = args.seconds or (20 if SMOKE else 40 if args.quick else 60)
    rounds = args.rounds or (1 if SMOKE or args.quick else 2)
    plan = arms(g)
    got: dict[str, list[float]] = {name: [] for name in plan}
    for r in range(rounds):
        for name, extra in plan.items():
            got[name].append(one_run(name, extra, args))
            print(f"round {r + 1}/{rounds} {name}: {got[name][-1]:.2f} env steps/s", file=sys.stderr, flush=True)
    med = {name: round(statistics.median(v), 3) for name, v in got.items()}
    print(f"{'arm':>6} {'env steps/s (median)':>22} {'runs':>30}")
    for name, v in got.items():
        print(f"{name:>6} {med[name]:>22.2f} {', '.join(f'{x:.2f}' for x in v):>30}")
    batched, single, procs = med[f"1x{g}"], med["1x1"], med[f"{g}x1"]
    out = {"bench": "games", "games_per_collector": g, "seconds": args.seconds, "rounds": rounds, "config": args.config,
           "overrides": args.overrides, "steps_per_s": med, "runs": got,
           "batched_over_single": round(batched / single, 3) if single else None,
           "batched_over_processes": round(batched / procs, 3) if procs else None,
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "python": platform.python_version()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
