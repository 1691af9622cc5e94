"""Data-parallel training across the GPUs (or CPU processes) of one host.

Two jobs, each run on a fixed global batch that is the same whatever the number of processes,
so a run on N processes can be checked against a run on one:

- ``ppo``: the LLM policy's PPO update (``orz.models.PolicyModel``) under DeepSpeed ZeRO
  (``--zero-stage`` 2 or 3). The global batch is G sequences (a PPO episode's experiences from
  the default game's walkthrough prompts); each rank takes every N-th micro-batch, and DeepSpeed
  averages the gradients, so one optimiser step sees exactly the gradient of one process with
  G / micro gradient-accumulation steps.
- ``wm``: the world model's step (``model.train.Trainer``) under torch DDP; each rank takes an
  equal share of every global batch of real windows (random play of the default game).

    python -m pzstream.parallel ppo --nproc 2 --zero-stage 2      # rank r on cuda:r (nccl), or CPU (gloo)
    python -m pzstream.parallel wm --nproc 2

Each prints its per-step losses (averaged over ranks) and throughput, and one JSON line.
``bench/scale.py`` runs 1 and N processes in one go and reports scaling efficiency and the loss
match. NVLink multicast stays off (``NCCL_NVLS_ENABLE=0``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class JobResult:
    job: str
    nproc: int
    device: str
    steps: int
    losses: list[float]
    samples_per_s: float
    tokens_per_s: float
    step_s: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _init(rank: int, world: int, port: int, device: str) -> torch.device:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), NCCL_NVLS_ENABLE="0")
    torch.set_num_threads(1 if device == "cpu" else 4)
    if device == "cuda":
        torch.cuda.set_device(rank)
        dist.init_process_group("nccl", rank=rank, world_size=world, device_id=torch.device("cuda", rank))
        return torch.device("cuda", rank)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    return torch.device("cpu")


def _mean_over_ranks(x: float, device: torch.device) -> float:
    t = torch.tensor([x], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_steps(steps: int, warmup: int, step_fn, device: torch.device) -> tuple[list[float], list[float]]:
    """Run ``step_fn(i) -> local loss`` ``warmup + steps`` times; per measured step, the loss and
    the seconds, both averaged over ranks."""
    losses, step_s = [], []
    for i in range(steps + warmup):
        _sync(device)
        t0 = time.perf_counter()
        loss = step_fn(i)
        _sync(device)
        dt = time.perf_counter() - t0
        loss = _mean_over_ranks(loss, device)
        if i >= warmup:
            losses.append(loss)
            step_s.append(_mean_over_ranks(dt, device))
    return losses, step_s


# ------------------------------------------------------------------------------ PPO under DeepSpeed


def ppo_batch(tokenizer: Any, n: int, seed: int, prompt_len: int) -> tuple[list, torch.Tensor]:
    """G experiences: walkthrough prompts of the default game and answers among their candidates,
    with fixed pseudo-random advantages (the update's math does not care where they came from)."""
    import random

    from pzstream.orz.episode import encode_prompts
    from pzstream.orz.prompt_sets import walkthrough_samples
    from pzstream.orz.samples import answer_choices
    from pzstream.config import PPOSection

    samples = walkthrough_samples(max_candidates=8)
    cfg = PPOSection(prompt_max_len=prompt_len)
    prompts = encode_prompts(samples, tokenizer, cfg, history_len=3)
    rng = random.Random(seed)
    seqs = []
    for i in range(n):
        j = i % len(samples)
        answer = rng.choice(answer_choices(samples[j].candidates))
        seqs.append((prompts[j], tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]))
    g = torch.Generator().manual_seed(seed)
    T = max(len(r) for _, r in seqs)
    adv = torch.randn(n, T, generator=g)
    return seqs, adv


