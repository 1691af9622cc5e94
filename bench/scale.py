"""Scaling of data-parallel training across the GPUs (or CPU processes) of one host (issue 6).

For each job (PPO policy update under DeepSpeed ZeRO-2 and ZeRO-3, world-model step under DDP)
it runs the same global batches on 1 process and on N, in this one invocation, and reports:
throughput (samples/s, and tokens/s for PPO), scaling efficiency = throughput(N) / (N x
throughput(1)), and the largest relative difference of the per-step losses (N vs 1).

    python bench/scale.py --nproc 2                   # on a host with >= 2 GPUs (nccl)
    python bench/scale.py --nproc 2 --device cpu      # gloo on CPU: checks losses, not speed
    python bench/scale.py --quick

Last line: one JSON object with the figures. ``PZSTREAM_BENCH_SMOKE=1`` (tests/test_benches.py) shrinks --quick further, to check that the bench runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from pzstream.parallel import launch, parser as job_parser  # noqa: E402


def rel_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / max(abs(y), 1e-8) for x, y in zip(a, b))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--jobs", default="ppo-z2,ppo-z3,wm")
    p.add_argument("--model", default="tiny")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--ppo-batch", type=int, default=32)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--wm-batch", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--autocast", choices=["none", "bfloat16"], default="none", help="wm: the trainer's autocast")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="wm: a config override, e.g. --set model.preset=unizero-jericho (repeatable)")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.steps = 3
    if os.environ.get("PZSTREAM_BENCH_SMOKE") == "1":
        # the bench's own path with the cheapest job (DeepSpeed's start-up alone is minutes on a busy
        # 2-core machine; tests/test_parallel.py runs the ZeRO jobs)
        a.jobs, a.steps, a.wm_batch = "wm", 2, 16
    rows, figures = [], {"device": a.device, "nproc": a.nproc, "torch": torch.__version__,
                         "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
    for job in a.jobs.split(","):
        kind, _, stage = job.partition("-z")
        base = ["--device", a.device, "--steps", str(a.steps), "--model", a.model, "--prompt-len", str(a.prompt_len),
                "--micro-batch", str(a.micro_batch),
                "--global-batch", str(a.ppo_batch if kind == "ppo" else a.wm_batch)]
        if stage:
            base += ["--zero-stage", stage]
        if kind == "wm":
            base += ["--autocast", a.autocast, *(x for o in a.overrides for x in ("--set", o))]
        one = launch(job_parser().parse_args([kind, "--nproc", "1", *base]))
        many = launch(job_parser().parse_args([kind, "--nproc", str(a.nproc), *base]))
        eff = many.samples_per_s / (a.nproc * one.samples_per_s)
        diff = rel_diff(many.losses, one.losses)
        rows.append((job, one.samples_per_s, many.samples_per_s, one.tokens_per_s, many.tokens_per_s, eff, diff))
        figures[job] = {"samples_per_s_1": one.samples_per_s, f"samples_per_s_{a.nproc}": many.samples_per_s,
                        "tokens_per_s_1": one.tokens_per_s, f"tokens_per_s_{a.nproc}": many.tokens_per_s,
                        "efficiency": eff, "loss_max_rel_diff": diff, "losses_1": one.losses,
                        "mfu_1": one.extra.get("mfu", one.extra.get("mfu_transformer")),
                        f"mfu_{a.nproc}": many.extra.get("mfu", many.extra.get("mfu_transformer")),
                        f"losses_{a.nproc}": many.losses}
    n = a.nproc
    print(f"\n{'job':8} {'samples/s x1':>13} {f'x{n}':>9} {'tokens/s x1':>12} {f'x{n}':>10} {'efficiency':>10} {'loss diff':>10}")
    for job, s1, sn, t1, tn, eff, diff in rows:
        print(f"{job:8} {s1:13.1f} {sn:9.1f} {t1:12.0f} {tn:10.0f} {eff:10.2f} {diff:10.2e}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
