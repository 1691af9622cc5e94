"""Does the MCTS agent get better than random? Episode return over time, both agents in one run.

    python bench/learn.py [--quick] [--games default,zork1,path/to/story.z5] [--seconds 300] [key=value ...]

For each game, one ``launch.py --role all`` run: a hub training the world model continuously,
collector c0 planning with MCTS over the latest weights it has, collector c1 playing uniformly at
random, both on the same game at the same time (their segments both feed the trainer). Episode
returns come from the hub's per-collector record. The figure of merit compares the two agents'
episodes that ended in the second half of the run, after the world model has had time to learn.

The last stdout line is one JSON object (``game`` is the first game's, the headline).
``hub.address=tcp://HOST:PORT`` among the overrides places the hub there (default: a free
loopback port). ``PZSTREAM_BENCH_SMOKE=1`` runs one 25-second game, to check that the bench works.
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
from pzstream.env.sources import DEFAULT_SPECS, GameNotFound, resolve_story_file  # noqa: E402
from pzstream.stream.transport import free_base_port  # noqa: E402

SMOKE = os.environ.get("PZSTREAM_BENCH_SMOKE") == "1"
# small segments and an early first update, so a 25-second run shows training and planning
SMOKE_OVERRIDES = ["collector.segment_steps=5", "trainer.min_replay_steps=20", "trainer.publish_every=5",
                   "search.num_simulations=4", "collector.max_episode_steps=20"]


def hub_address(overrides: list[str]) -> str:
    """The hub's address: ``hub.address=...`` where the overrides give one, else a free loopback port."""
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("hub.address=")]
    return given[-1] if given else f"tcp://127.0.0.1:{free_base_port()}"


def game_label(game: str) -> str:
    """A run name for a game spec: a story-file path becomes its stem (a name with '/' is a nested path)."""
    return game if game in DEFAULT_SPECS else Path(game).stem


def run_game(game: str, seconds: float, extra: list[str]) -> dict:
    address = hub_address(extra)
    # --learner after the overrides: launch.py sets hub.address and collector.learner from it, so both agree
    summary = run_all(["--game", game, "--max-seconds", str(seconds), "--collectors", "2", "collector.policies=[mcts, random]",
                       f"run.name=learn-{game_label(game)}", "run.log_level=WARNING",
                       # the world model against random; the LLM prior is measured by bench/llm.py and eval, and
                       # PPO needs the LLM (ppo.enabled needs llm.enabled)
                       "llm.enabled=false", "ppo.enabled=false", *extra, "--learner", address], seconds, game)
    summary["hub_address"] = address
    return summary


def split_returns(series: list[list[float]], start: float) -> list[float]:
    return [x[1] for x in series if x[0] >= start]


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
        m = [x[1] for x in mcts.get("series", []) if lo <= x[0] < hi]
        r = [x[1] for x in rand.get("series", []) if lo <= x[0] < hi]
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
            "env_steps": summary.get("env_steps"), "hub_address": summary.get("hub_address"), "final_losses": {k: round(v, 4) for k, v in trainer.items() if k.startswith("loss/")},
            "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="one 60-second run on the default game (RESULTS.md's figures: --seconds 240 --games default,zork1)")
    ap.add_argument("--games", default=None, help="comma-separated; a missing suite game is skipped "
                                                  "(default: default,zork1; --quick: default)")
    ap.add_argument("--seconds", type=float, default=None, help="run length per game")
    ap.add_argument("overrides", nargs="*", help="config overrides passed to launch.py")
    args = ap.parse_intermixed_args()
    games = [g for g in (args.games or ("default" if args.quick else "default,zork1")).split(",") if g]
    overrides = list(args.overrides)
    if SMOKE:
        games, overrides = games[:1], SMOKE_OVERRIDES + overrides
    per_game = args.seconds or (25.0 if SMOKE else 60.0 if args.quick else 600.0)
    results = []
    for i, game in enumerate(games):
        seconds = per_game if i == 0 else (per_game * 0.6 if args.quick else per_game)
        if game not in DEFAULT_SPECS:
            try:
                resolve_story_file(game)  # the rule launch.py follows: a suite name or a story-file path
            except GameNotFound as e:
                if os.sep in game or Path(game).suffix:  # a path the user named: a typo, not a missing suite game
                    sys.exit(f"error: {e}")
                print(f"[{game}] skipped: {e}", file=sys.stderr)
                continue
        results.append(report(game, run_game(game, seconds, overrides), seconds))
    if not results:
        sys.exit(f"error: none of the games {games} was found")
    head = results[0]
    print(json.dumps({"game": head["game"], "mcts_return": head["mcts_return"], "random_return": head["random_return"],
                      "episodes": {"mcts": head["mcts_episodes"], "random": head["random_episodes"]},
                      "games": results, "python": platform.python_version(), "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