def run_ppo(rank: int, world: int, port: int, args: argparse.Namespace) -> JobResult | None:
    from pzstream.llm.tiny import resolve_model
    from pzstream.orz.models import PolicyModel

    device = _init(rank, world, port, args.device)
    G, m = args.global_batch, args.micro_batch
    if G % (m * world):
        raise ValueError(f"--global-batch {G} must divide into --micro-batch {m} x {world} processes")
    if args.engine == "torch" and world > 1:
        raise ValueError("--engine torch runs on one process (the in-process runtime's update); use deepspeed for more")
    zero = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.zero_set)}
    policy = PolicyModel(resolve_model(args.model), args.lr, args.engine, args.zero_stage, micro_batch=m,
                         accumulation=G // (m * world), seed=0, device=str(device), zero_config=zero)
    if args.compile:
        from pzstream.compiled import compile_blocks, decoder_layers

        compile_blocks(decoder_layers(policy.model), device)
    seqs, adv = ppo_batch(policy.tokenizer, G, seed=1, prompt_len=args.prompt_len)
    old_logp = policy.logprobs(seqs, micro=m)  # the same on every rank: same weights, same data
    n_micro = G // m
    mine = [j for j in range(n_micro) if j % world == rank]
    rows = [i for j in mine for i in range(j * m, (j + 1) * m)]
    my_seqs = [seqs[i] for i in rows]
    tokens = sum(len(p) + len(r) for p, r in my_seqs)
    losses, step_s = _timed_steps(args.steps, args.warmup, lambda _i: policy.train(
        my_seqs, old_logp[rows], adv[rows], None, update_steps=1, eps_clip=0.2, kl_coef=0.0)["policy_loss"], device)
    total_tokens = _mean_over_ranks(float(tokens), device) * world
    dist.barrier()
    dist.destroy_process_group()
    if rank:
        return None
    per_step = sum(step_s) / len(step_s)
    params = sum(p.numel() for p in policy.model.parameters())
    if args.engine == "deepspeed" and args.zero_stage == 3:  # partitioned: count the full shapes
        params = sum(getattr(p, "ds_numel", p.numel()) for p in policy.model.parameters())
    return JobResult("ppo", world, args.device, args.steps, losses, G / per_step, total_tokens / per_step, step_s,
                     {"zero_stage": args.zero_stage, "engine": args.engine, "global_batch": G, "micro_batch": m,
                      "model": args.model, "parameters": params, "compile": args.compile,
                      "zero_config": args.zero_set,
                      "mfu": mfu(6 * params * total_tokens / per_step, world, args.peak_tflops)})


# ------------------------------------------------------------------------------ world model under DDP


def wm_batches(cfg: Any, n_batches: int, batch: int, seed: int) -> list[list]:
    """Fixed global batches of real windows from random play of the default game."""
    import random
    import threading

    from pzstream.agent import RandomPlayer
    from pzstream.env import open_game
    from pzstream.model.targets import build_windows

    g = open_game("default")
    player = RandomPlayer(g, "scale", segment_steps=20, max_episode_steps=40, seed=seed)
    stop = threading.Event()
    segs = [player.play_segment(stop) for _ in range(12)]
    g.close()
    windows = build_windows(segs, cfg)
    rng = random.Random(seed)
    return [[windows[rng.randrange(len(windows))] for _ in range(batch)] for _ in range(n_batches)]


def run_wm(rank: int, world: int, port: int, args: argparse.Namespace) -> JobResult | None:
    from pzstream.config import load_config
    from pzstream.model.targets import collate
    from pzstream.model.train import Trainer
    from pzstream.model.world_model import untrained_world_model

    device = _init(rank, world, port, args.device)
    G = args.global_batch
    if G % world:
        raise ValueError(f"--global-batch {G} must divide into {world} processes")
    cfg = load_config(None, list(args.overrides)).world_model()
    batches = wm_batches(cfg, args.steps + args.warmup, G, seed=3)
    trainer = Trainer(untrained_world_model(cfg), cfg, device=device, data_parallel=world > 1, autocast=args.autocast)
    if args.compile:
        from pzstream.compiled import compile_blocks

        compile_blocks(trainer.model.blocks, device)
    flops_per_sample = 6 * sum(p.numel() for p in trainer.model.blocks.parameters()) * cfg.max_tokens
    shares = [collate(full[rank::world], cfg) for full in batches]
    losses, step_s = _timed_steps(args.steps, args.warmup, lambda i: trainer.step(shares[i])["loss/total"], device)
    del trainer  # DDP's reducer goes before its process group (its threads aborted the process otherwise)
    dist.barrier()
    dist.destroy_process_group()
    if rank:
        return None
    per_step = sum(step_s) / len(step_s)
    return JobResult("wm", world, args.device, args.steps, losses, G / per_step, G * cfg.max_tokens / per_step, step_s,
                     {"global_batch": G, "autocast": args.autocast, "compile": args.compile,
                      "mfu_transformer": mfu(flops_per_sample * G / per_step, world, args.peak_tflops)})


def mfu(flops_per_s: float, world: int, peak_tflops: float) -> float:
    """Model FLOPs utilisation of ``world`` devices of ``peak_tflops`` each."""
    return flops_per_s / (world * peak_tflops * 1e12)


# ------------------------------------------------------------------------------ launching

JOBS = {"ppo": run_ppo, "wm": run_wm}


def _rank_main(rank: int, world: int, port: int, args: argparse.Namespace, out: Any) -> None:
    """One rank's job; its result (rank 0) goes to ``out``. A rank that finished its job leaves with
    ``os._exit(0)``: the interpreter's own exit ran C++ destructors of the collective's threads, which on a
    loaded 2-core host now and then aborted a finished rank ("terminate called without an active exception",
    SIGABRT, after the process group was destroyed). An exception still propagates (a non-zero exit)."""
    result = JOBS[args.job](rank, world, port, args)
    if result is not None:
        out.put(asdict(result))  # a pipe write: done when it returns
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch(args: argparse.Namespace) -> JobResult:
    """Run ``args.job`` on ``args.nproc`` processes (spawned here) and return rank 0's result."""
    import torch.multiprocessing as mp

    from pzstream.orz.models import free_port

    if args.device == "cuda" and torch.cuda.device_count() < args.nproc:
        raise SystemExit(f"--nproc {args.nproc} needs {args.nproc} GPUs; {torch.cuda.device_count()} visible")
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    port = free_port()
    mp.start_processes(_rank_main, args=(args.nproc, port, args, out), nprocs=args.nproc, join=True,
                       start_method="spawn")
    return JobResult(**out.get())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("job", choices=sorted(JOBS))
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--global-batch", type=int, default=32)
    p.add_argument("--micro-batch", type=int, default=4, help="ppo: sequences per micro-batch per process")
    p.add_argument("--zero-stage", type=int, choices=[0, 1, 2, 3], default=2)
    p.add_argument("--model", default="tiny", help="ppo: 'tiny' or a model directory")
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--engine", choices=["deepspeed", "torch"], default="deepspeed",
                   help="ppo: DeepSpeed ZeRO, or plain torch AdamW on one process (the in-process runtime)")
    p.add_argument("--autocast", choices=["none", "bfloat16"], default="none", help="wm: the trainer's autocast")
    p.add_argument("--zero-set", action="append", default=[], metavar="KEY=JSON",
                   help="ppo: a key of DeepSpeed's zero_optimization section, e.g. "
                        "--zero-set stage3_prefetch_bucket_size=5e8 (repeatable)")
    p.add_argument("--compile", action="store_true", help="torch.compile each transformer block (GPU only; the "
                   "first steps compile, so use --warmup 2 or more)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 TFLOP/s of one device (for MFU)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="wm: a config override, e.g. --set model.preset=unizero-jericho (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    res = launch(args)
    print(f"{res.job} on {res.nproc} x {res.device}: losses {', '.join(f'{x:.5f}' for x in res.losses)}; "
          f"{res.samples_per_s:.1f} samples/s, {res.tokens_per_s:.0f} tokens/s", file=sys.stderr)
    print(json.dumps(asdict(res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
