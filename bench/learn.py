"""Does the MCTS agent get better than random? Episode return over time, both agents in one run.

    python bench/learn.py [--quick] [--games default,zork1] [--seconds 300]

For each game, one ``launch.py --role all`` run: a hub training the world model continuously,
collector c0 planning with MCTS over the latest weights it has, collector c1 playing uniformly at
random, both on the same game at the same time (their segments both feed the trainer). Episode
returns come from the hub's per-collector record. The figure of merit compares the two agents'
episodes that ended in the second half of the run, after the world model has had time to learn.

The last stdout line is one JSON object (``game`` is the first game's, the headline).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pzstream.stream.transport import free_base_port  # noqa: E402


def run_game(game: str, seconds: float, extra: list[str]) -> dict:
    address = f"tcp://127.0.0.1:{free_base_port()}"
    cmd = [sys.executable, str(ROOT / "launch.py"), "--role", "all", "--learner", address, "--game", game,
           "--max-seconds", str(seconds), "--collectors", "2", "collector.policies=[mcts, random]",
           f"run.name=learn-{game}", "run.log_level=WARNING",
           # the world model against random; the LLM prior is measured by bench/llm.py and eval
           "llm.enabled=false", *extra]
    print(f"[{game}] {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 300)
    if out.returncode != 0:
        raise RuntimeError(f"{game}: launch.py exited {out.returncode}:\n{out.stderr[-3000:]}")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    summary["wall_s"] = time.monotonic() - t0
    return summary


def split_returns(series: list[list[float]], start: float) -> list[float]:
    return [r for t, r in series if t >= start]


def mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 3) if xs else None


def report(game: str, summary: dict, seconds: float) -> dict:
    returns = summary.get("episode_returns", {})
    by_policy = {v["policy"]: v for v in returns.values()}
    mcts, rand = by_policy.get("mcts", {}), by_policy.get("random", {})
    half = seconds / 2
    bins = 6
    print(f"\n{game}: episode return by time (mean of episodes ending in each window)")
    print(f"{'window (s)':>14} {'mcts':>10} {'n':>4} {'random':>10} {'n':>4}")
    for i in range(bins):
        lo, hi = i * seconds / bins, (i + 1) * seconds / bins
        m = [r for t, r in mcts.get("series", []) if lo <= t < hi]
        r = [x for t, x in rand.get("series", []) if lo <= t < hi]
        fmt = lambda xs: f"{sum(xs) / len(xs):10.2f}" if xs else f"{'-':>10}"  # noqa: E731
        print(f"{lo:6.0f}-{hi:<6.0f} {fmt(m)} {len(m):4d} {fmt(r)} {len(r):4d}")
    m2, r2 = split_returns(mcts.get("series", []), half), split_returns(rand.get("series", []), half)
    trainer = summary.get("trainer", {})
    print(f"second half: mcts {mean(m2)} over {len(m2)} episodes, random {mean(r2)} over {len(r2)} episodes; "
          f"wm updates {summary.get('wm_updates')}, published v{summary.get('wm_version_published')}, "
          f"collectors at v>={summary.get('min_collector_wm_version')}; steps {summary.get('env_steps')}")
    return {"game": game, "mcts_return": mean(m2), "random_return": mean(r2), "mcts_episodes": len(m2),
            "random_episodes": len(r2), "mcts_return_all": mcts.get("mean"), "random_return_all": rand.get("mean"),
            "wm_updates": summary.get("wm_updates"), "wm_version_published": summary.get("wm_version_published"),
            "env_steps": summary.get("env_steps"), "final_losses": {k: round(v, 4) for k, v in trainer.items() if k.startswith("loss/")},
            "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter runs (under 10 minutes in all)")
    ap.add_argument("--games", default="default,zork1", help="comma-separated; a missing suite game is skipped")
    ap.add_argument("--seconds", type=float, default=None, help="run length per game")
    ap.add_argument("overrides", nargs="*", help="config overrides passed to launch.py")
    args = ap.parse_args()
    games = [g for g in args.games.split(",") if g]
    per_game = args.seconds or (240.0 if args.quick else 600.0)
    results = []
    for i, game in enumerate(games):
        seconds = per_game if i == 0 else (per_game * 0.6 if args.quick else per_game)
        if game != "default":
            games_dir = Path(os.environ.get("PZSTREAM_GAMES_DIR", ROOT.parent / "shared" / "games" / "jericho"))
            if not any(games_dir.glob(f"{game}.z*")):
                print(f"[{game}] skipped: not found in {games_dir}", file=sys.stderr)
                continue
        results.append(report(game, run_game(game, seconds, args.overrides), seconds))
    head = results[0]
    print(json.dumps({"game": head["game"], "mcts_return": head["mcts_return"], "random_return": head["random_return"],
                      "episodes": {"mcts": head["mcts_episodes"], "random": head["random_episodes"]},
                      "games": results, "python": platform.python_version(), "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
