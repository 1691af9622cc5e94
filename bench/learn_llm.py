"""Does the agent learn faster with the LLM prior? The same run with and without it, same wall time.

    python bench/learn_llm.py [--quick] [--config gpu] [--games zork1,detective] [--minutes 4]
                              [--collectors N] [--plot FILE.png] [--out FILE.json] [key=value ...]

Two ``launch.py --role all`` runs, one after the other, of the same config, games, seeds and wall
time: ``with_llm`` (the config's LLM prior at the search root, and its PPO episodes where the config
has them) and ``without_llm`` (``llm.enabled=false ppo.enabled=false``: the world model's prior
alone). ``--games a,b`` deals the games round-robin over the collectors. Every finished episode's
return is recorded by the hub with its game's env steps at that moment, so each run gives, per
game, the normalised return (return / the game's max score) against env steps.

Per arm and game: env steps, episodes, and ``score`` = the mean normalised return of the episodes
that ended in the second half of that game's env steps (after the models had time to learn); the
headline ``score_with_llm`` / ``score_without_llm`` is the mean over games. Each collector plays its
own seed; the seeds are those of the config (``collector.seed`` + collector index) in both arms.
``--plot`` draws both arms' curves (a moving mean over episodes), one panel per game. The last
stdout line is one JSON object (keys: device, games, minutes, env_steps_with_llm,
env_steps_without_llm, score_with_llm, score_without_llm, and per game). ``PZSTREAM_BENCH_SMOKE=1``:
one game, two 45-second arms on the debug config.
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

import numpy as np  # noqa: E402

from bench.launched import run_all  # noqa: E402
from bench.learn import SMOKE_OVERRIDES, hub_address  # noqa: E402

SMOKE = os.environ.get("PZSTREAM_BENCH_SMOKE") == "1"
ARMS = {"with_llm": [], "without_llm": ["llm.enabled=false", "ppo.enabled=false"]}


def game_of(cid: str, games: list[str]) -> str:
    """``--role all``'s collector ``c{i}`` plays ``games[i % len(games)]`` (launch.collector_game)."""
    return games[int(cid.lstrip("c")) % len(games)]


def max_scores(games: list[str], overrides: list[str], config: str) -> dict[str, int]:
    from pzstream.config import load_config
    from pzstream.env import open_game

    cfg = load_config(config, overrides)
    out = {}
    for g in games:
        game = open_game(g, games_dir=cfg.env.games_dir, cache_dir=cfg.env.cache_dir)
        out[g] = int(game.max_score) or 1  # a game without a max score: returns as they are
        game.close()
    return out


def curves(summary: dict, games: list[str], top: dict[str, int]) -> dict[str, list[tuple[int, float]]]:
    """Per game: (game env steps at the episode's end, normalised return), in env-step order."""
    out: dict[str, list[tuple[int, float]]] = {g: [] for g in games}
    for cid, rec in summary.get("episode_returns", {}).items():
        g = game_of(cid, games)
        out[g] += [(int(x[2]), float(x[1]) / top[g]) for x in rec.get("series", []) if len(x) >= 3]
    return {g: sorted(v) for g, v in out.items()}


def arm_figures(summary: dict, games: list[str], top: dict[str, int]) -> dict:
    per_game = {}
    for g, points in curves(summary, games, top).items():
        steps = int(summary.get("per_game", {}).get(g, {}).get("steps", 0))
        late = [y for x, y in points if x >= steps / 2]
        per_game[g] = {"env_steps": steps, "episodes": len(points),
                       "score": round(float(np.mean(late)), 4) if late else None,
                       "score_all": round(float(np.mean([y for _, y in points])), 4) if points else None,
                       "curve": points}
    scored = [v["score"] for v in per_game.values() if v["score"] is not None]
    return {"env_steps": int(summary.get("env_steps", 0)), "steps_per_s": summary.get("steps_per_s"),
            "score": round(float(np.mean(scored)), 4) if scored else None, "per_game": per_game,
            "wm_updates": summary.get("wm_updates"), "wm_version": summary.get("wm_version_published"),
            "llm_version": summary.get("llm_version_published"), "ppo_episodes_ok": summary.get("ppo_episodes_ok"),
            "segments_rejected": summary.get("segments_rejected")}


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def moving_mean(points: list[tuple[int, float]], k: int = 10) -> list[tuple[float, float]]:
    ys = [y for _, y in points]
    return [(float(points[i][0]), float(np.mean(ys[max(0, i - k + 1):i + 1]))) for i in range(len(points))]


