"""Does the LLM prior make the agent play better? Four policies on the same games, seeds and simulations.

    python bench/play.py [--quick] [--games zork1,detective] [--seeds 3] [--steps 100]
                         [--train-seconds 120] [--workers N] [--config debug] [key=value ...]

Policies, each playing one episode of at most ``--steps`` moves per game and seed:

- ``random``: uniform over the game's valid actions;
- ``wm``:     MCTS over the world model, root prior = the world model's policy;
- ``wm_llm``: the same search with the LLM's root prior mixed in (``llm.mix``, ``llm.fixed_weight``);
- ``llm``:    the LLM alone, an action drawn from its prior.

Every policy explores as a collector does (root Dirichlet noise, visits sampled at the search's
temperature; the LLM alone samples from its prior), so seeds give different games: an evaluation
without noise repeats one trajectory whatever the seed. For each game and seed all four start from
the same seeds (torch, numpy, the game's reset seed, the search's generator).

Two phases. ``untrained``: the world model as every process builds it before training. ``trained``:
one world-model training run per game (``launch.py --role all`` with the LLM off, ``--train-seconds``
long, its collectors playing MCTS), then ``wm`` and ``wm_llm`` again with those weights (``random``
and ``llm`` do not read the world model and are not replayed). The score of an episode is the game's
score at its end; normalised = score / the game's max score; the headline is the mean of the
per-game normalised means. Goal of issue 21: ``wm_llm`` ahead of ``wm`` on that mean and on most
games, in both phases.

The LLM is ``llm.model`` (default here ``smollm2-135m-instruct``, the packaged real model); ``--device
cuda`` places it and the world model on the GPU. ``--workers N`` plays games in N processes. The last
stdout line is one JSON object. ``PZSTREAM_BENCH_SMOKE=1`` plays one short game with one seed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.launched import run_all  # noqa: E402

POLICIES = ("random", "wm", "wm_llm", "llm")
WM_POLICIES = ("wm", "wm_llm")
SMOKE = os.environ.get("PZSTREAM_BENCH_SMOKE") == "1"
DEFAULT_GAMES = "zork1,detective,balances,zork3"
DEFAULT_MODEL = "smollm2-135m-instruct"


class SampledLlm:
    """The LLM alone, exploring: an action drawn from its prior (``agent.LlmPolicy`` plays its argmax)."""

    name = "llm"
    wm_version = 0

    def __init__(self, prior, seed: int):
        self.prior_source = prior
        self.rng = np.random.default_rng(seed)
        self.net_s = 0.0

    @property
    def llm_version(self) -> int:
        return self.prior_source.version

    def act(self, history, observation: str, valid: list[str]):
        from pzstream.agent import Move

        probs = np.asarray(self.prior_source.prior([history], [observation], [valid])[0], np.float64)
        probs = probs / probs.sum()
        i = int(self.rng.choice(len(valid), p=probs))
        return Move(i, probs.astype(np.float32), float("nan"), probs.astype(np.float32))


def make_policy(name: str, cfg, wm, wm_version: int, prior, seed: int):
    from pzstream.agent import RandomPolicy, mcts_policy

    if name == "random":
        return RandomPolicy(seed)
    if name == "llm":
        return SampledLlm(prior, seed)
    policy = mcts_policy(cfg, seed, prior if name == "wm_llm" else None, device=cfg.search_server.device)
    policy.offer(wm, wm_version)
    return policy


def play_episode(cfg, game_name: str, policy, seed: int, steps: int) -> dict:
    """One episode of at most ``steps`` moves: final score, the game's max score, moves, seconds."""
    from pzstream.agent import GamePlayer
    from pzstream.env import open_game

    game = open_game(game_name, games_dir=cfg.env.games_dir, cache_dir=cfg.env.cache_dir)
    player = GamePlayer(game, policy, "play", segment_steps=steps, max_episode_steps=steps, seed=seed)
    t = time.monotonic()
    stop = threading.Event()
    while player.stats.episodes < 1:
        player.play_segment(stop)
    max_score = int(game.max_score)
    game.close()
    return {"score": int(player.stats.scores[0]), "max_score": max_score, "moves": player.stats.env_steps,
            "seconds": round(time.monotonic() - t, 2)}


