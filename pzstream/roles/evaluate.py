"""Evaluation in four modes, without exploration noise: uniform random play (the baseline), the world
model alone, the world model with the LLM prior mixed in, and the LLM alone (its top-scored candidate).
The output names the LLM (``llm.model`` and the directory it loaded from) and what its prior did in
the modes that ask it (``PriorCounts``: moves, ignored, fallbacks, errors, mean shift).

Weights come from a run's mirror directory (``runs/<run.name>/weights``, written by the hub);
where a model has no published weights the untrained one is used, and the output says so. A
weights directory that does not exist is an error, not an evaluation of untrained models.

Every mode of every game starts from the same seeds (torch, numpy, random, the game's reset
seed, the search's generator), so two calls with the same weights and seed give the same scores.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import threading
import time
from pathlib import Path

import numpy as np

from pzstream.agent import GamePlayer, LlmPolicy, RandomPolicy, mcts_policy
from pzstream.llm.factory import LocalPrior
from pzstream.config import Config
from pzstream.env import open_game
from pzstream.stream.weights import WeightsError
from pzstream.stream.weights_client import WeightsClient

log = logging.getLogger("pzstream.eval")

MODES = ("random", "wm", "wm_llm", "llm")


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_models(cfg: Config, weights_dir: Path | None):
    """(world model, its version, LocalPrior) from the newest weights in ``weights_dir``
    (None: the untrained models, which the fixed seed makes the same in every call)."""
    from pzstream.model.world_model import load_weights_bytes, untrained_world_model

    if weights_dir is not None and not weights_dir.is_dir():
        raise FileNotFoundError(f"weights directory {str(weights_dir)!r} does not exist (a run's weights are in "
                                f"runs/<run.name>/weights; pass --weights DIR or run.name=NAME)")
    wm = untrained_world_model(cfg.world_model()).eval()
    prior = LocalPrior(cfg.llm)
    wm_version = 0
    if weights_dir is not None:
        client = WeightsClient({"wm": lambda data, _v: load_weights_bytes(wm, data), "llm": prior.load}, who="eval")
        wm_version = client.load_mirror(weights_dir)["wm"]
        if client.stats.rejected:  # evaluating other weights than asked for would be a wrong answer
            raise WeightsError(f"weights in {weights_dir} failed their checks: {'; '.join(client.stats.errors)}")
    return wm, wm_version, prior


def evaluate(cfg: Config, games: list[str], episodes: int, weights_dir: Path | None,
             seed: int = 1000) -> dict[str, object]:
    """Scores per mode and game; ``weights_dir`` None evaluates the untrained models.
    Raises FileNotFoundError for a ``weights_dir`` that does not exist."""
    import torch

    torch.set_num_threads(1)  # also makes the CPU kernels' reduction order, and so the scores, repeatable
    wm, wm_version, prior = load_models(cfg, weights_dir)
    untrained = [n for n, v in (("world model", wm_version), ("LLM", prior.version)) if v == 0]
    if untrained:
        log.warning("no published %s weights %s: evaluating %s untrained", " or ".join(untrained),
                    f"in {weights_dir}" if weights_dir is not None else "(no weights directory)",
                    "them" if len(untrained) > 1 else "it")
    search = dataclasses.replace(cfg.search_config(), root_noise_fraction=0.0, temperature=0.0)
    llm_dir = llm_directory(cfg)
    log.info("evaluating %s x %d episodes with wm v%d, llm v%d (weights from %s); llm: %s (%s)", ",".join(games),
             episodes, wm_version, prior.version, weights_dir, cfg.llm.model, llm_dir)
    scores: dict[str, dict[str, float]] = {m: {} for m in MODES}
    max_scores: dict[str, dict[str, int]] = {m: {} for m in MODES}
    returns: dict[str, dict[str, float]] = {m: {} for m in MODES}
    plays: dict[str, dict[str, str]] = {m: {} for m in MODES}
    llm_prior: dict[str, dict[str, dict[str, float]]] = {m: {} for m in ("wm_llm", "llm")}
    for game_name in games:
        for mode in MODES:
            seed_everything(seed)  # each mode alike, whichever ran before it
            if mode == "random":
                policy = RandomPolicy(seed)
            elif mode == "llm":
                policy = LlmPolicy(prior)
            else:
                policy = mcts_policy(cfg, seed, prior if mode == "wm_llm" else None, search)
                policy.offer(wm, wm_version)
            game = open_game(game_name, games_dir=cfg.env.games_dir, cache_dir=cfg.env.cache_dir)
            player = GamePlayer(game, policy, "eval", cfg.collector.segment_steps, cfg.collector.max_episode_steps, seed)
            t = time.monotonic()
            stop = threading.Event()
            # the actions played, as a digest: equal scores can hide different play, equal digests can't
            digest = hashlib.sha256()
            while player.stats.episodes < episodes:
                if (seg := player.play_segment(stop)) is not None:
                    digest.update("\n".join(seg.action_text).encode() + b"\n")
            game.close()
            s = player.stats
            name = game.name
            scores[mode][name] = round(float(np.mean(s.scores)), 3)
            max_scores[mode][name] = int(max(s.scores))
            returns[mode][name] = round(float(np.mean(s.returns)), 3)
            plays[mode][name] = digest.hexdigest()[:16]
            if mode in llm_prior:
                llm_prior[mode][name] = policy.prior_counts.as_stats()
            log.info("%s %s: mean score %.2f, max %d over %d episodes (%.0f s)", name, mode, scores[mode][name],
                     max_scores[mode][name], episodes, time.monotonic() - t)
    return {"scores": scores, "max_scores": max_scores, "returns": returns, "plays": plays, "episodes": episodes,
            "seed": seed, "llm_prior": llm_prior,
            "llm": {"model": cfg.llm.model, "dir": llm_dir},
            "weights": {"wm": wm_version, "llm": prior.version,
                        "from": str(weights_dir) if weights_dir is not None else None}}


def llm_directory(cfg: Config) -> str:
    """Where the LLM of ``llm.model`` was loaded from (the directory ``resolve_model`` gives the backends)."""
    from pzstream.llm.tiny import resolve_model

    return str(resolve_model(cfg.llm.model))


def prior_line(mode: str, per_game: dict[str, dict[str, float]]) -> str:
    """One line on what the LLM prior did in ``mode``, summed over its games."""
    total = {k: sum(g[k] for g in per_game.values()) for k in ("prior_moves", "prior_ignored", "prior_fallbacks",
                                                               "prior_errors")}
    moves = total["prior_moves"]
    shift = sum(g["prior_shift_mean"] * g["prior_moves"] for g in per_game.values()) / moves if moves else 0.0
    ignored = f" ({100 * total['prior_ignored'] / moves:.0f}%)" if moves else ""
    return (f"llm prior in {mode}: {moves:.0f} moves, {total['prior_ignored']:.0f} ignored{ignored}, "
            f"{total['prior_fallbacks']:.0f} fallbacks, {total['prior_errors']:.0f} errors, mean shift {shift:.3f} "
            f"of the root prior's mass")


def format_table(result: dict[str, object]) -> str:
    """The scores as a text table: one row per game, a mean and a max column per mode, every
    column at least two spaces from the next whatever the lengths of game names and headers."""
    scores, maxes = result["scores"], result["max_scores"]  # type: ignore[index]
    modes = [m for m in MODES if m in scores]  # type: ignore[operator]
    games = sorted({g for m in modes for g in scores[m]})  # type: ignore[index]
    header = ["game"] + [f"{m} {stat}" for m in modes for stat in ("mean", "max")]
    rows = [[g] + [cell for m in modes for cell in (f"{scores[m][g]:.2f}", f"{maxes[m][g]:d}")]  # type: ignore[index]
            for g in games]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in [header, *rows]]
    w = result["weights"]  # type: ignore[index]
    lines.append(f"{result['episodes']} episodes per game and mode, no exploration noise, seed {result.get('seed')}; "
                 f"world model v{w['wm']}, llm v{w['llm']}")
    if llm := result.get("llm"):
        lines.append(f"llm: {llm['model']} ({llm['dir']})")  # type: ignore[index]
    lines += [prior_line(m, per_game) for m, per_game in (result.get("llm_prior") or {}).items() if per_game]
    return "\n".join(lines)


def print_table(result: dict[str, object]) -> None:
    print(format_table(result))
