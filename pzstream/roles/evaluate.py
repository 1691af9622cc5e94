"""Evaluation in three modes, without exploration noise: world model alone, world model with the
LLM prior mixed in, and the LLM alone (its top-scored candidate).

Weights come from a run's mirror directory (``runs/<run.name>/weights``, written by the hub);
where a model has no published weights the untrained one is used, and the output says so.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path

import numpy as np

from pzstream.agent import GamePlayer, LlmPolicy, mcts_policy
from pzstream.llm.factory import LocalPrior
from pzstream.config import Config
from pzstream.env import open_game
from pzstream.stream.weights import latest_on_disk

log = logging.getLogger("pzstream.eval")

MODES = ("wm", "wm_llm", "llm")


def load_models(cfg: Config, weights_dir: Path):
    """(world model, its version, LocalPrior) from the newest weights in ``weights_dir``."""
    import torch

    from pzstream.model.world_model import WorldModel, load_weights_bytes

    torch.manual_seed(0)
    wm = WorldModel(cfg.world_model()).eval()
    wm_version = 0
    if (found := latest_on_disk(weights_dir, "wm")) is not None:
        load_weights_bytes(wm, found[1].read_bytes())
        wm_version = found[0]
    prior = LocalPrior(cfg.llm)
    if (found := latest_on_disk(weights_dir, "llm")) is not None:
        prior.load(found[1].read_bytes(), found[0])
    return wm, wm_version, prior


def evaluate(cfg: Config, games: list[str], episodes: int, weights_dir: Path, seed: int = 1000) -> dict[str, object]:
    import torch

    torch.set_num_threads(1)
    wm, wm_version, prior = load_models(cfg, weights_dir)
    search = dataclasses.replace(cfg.search_config(), root_noise_fraction=0.0, temperature=0.0)
    log.info("evaluating %s x %d episodes with wm v%d, llm v%d (weights from %s)", ",".join(games), episodes,
             wm_version, prior.version, weights_dir)
    scores: dict[str, dict[str, float]] = {m: {} for m in MODES}
    max_scores: dict[str, dict[str, int]] = {m: {} for m in MODES}
    returns: dict[str, dict[str, float]] = {m: {} for m in MODES}
    for game_name in games:
        for mode in MODES:
            if mode == "llm":
                policy = LlmPolicy(prior)
            else:
                policy = mcts_policy(cfg, seed, prior if mode == "wm_llm" else None, search)
                policy.offer(wm, wm_version)
            game = open_game(game_name, games_dir=cfg.env.games_dir, cache_dir=cfg.env.cache_dir)
            player = GamePlayer(game, policy, "eval", cfg.collector.segment_steps, cfg.collector.max_episode_steps, seed)
            t = time.monotonic()
            stop = threading.Event()
            while player.stats.episodes < episodes:
                player.play_segment(stop)
            game.close()
            s = player.stats
            name = game.name
            scores[mode][name] = round(float(np.mean(s.scores)), 3)
            max_scores[mode][name] = int(max(s.scores))
            returns[mode][name] = round(float(np.mean(s.returns)), 3)
            log.info("%s %s: mean score %.2f, max %d over %d episodes (%.0f s)", name, mode, scores[mode][name],
                     max_scores[mode][name], episodes, time.monotonic() - t)
    return {"scores": scores, "max_scores": max_scores, "returns": returns, "episodes": episodes,
            "weights": {"wm": wm_version, "llm": prior.version, "from": str(weights_dir)}}


def print_table(result: dict[str, object]) -> None:
    scores, maxes = result["scores"], result["max_scores"]  # type: ignore[index]
    games = sorted({g for m in MODES for g in scores[m]})  # type: ignore[index]
    print(f"{'game':<16}" + "".join(f"{m + ' mean':>12}{m + ' max':>10}" for m in MODES))
    for g in games:
        print(f"{g:<16}" + "".join(f"{scores[m][g]:12.2f}{maxes[m][g]:10d}" for m in MODES))  # type: ignore[index]
    w = result["weights"]  # type: ignore[index]
    print(f"{result['episodes']} episodes per game and mode, no exploration noise; world model v{w['wm']}, llm v{w['llm']}")