def load_world_model(cfg, weights_dir: Path | None):
    """(world model, version): the newest published weights in ``weights_dir``, else the untrained one."""
    from pzstream.model.world_model import load_weights_bytes, untrained_world_model
    from pzstream.stream.weights_client import WeightsClient

    wm = untrained_world_model(cfg.world_model()).eval()
    if weights_dir is None:
        return wm, 0
    client = WeightsClient({"wm": lambda data, _v: load_weights_bytes(wm, data)}, who="bench-play")
    version = client.load_mirror(weights_dir).get("wm", 0)
    if client.stats.rejected or version == 0:
        raise RuntimeError(f"no usable world-model weights in {weights_dir}: {client.stats.errors}")
    return wm, version


def play_game(job: dict) -> dict:
    """Every policy of ``job['policies']`` on one game, ``job['seeds']`` episodes each (one process)."""
    import torch

    from pzstream.config import load_config
    from pzstream.llm.factory import LocalPrior
    from pzstream.roles.evaluate import seed_everything

    torch.set_num_threads(1)
    cfg = load_config(job["config"], job["overrides"])
    wm, wm_version = load_world_model(cfg, Path(job["weights"]) if job["weights"] else None)
    prior = LocalPrior(cfg.llm) if {"wm_llm", "llm"} & set(job["policies"]) else None
    out: dict[str, list[dict]] = {}
    for name in job["policies"]:  # usually one: jobs are (game, policy) pairs, so processes share the work
        out[name] = []
        for s in range(job["seeds"]):
            seed = 1000 + s
            seed_everything(seed)
            policy = make_policy(name, cfg, wm, wm_version, prior, seed)
            ep = play_episode(cfg, job["game"], policy, seed, job["steps"])
            ep["prior_errors"] = int(getattr(policy, "prior_errors", 0))
            out[name].append(ep)
            print(f"[{job['phase']}] {job['game']} {name} seed {seed}: score {ep['score']}/{ep['max_score']} "
                  f"in {ep['moves']} moves, {ep['seconds']:.0f} s", file=sys.stderr, flush=True)
    return {"game": job["game"], "phase": job["phase"], "wm_version": wm_version, "episodes": out}


def train_world_model(game: str, seconds: float, config: str, overrides: list[str]) -> Path:
    """A real training run (hub, trainer, MCTS collectors; LLM and PPO off): its weights directory."""
    from bench.learn import game_label, hub_address

    name = f"play-train-{game_label(game)}"
    summary = run_all(["--config", config, "--game", game, "--max-seconds", str(seconds), "--collectors", "2",
                       f"run.name={name}", "run.log_level=WARNING", "llm.enabled=false", "ppo.enabled=false",
                       "search_server.start=never",
                       *[o for o in overrides if not o.startswith(("llm.", "ppo."))], "--learner", hub_address(overrides)],
                      seconds, f"train {game}")
    wm = summary.get("wm_version_published")
    print(f"[train] {game}: {summary.get('env_steps')} env steps, world model v{wm} published", file=sys.stderr,
          flush=True)
    return ROOT / "runs" / name / "weights"


def summarise(results: list[dict], games: list[str], policies: tuple[str, ...]) -> dict:
    """Per policy: mean score and mean normalised score per game, the mean over games, and
    how many games ``wm_llm`` leads ``wm`` on (ties are not leads)."""
    score: dict[str, dict[str, float]] = {p: {} for p in policies}
    norm: dict[str, dict[str, float]] = {p: {} for p in policies}
    for r in results:
        for p, eps in r["episodes"].items():
            score[p][r["game"]] = round(float(np.mean([e["score"] for e in eps])), 3)
            norm[p][r["game"]] = round(float(np.mean([e["score"] / e["max_score"] if e["max_score"] > 0 else 0.0
                                                      for e in eps])), 4)
    out = {"score": score, "norm": norm,
           "norm_mean": {p: round(float(np.mean([norm[p][g] for g in games])), 4) for p in policies}}
    if "wm" in policies and "wm_llm" in policies:
        out["wm_llm_leads_on"] = sum(norm["wm_llm"][g] > norm["wm"][g] for g in games)
        out["wm_llm_ahead_on_mean"] = out["norm_mean"]["wm_llm"] > out["norm_mean"]["wm"]
    return out


