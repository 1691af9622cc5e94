"""World-model training throughput and where a collector's time goes.

    python bench/train.py [--quick] [--game default] [--device cuda --batches 64,4096 --autocast bfloat16]

1. Training: a fixed replay of real segments (random play on the game), then timed
   ``Trainer.step`` calls at the configured batch size: samples/s and updates/s.
2. Collector: an MCTS player (untrained model, the configured simulations) plays real steps;
   its time splits into env step, valid actions, search tree, and network (inside the search).

On a GPU (``--device cuda``) the collector part is skipped and training is swept over
``--batches``, each batch size timed three ways in the same run: the step as it is, the same
step with the gathers as plain indexing (the baseline before issue 13), and the transformer
alone (forward and backward at the same token shape: the ceiling of the full step). MFU counts
the transformer's matmul work only: 6 x its parameters x tokens/s over ``--peak-tflops``.

    python bench/train.py --device cuda --batches 64,512,4096 --autocast bfloat16 model.preset=unizero-jericho

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
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (on a GPU: the training sweep only)")
    ap.add_argument("--batches", default="", help="the training sweep (default on a GPU): comma-separated batch sizes")
    ap.add_argument("--autocast", default="none", choices=("none", "bfloat16"), help="the trainer's autocast")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 TFLOP/s of the card (H100 SXM: 989)")
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
    if args.device != "cpu" or args.batches:
        gpu_sweep(args, wm_cfg, windows, updates)
        return
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


class IndexGatherWorldModel(WorldModel):
    """The baseline: the training step's gathers as plain indexing (before issue 13)."""

    @staticmethod
    def rows(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return table[idx]


def transformer_params(model: WorldModel) -> int:
    return sum(p.numel() for p in model.blocks.parameters())


def timed(fn, n: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over ``n`` calls after two warm-up calls, synchronised."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda _d: None)
    for _ in range(2):
        fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t) / n


def transformer_only_step(model: WorldModel, batch: int, tokens: int, dtype: torch.dtype | None,
                          device: torch.device):
    """Forward and backward of the transformer alone on random tokens of the training shape."""
    x = torch.randn(batch, tokens, model.cfg.latent_dim, device=device, requires_grad=True)
    pos = torch.arange(tokens, device=device)
    valid = torch.ones(batch, tokens, dtype=torch.bool, device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            h, _ = model.transformer(x, pos, valid)
            loss = h.float().square().mean()
        loss.backward()
    return step


def gpu_sweep(args, wm_cfg, windows: list, updates: int) -> None:
    from pzstream.model.train import AUTOCAST

    device = torch.device(args.device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    sizes = [int(b) for b in args.batches.split(",")] if args.batches else [wm_cfg.batch_size]
    tokens = wm_cfg.max_tokens
    rng = random.Random(0)
    rows, json_rows = [], []
    for b in sizes:
        batches = [collate([windows[rng.randrange(len(windows))] for _ in range(b)], wm_cfg) for _ in range(4)]
        batches = [x.to(device) for x in batches]
        figures = {}
        for name, cls in (("step", WorldModel), ("index_gathers", IndexGatherWorldModel)):
            torch.manual_seed(0)
            trainer = Trainer(cls(wm_cfg), wm_cfg, device=device, autocast=args.autocast)
            i = iter(range(10**9))
            figures[name] = timed(lambda: trainer.step(batches[next(i) % len(batches)]), max(3, updates // 5), device)
            del trainer
        torch.manual_seed(0)
        model = WorldModel(wm_cfg).to(device)
        figures["transformer_only"] = timed(transformer_only_step(model, b, tokens, AUTOCAST[args.autocast], device),
                                            max(3, updates // 5), device)
        flops = 6 * transformer_params(model) * b * tokens
        mfu = {k: flops / v / (args.peak_tflops * 1e12) for k, v in figures.items()}
        rows.append((b, figures, mfu))
        json_rows.append({"batch": b, **{f"{k}_ms": round(v * 1e3, 3) for k, v in figures.items()},
                          **{f"{k}_samples_per_s": round(b / v, 1) for k, v in figures.items()},
                          **{f"{k}_mfu": round(m, 5) for k, m in mfu.items()},
                          "gather_speedup": round(figures["index_gathers"] / figures["step"], 2)})
        del model
    print(f"world model: {sum(p.numel() for p in WorldModel(wm_cfg).parameters()):,} parameters "
          f"({transformer_params(WorldModel(wm_cfg)):,} in the transformer), {tokens} tokens a sample, "
          f"autocast {args.autocast}, {card}")
    print(f"{'batch':>6} {'step ms':>9} {'samples/s':>10} {'MFU':>7} | {'index ms':>9} {'speedup':>8} | "
          f"{'tf-only ms':>10} {'tf MFU':>7}")
    for b, f, m in rows:
        print(f"{b:6d} {f['step'] * 1e3:9.2f} {b / f['step']:10.0f} {m['step']:7.2%} | {f['index_gathers'] * 1e3:9.2f} "
              f"{f['index_gathers'] / f['step']:7.2f}x | {f['transformer_only'] * 1e3:10.2f} {m['transformer_only']:7.2%}")
    best = max(json_rows, key=lambda r: r["step_mfu"])
    print(json.dumps({"device": card, "autocast": args.autocast, "tokens": tokens,
                      "parameters": sum(p.numel() for p in WorldModel(wm_cfg).parameters()),
                      "transformer_parameters": transformer_params(WorldModel(wm_cfg)),
                      "wm_mfu": best["step_mfu"], "wm_mfu_batch": best["batch"],
                      "wm_transformer_only_mfu": max(r["transformer_only_mfu"] for r in json_rows),
                      "gather_speedup_at_largest": json_rows[-1]["gather_speedup"], "rows": json_rows,
                      "peak_tflops": args.peak_tflops, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
