"""Benchmark game stepping and valid-action cost, with and without the ValidActionCache.

    python bench/env.py [--quick] [--games zork1,detective,...] [--episodes N] [--steps N]

Policy: uniform random over valid_actions(); every episode resets with the same seed and
re-seeds the policy RNG, so the same action sequence is replayed and episodes 2.. revisit
states (that is what the cache is for). "uncached" uses ValidActionCache(capacity=0).
The last stdout line is one JSON object with the aggregate and per-game figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pzstream.env import GameNotFound, ValidActionCache, ensure_spacy, open_game  # noqa: E402

FULL_GAMES = {"zork1": 20, "detective": 20, "omniquest": 6, "acorncourt": 4, "tw-default": 20}
QUICK_GAMES = {"zork1": 10, "tw-default": 10}


def run_mode(spec: str, cached: bool, episodes: int, steps: int, seed: int) -> dict:
    cache = ValidActionCache() if cached else ValidActionCache(capacity=0)
    game = open_game(spec, cache=cache, seed=seed)
    n = 0
    va_s = 0.0
    t_start = time.perf_counter()
    try:
        for _ in range(episodes):
            game.reset(seed=seed)
            rng = random.Random(seed)
            for _ in range(steps):
                t0 = time.perf_counter()
                acts = game.valid_actions()
                va_s += time.perf_counter() - t0
                res = game.step(rng.choice(acts))
                n += 1
                if res.done:
                    break
        total = time.perf_counter() - t_start
        st = game.cache_stats()
    finally:
        game.close()
    return {"game": spec, "mode": "cached" if cached else "uncached", "steps": n,
            "total_s": total, "ms_per_step": 1000 * total / max(n, 1),
            "valid_action_ms_per_step": 1000 * va_s / max(n, 1),
            "hits": st["hits"], "misses": st["misses"], "exact_hits": st["exact_hits"],
            "world_hits": st["world_hits"], "hit_rate": st["hit_rate"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="zork1 + default game, 10 steps (<1 min)")
    ap.add_argument("--games", help="comma-separated specs (suite names, 'tw-default', paths)")
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--steps", type=int, help="steps per episode (default: per game)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    plan = dict(QUICK_GAMES if args.quick else FULL_GAMES)
    if args.games:
        plan = {g: plan.get(g, FULL_GAMES.get(g, 20)) for g in args.games.split(",") if g}
    if args.steps:
        plan = dict.fromkeys(plan, args.steps)
    if os.environ.get("PZSTREAM_BENCH_SMOKE") == "1":  # tests/test_benches.py: does it run at all
        plan, args.episodes = dict.fromkeys(plan, 3), 1
    ensure_spacy()  # load once, outside the timings

    rows, skipped = [], []
    for spec, steps in plan.items():
        try:
            for cached in (False, True):
                rows.append(run_mode(spec, cached, args.episodes, steps, args.seed))
        except GameNotFound as exc:
            print(f"skipping {spec}: {exc}", file=sys.stderr)
            skipped.append(spec)

    print(f"{'game':<12} {'mode':<9} {'steps':>5} {'ms/step':>9} {'va ms/step':>10} {'hit rate':>8}")
    for r in rows:
        print(f"{r['game']:<12} {r['mode']:<9} {r['steps']:>5} {r['ms_per_step']:>9.2f} "
              f"{r['valid_action_ms_per_step']:>10.2f} {r['hit_rate']:>8.2f}")

    def agg(mode: str) -> tuple[float, float]:
        sel = [r for r in rows if r["mode"] == mode]
        steps = sum(r["steps"] for r in sel)
        lookups = sum(r["hits"] + r["misses"] for r in sel)
        return (1000 * sum(r["total_s"] for r in sel) / max(steps, 1),
                sum(r["hits"] for r in sel) / lookups if lookups else 0.0)

    import jericho
    import textworld
    cached_ms, hit_rate = agg("cached")
    uncached_ms, _ = agg("uncached")
    per_game = {}
    for r in rows:
        g = per_game.setdefault(r["game"], {})
        g[f"{r['mode']}_ms_per_step"] = round(r["ms_per_step"], 3)
        g[f"{r['mode']}_valid_action_ms_per_step"] = round(r["valid_action_ms_per_step"], 3)
        g["steps"] = r["steps"]
        if r["mode"] == "cached":
            g.update(hit_rate=round(r["hit_rate"], 4), exact_hits=r["exact_hits"], world_hits=r["world_hits"])
    print(json.dumps({
        "cached_ms_per_step": round(cached_ms, 3), "uncached_ms_per_step": round(uncached_ms, 3),
        "speedup": round(uncached_ms / cached_ms, 2) if cached_ms else None,
        "cache_hit_rate": round(hit_rate, 4), "episodes": args.episodes, "seed": args.seed,
        "quick": args.quick, "games": per_game, "skipped": skipped,
        "versions": {"python": platform.python_version(), "jericho": jericho.__version__,
                     "textworld": textworld.__version__},
    }))


if __name__ == "__main__":
    main()
