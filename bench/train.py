"""World-model training throughput and where a collector's time goes.

    python bench/train.py [--quick] [--game default]

1. Training: a fixed replay of real segments (random play on the game), then timed
   ``Trainer.step`` calls at the configured batch size: samples/s and updates/s.
2. Collector: an MCTS player (untrained model, the configured simulations) plays real steps;
   its time splits into env step, valid actions, search tree, and network (inside the search).

The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from pzstream.agent import GamePlayer, MctsPolicy, RandomPlayer  # noqa: E402
from pzstream.config import load_config  # noqa: E402
from pzstream.env import open_game  # noqa: E402
from pzstream.model.targets import build_windows, collate  # noqa: E402
from pzstream.model.train import Trainer  # noqa: E402
from pzstream.model.world_model import WorldModel  # noqa: E402


def collect(game_name: str, steps: int, seed: int = 0) -> list:
    game = open_game(game_name)
    player = RandomPlayer(game, "bench", 50, 100, seed)
    segs, stop = [], threading.Event()
    while player.stats.env_steps < steps:
        seg = player.play_segment(stop)
        if seg is not None:
            segs.append(seg)
    game.close()
    return segs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--game", default="default")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the trainer process default is 1)")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. model.latent_dim=128 search.num_simulations=25")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(None, args.overrides)
    wm_cfg = cfg.world_model()
    smoke = os.environ.get("PZSTREAM_BENCH_SMOKE") == "1"  # tests/test_benches.py: does it run at all
    updates = 5 if smoke else 30 if args.quick else 150
    moves = 5 if smoke else 20 if args.quick else 100

    segs = collect(args.game, 150 if smoke else 600 if args.quick else 2000)
    windows = build_windows(segs, wm_cfg)
    torch.manual_seed(0)
    trainer = Trainer(WorldModel(wm_cfg), wm_cfg)
    rng = random.Random(0)
    batches = [collate([windows[rng.randrange(len(windows))] for _ in range(wm_cfg.batch_size)], wm_cfg)
               for _ in range(updates + 3)]
    for b in batches[:3]:  # warm-up
        trainer.step(b)
    t = time.perf_counter()
    for b in batches[3:]:
        trainer.step(b)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(10):
        collate([windows[rng.randrange(len(windows))] for _ in range(wm_cfg.batch_size)], wm_cfg)
    collate_s = (time.perf_counter() - t) / 10
    ups = updates / train_s

    game = open_game(args.game)
    policy = MctsPolicy(wm_cfg, cfg.search_config(), seed=0, threads=args.threads)
    player = GamePlayer(game, policy, "bench", 50, 100, 0)
    stop = threading.Event()
    t = time.perf_counter()
    while player.stats.env_steps < moves:
        player.play_segment(stop, max_steps=moves)
    wall = time.perf_counter() - t
    s = player.stats
    tree_s = s.policy_s - policy.net_s
    split = {"env": s.env_s, "valid_actions": s.valid_s, "search_tree": tree_s, "network": policy.net_s}
    other = max(0.0, wall - sum(split.values()))
    game.close()

    params = sum(p.numel() for p in trainer.model.parameters())
    print(f"world model: {params:,} parameters, batch {wm_cfg.batch_size}, unroll {wm_cfg.unroll_steps}, "
          f"{len(windows)} windows from {sum(x.n_steps for x in segs)} real steps of {args.game}")
    print(f"{'training':<22}{ups:8.2f} updates/s {ups * wm_cfg.batch_size:10.1f} samples/s  (collate {collate_s * 1e3:.1f} ms/batch)")
    print(f"\ncollector, {moves} MCTS moves x {cfg.search.num_simulations} simulations: {moves / wall:.2f} moves/s")
    print(f"{'part':<16}{'ms/move':>10}{'share':>8}")
    for name, sec in {**split, "other": other}.items():
        print(f"{name:<16}{1e3 * sec / moves:10.2f}{sec / wall:8.1%}")
    print(json.dumps({
        "train_samples_per_s": round(ups * wm_cfg.batch_size, 2), "train_updates_per_s": round(ups, 3),
        "batch_size": wm_cfg.batch_size, "collate_ms": round(collate_s * 1e3, 2), "parameters": params,
        "collector_moves_per_s": round(moves / wall, 3), "num_simulations": cfg.search.num_simulations,
        "collector_ms_per_move": {k: round(1e3 * v / moves, 3) for k, v in {**split, "other": other}.items()},
        "collector_share": {k: round(v / wall, 4) for k, v in {**split, "other": other}.items()},
        "game": args.game, "threads": args.threads, "torch": torch.__version__, "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