def device_name(cfg) -> str:
    import torch

    if "cuda" in (cfg.search_server.device + cfg.llm.device) and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one game, 2 minutes per arm")
    ap.add_argument("--config", default=None, help="base config (default gpu; debug in smoke)")
    ap.add_argument("--games", default=None, help="comma-separated games (default zork1,detective)")
    ap.add_argument("--minutes", type=float, default=None, help="wall time of each arm (default 4)")
    ap.add_argument("--collectors", type=int, default=None, help="collectors per run (default: the config's)")
    ap.add_argument("--plot", default=None, help="write both arms' curves to this PNG")
    ap.add_argument("--out", default=None, help="also write the JSON to this file")
    ap.add_argument("--arms", default="with_llm,without_llm", help="the arms to run now (default both)")
    ap.add_argument("--reuse", default=None, help="take the other arms from this earlier JSON of the same games, "
                                                  "minutes and config (runs split over calls)")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = ap.parse_args()
    config = args.config or ("debug" if SMOKE else "gpu")
    games = (args.games or ("zork1" if SMOKE or args.quick else "zork1,detective")).split(",")
    minutes = args.minutes or (0.75 if SMOKE else 2.0 if args.quick else 4.0)
    overrides = [*(SMOKE_OVERRIDES if SMOKE else []), *args.overrides]

    from pzstream.config import load_config

    cfg = load_config(config, overrides)  # a bad key stops here
    top = max_scores(games, overrides, config)
    arms = {}
    if args.reuse:
        earlier = json.loads(Path(args.reuse).read_text())
        same = {k: earlier.get(k) for k in ("games", "minutes", "config")}
        if same != {"games": games, "minutes": minutes, "config": config}:
            sys.exit(f"learn_llm: error: {args.reuse} was run with {same}, not games={games} minutes={minutes} "
                     f"config={config}")
        arms.update(earlier["arms"])
    todo = [a for a in args.arms.split(",") if a]
    if unknown := [a for a in todo if a not in ARMS]:
        sys.exit(f"learn_llm: error: unknown arm(s) {unknown}; the arms are {list(ARMS)}")
    for arm, extra in ARMS.items():
        if arm not in todo:
            continue
        run = ["--config", config, "--game", ",".join(games), "--max-seconds", str(minutes * 60),
               f"run.name=learn-llm-{arm}", "run.log_level=WARNING", *overrides, *extra, "--learner",
               hub_address(overrides)]
        if args.collectors:
            run += ["--collectors", str(args.collectors)]
        arms[arm] = arm_figures(run_all(run, minutes * 60, arm), games, top)
    if missing := [a for a in ARMS if a not in arms]:  # one arm now, the other in a later call (--reuse)
        print(f"learn_llm: no figures yet for {missing}; pass this JSON to --reuse when running them",
              file=sys.stderr)
    empty = {"env_steps": None, "score": None, "per_game": {g: {"env_steps": 0, "episodes": 0, "score": None,
                                                                "score_all": None, "curve": []} for g in games}}
    w, wo = arms.get("with_llm", empty), arms.get("without_llm", empty)
    print(f"{'game':<14}{'arm':<13}{'env steps':>10}{'episodes':>10}{'score (late)':>14}{'score (all)':>13}")
    for g in games:
        for arm in ARMS:
            v = arms.get(arm, empty)["per_game"][g]
            print(f"{g:<14}{arm:<13}{v['env_steps']:>10}{v['episodes']:>10}{fmt(v['score']):>14}{fmt(v['score_all']):>13}")
    if args.plot:
        from bench.plots import Panel, write_png

        panels = [Panel(f"{g}: return / max score", {arm: moving_mean(a["per_game"][g]["curve"]) for arm, a in arms.items()},
                        xlabel="env steps of this game") for g in games]
        write_png(args.plot, f"with vs without the LLM prior, {minutes:g} min each ({cfg.llm.model})", panels)
    import torch
    import transformers

    out = {"device": device_name(cfg), "games": games, "minutes": minutes, "config": config,
           "llm_model": cfg.llm.model, "env_steps_with_llm": w["env_steps"], "env_steps_without_llm": wo["env_steps"],
           "score_with_llm": w["score"], "score_without_llm": wo["score"],
           "arms": arms, "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                      "python": platform.python_version()}}
    line = json.dumps(out)
    if args.out:
        Path(args.out).write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