def table(phase: str, s: dict, games: list[str], policies: tuple[str, ...]) -> str:
    header = ["game"] + [f"{p}" for p in policies]
    rows = [[g] + [f"{s['score'][p][g]:.1f} ({s['norm'][p][g]:.3f})" for p in policies] for g in games]
    rows.append(["mean normalised"] + [f"{s['norm_mean'][p]:.4f}" for p in policies])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"{phase}: mean score (normalised) per game"]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
              for r in [header, *rows]]
    return "\n".join(lines)


def run_jobs(jobs: list[dict], workers: int) -> list[dict]:
    if workers <= 1:
        return [play_game(j) for j in jobs]
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        return list(ex.map(play_game, jobs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="two games, two seeds, 40 moves, 60 s of training")
    ap.add_argument("--games", default=None, help=f"comma-separated game specs (default {DEFAULT_GAMES})")
    ap.add_argument("--seeds", type=int, default=None, help="episodes per game and policy (default 3)")
    ap.add_argument("--steps", type=int, default=None, help="moves per episode (default 100)")
    ap.add_argument("--train-seconds", type=float, default=None, help="world-model training per game (default 120; "
                                                                        "0 = untrained phase only)")
    ap.add_argument("--workers", type=int, default=1, help="games played in parallel processes")
    ap.add_argument("--config", default="debug", help="base config (default debug)")
    ap.add_argument("--device", default="cpu", help="where the LLM and the search run (cpu, cuda)")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. llm.model=tiny)")
    args = ap.parse_args()
    quick = args.quick or SMOKE
    games = (args.games or ("zork1" if SMOKE else "zork1,detective" if quick else DEFAULT_GAMES)).split(",")
    seeds = args.seeds or (1 if SMOKE else 2 if quick else 3)
    steps = args.steps or (8 if SMOKE else 40 if quick else 100)
    train_s = args.train_seconds if args.train_seconds is not None else (25 if SMOKE else 60 if quick else 120)
    overrides = [f"llm.model={DEFAULT_MODEL}", f"llm.device={args.device}", f"search_server.device={args.device}",
                 *args.overrides]

    from pzstream.config import load_config

    cfg = load_config(args.config, overrides)  # a bad key stops here, before anything runs
    t0 = time.monotonic()
    base = dict(config=args.config, overrides=overrides, seeds=seeds, steps=steps)
    untrained = run_jobs([dict(base, game=g, phase="untrained", weights=None, policies=(p,))
                          for g in games for p in POLICIES], args.workers)
    phases = {"untrained": summarise(untrained, games, POLICIES)}
    print(table("untrained", phases["untrained"], games, POLICIES))
    if train_s > 0:
        with ThreadPoolExecutor(max(1, min(len(games), args.workers // 4))) as ex:  # a run is ~4 processes
            weights = dict(zip(games, ex.map(lambda g: train_world_model(g, train_s, args.config, overrides), games)))
        trained = run_jobs([dict(base, game=g, phase="trained", weights=str(weights[g]), policies=(p,))
                            for g in games for p in WM_POLICIES], args.workers)
        phases["trained"] = summarise(trained, games, WM_POLICIES)
        phases["trained"]["wm_versions"] = {r["game"]: r["wm_version"] for r in trained}  # the same per game
        print(table(f"after {train_s:.0f} s of world-model training", phases["trained"], games, WM_POLICIES))
    import torch
    import transformers

    out = {"games": games, "seeds": seeds, "steps": steps, "num_simulations": cfg.search.num_simulations,
           "llm_model": cfg.llm.model, "llm_mix": cfg.llm.mix, "llm_fixed_weight": cfg.llm.fixed_weight,
           "llm_temperature": cfg.llm.temperature, "prompt_format": cfg.llm.prompt_format,
           "train_seconds": train_s, "device": device_name(args.device), "wall_s": round(time.monotonic() - t0, 1),
           "norm_mean_untrained": phases["untrained"]["norm_mean"],
           "norm_mean_trained": phases.get("trained", {}).get("norm_mean"),
           "phases": phases, "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                          "python": platform.python_version()}}
    print(json.dumps(out))


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores)"


if __name__ == "__main__":
    main()
