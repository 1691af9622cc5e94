"""Benchmark game stepping and valid-action cost: no cache, the cache, the cache with a time budget.

    python bench/env.py [--quick] [--games zork1,detective,...] [--episodes N] [--steps N]
                        [--modes uncached,cached,budget] [--budget-s 0.5] [--search-ms 0]

Policy: uniform random over valid_actions(); every episode resets with the same seed and
re-seeds the policy RNG, so the same action sequence is replayed and episodes 2.. revisit
states (that is what the cache is for). Modes: "uncached" uses ValidActionCache(capacity=0);
"cached" waits for every miss (what collectors did before the budget); "budget" computes
misses in the helper process and waits at most --budget-s, then plays with the fallback
candidates (so its moves, and the states it reaches, can differ from the other modes');
"prefetch" is "budget" that also queues the states after 3 randomly guessed candidates per
move (behind the moves' own states) while the stand-in search runs.
"over budget" counts moves whose valid actions were not there within --budget-s (in the
modes without a budget: took longer than it). --search-ms sleeps that long per move, standing
in for the search, during which the helper process keeps computing.
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
MODES = ("uncached", "cached", "budget", "prefetch")
PREFETCH_K = 3  # next states queued per move in the prefetch mode


def run_mode(spec: str, mode: str, episodes: int, steps: int, seed: int, budget_s: float,
             search_s: float, helpers: int = 1) -> dict:
    cache = ValidActionCache(capacity=0) if mode == "uncached" else ValidActionCache()
    game = open_game(spec, cache=cache, seed=seed,
                     valid_actions_budget_s=budget_s if mode in ("budget", "prefetch") else None,
                     valid_action_helpers=helpers)
    if hasattr(game, "wait_ready"):
        game.wait_ready()  # a collector opens its game seconds before its first move
    n, va_s, waits = 0, 0.0, []
    t_start = time.perf_counter()
    try:
        for _ in range(episodes):
            game.reset(seed=seed)
            rng, guess = random.Random(seed), random.Random(seed + 1)
            for _ in range(steps):
                t0 = time.perf_counter()
                acts = game.valid_actions()
                waits.append(time.perf_counter() - t0)
                if mode == "prefetch":  # a random policy has no likely move: guess PREFETCH_K of them
                    game.prefetch(guess.sample(acts, min(PREFETCH_K, len(acts))))
                if search_s:
                    time.sleep(search_s)
                res = game.step(rng.choice(acts))
                n += 1
                if res.done:
                    break
        total = time.perf_counter() - t_start
        va_s = sum(waits)
        st = game.cache_stats()
        worker = game.worker_stats() if hasattr(game, "worker_stats") else {}
    finally:
        game.close()
    waits.sort()
    return {"game": spec, "mode": mode, "steps": n,
            "total_s": total, "ms_per_step": 1000 * total / max(n, 1),
            "valid_action_ms_per_step": 1000 * va_s / max(n, 1),
            "valid_action_share": va_s / total if total else 0.0,
            "max_wait_ms": 1000 * waits[-1] if waits else 0.0,
            "p90_wait_ms": 1000 * waits[min(len(waits) - 1, int(0.9 * len(waits)))] if waits else 0.0,
            "over_budget": st.get("over_budget", 0.0), "over_budget_share": st.get("over_budget_share", 0.0),
            "fallbacks": st.get("fallbacks", 0.0), "fallback_room": st.get("fallback_room", 0.0),
            "late_fills": st.get("late_fills", 0.0),
            "worker_busy": worker.get("compute_s", 0.0) / total if total else 0.0,
            "hits": st["hits"], "misses": st["misses"], "exact_hits": st["exact_hits"],
            "world_hits": st["world_hits"], "hit_rate": st["hit_rate"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="zork1 + default game, 10 steps (<1 min)")
    ap.add_argument("--games", help="comma-separated specs (suite names, 'tw-default', paths)")
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--steps", type=int, help="steps per episode (default: per game)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--modes", default="uncached,cached,budget", help="comma-separated, of " + ", ".join(MODES))
    ap.add_argument("--budget-s", type=float, default=0.5, help="the budget mode's env.valid_actions_budget_s")
    ap.add_argument("--helpers", type=int, default=1, help="the budget modes' env.valid_action_helpers")
    ap.add_argument("--search-ms", type=float, default=0.0, help="a stand-in for the search: sleep per move")
    args = ap.parse_args()

    plan = dict(QUICK_GAMES if args.quick else FULL_GAMES)
    if args.games:
        plan = {g: plan.get(g, FULL_GAMES.get(g, 20)) for g in args.games.split(",") if g}
    if args.steps:
        plan = dict.fromkeys(plan, args.steps)
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        ap.error(f"unknown modes {sorted(unknown)}; known: {', '.join(MODES)}")
    if os.environ.get("PZSTREAM_BENCH_SMOKE") == "1":  # tests/test_benches.py: does it run at all
        plan, args.episodes = dict.fromkeys(plan, 3), 1
    ensure_spacy()  # load once, outside the timings

    rows, skipped = [], []
    for spec, steps in plan.items():
        try:
            for mode in modes:
                if mode in ("budget", "prefetch") and spec.startswith("tw-"):
                    continue  # TextWorld lists its own commands at once: nothing to budget
                rows.append(run_mode(spec, mode, args.episodes, steps, args.seed, args.budget_s,
                                     args.search_ms / 1000, args.helpers))
        except GameNotFound as exc:
            print(f"skipping {spec}: {exc}", file=sys.stderr)
            skipped.append(spec)

    print(f"{'game':<12} {'mode':<9} {'steps':>5} {'ms/step':>9} {'va ms/step':>10} {'va share':>8} "
          f"{'max wait ms':>11} {'over budget':>11} {'fallbacks':>9} {'late fills':>10} {'hit rate':>8}")
    for r in rows:
        print(f"{r['game']:<12} {r['mode']:<9} {r['steps']:>5} {r['ms_per_step']:>9.2f} "
              f"{r['valid_action_ms_per_step']:>10.2f} {r['valid_action_share']:>8.2f} {r['max_wait_ms']:>11.1f} "
              f"{r['over_budget_share']:>11.2f} {int(r['fallbacks']):>9} {int(r['late_fills']):>10} {r['hit_rate']:>8.2f}")

    def agg(mode: str) -> dict[str, float]:
        sel = [r for r in rows if r["mode"] == mode]
        steps = sum(r["steps"] for r in sel)
        lookups = sum(r["hits"] + r["misses"] for r in sel)
        return {"ms_per_step": 1000 * sum(r["total_s"] for r in sel) / max(steps, 1),
                "hit_rate": sum(r["hits"] for r in sel) / lookups if lookups else 0.0,
                "over_budget_share": sum(r["over_budget"] for r in sel) / lookups if lookups else 0.0}

    import jericho
    import textworld
    per_game: dict[str, dict] = {}
    for r in rows:
        g = per_game.setdefault(r["game"], {"steps": {}})
        m = r["mode"]
        g["steps"][m] = r["steps"]
        g[f"{m}_ms_per_step"] = round(r["ms_per_step"], 3)
        g[f"{m}_valid_action_ms_per_step"] = round(r["valid_action_ms_per_step"], 3)
        g[f"{m}_valid_action_share"] = round(r["valid_action_share"], 4)
        g[f"{m}_over_budget_share"] = round(r["over_budget_share"], 4)
        g[f"{m}_max_wait_ms"] = round(r["max_wait_ms"], 1)
        if m == "cached":
            g.update(hit_rate=round(r["hit_rate"], 4), exact_hits=r["exact_hits"], world_hits=r["world_hits"])
        if m in ("budget", "prefetch"):
            g.update({f"{m}_fallbacks": r["fallbacks"], f"{m}_fallback_room": r["fallback_room"],
                      f"{m}_late_fills": r["late_fills"], f"{m}_worker_busy": round(r["worker_busy"], 3),
                      f"{m}_hit_rate": round(r["hit_rate"], 4)})
    out: dict[str, object] = {}
    for m in modes:
        a = agg(m)
        out[f"{m}_ms_per_step"] = round(a["ms_per_step"], 3)
        out[f"{m}_over_budget_share"] = round(a["over_budget_share"], 4)
    if "cached" in modes:
        out["cache_hit_rate"] = round(agg("cached")["hit_rate"], 4)
    if "uncached" in modes and "cached" in modes and out["cached_ms_per_step"]:
        out["speedup"] = round(out["uncached_ms_per_step"] / out["cached_ms_per_step"], 2)
    if "budget" in modes and "cached" in modes:  # the Jericho games only: the budget mode skips TextWorld
        jer = [r for r in rows if not r["game"].startswith("tw-")]
        c = sum(r["total_s"] for r in jer if r["mode"] == "cached") / max(1, sum(r["steps"] for r in jer if r["mode"] == "cached"))
        b = sum(r["total_s"] for r in jer if r["mode"] == "budget") / max(1, sum(r["steps"] for r in jer if r["mode"] == "budget"))
        out["budget_speedup_over_cached"] = round(c / b, 2) if b else None
    print(json.dumps({
        **out, "budget_s": args.budget_s, "helpers": args.helpers, "search_ms": args.search_ms, "episodes": args.episodes,
        "seed": args.seed, "quick": args.quick, "modes": modes, "games": per_game, "skipped": skipped,
        "versions": {"python": platform.python_version(), "jericho": jericho.__version__,
                     "textworld": textworld.__version__},
    }))


if __name__ == "__main__":
    main()
