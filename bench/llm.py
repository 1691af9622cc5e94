"""PriorZero LLM training on the embedded default game: held-out agreement before and after.

    python bench/llm.py [--quick] [--mode sft|sft_visits|rft] [--updates N] [--steps N]

1. Collect real steps of the default TextWorld game with the quest teacher
   (``pzstream.llm.agreement``): the "search" target of each state is the first command of
   TextWorld's winning policy when valid (else the first valid action); segments carry a
   visit distribution peaked (0.9) on it; the executed action is the target with probability
   0.5, else uniform (so play covers many states). Samples use ``chosen="visits"`` (the most
   visited candidate = the teacher's action); episodes are split train / held-out (every 4th
   episode held out).
2. The tiny Qwen2 (``pzstream.llm.tiny``, random init) is trained with ``LLMTrainer``;
   agreement (top candidate by mean token log-prob == chosen) on the held-out steps is
   measured before, during and after. Chance = mean 1/K.

The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.quest_teacher import collect_quest_segments, split_by_episode  # noqa: E402
from pzstream.llm.prompts import PromptConfig  # noqa: E402
from pzstream.llm.train import LLMTrainer, agreement, chance, samples_from_segments, tiny_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--mode", default="sft", choices=LLMTrainer.MODES)
    ap.add_argument("--steps", type=int, default=None, help="env steps to collect")
    ap.add_argument("--updates", type=int, default=None)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--history", type=int, default=2)
    ap.add_argument("--max-prompt-tokens", type=int, default=192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    steps = args.steps or (400 if args.quick else 1200)
    updates = args.updates or (80 if args.quick else 300)
    n_eval = 4 if args.quick else 6
    t_start = time.perf_counter()

    t = time.perf_counter()
    segs = collect_quest_segments(steps, seed=args.seed, explore=0.5, max_episode_steps=40)
    collect_s = time.perf_counter() - t
    train_segs, held_segs = split_by_episode(segs, held_out_every=4)
    model, tok = tiny_model()
    cfg = PromptConfig(history_len=args.history, max_prompt_tokens=args.max_prompt_tokens)
    train = samples_from_segments(train_segs, cfg, chosen="visits", tokenizer=tok)
    held = samples_from_segments(held_segs, cfg, chosen="visits", tokenizer=tok)
    episodes = len({s.header.episode_id for s in segs})
    base = chance(held)
    print(f"collected {steps} steps in {collect_s:.1f}s: {episodes} episodes, {len(train)} train / "
          f"{len(held)} held-out samples, chance {base:.3f}", flush=True)

    trainer = LLMTrainer(model, tok, lr=args.lr, mode=args.mode)
    rng = np.random.default_rng(args.seed)
    eval_at = set(np.linspace(0, updates, n_eval + 1).astype(int).tolist())
    rows, loss_key = [], "train/llm_rft_loss" if args.mode == "rft" else "train/llm_sft_loss"
    train_s = eval_s = 0.0
    recent: list[float] = []
    kl = 0.0
    print(f"{'step':>6} {'loss':>9} {'kl':>8} {'held-out agreement':>19} {'train agreement':>16}", flush=True)
    for step in range(updates + 1):
        if step in eval_at:
            t = time.perf_counter()
            a_held = agreement(model, tok, held)
            a_train = agreement(model, tok, train[:len(held)])
            eval_s += time.perf_counter() - t
            loss = float(np.mean(recent)) if recent else float("nan")
            rows.append({"step": step, "loss": loss, "kl": kl, "agreement": a_held, "train_agreement": a_train})
            print(f"{step:>6} {loss:>9.4f} {kl:>8.3f} {a_held:>19.3f} {a_train:>16.3f}", flush=True)
            recent = []
        if step == updates:
            break
        t = time.perf_counter()
        m = trainer.step([train[j] for j in rng.choice(len(train), min(args.batch, len(train)), replace=False)])
        train_s += time.perf_counter() - t
        recent.append(m[loss_key])
        kl = m["train/llm_kl"]

    import transformers
    out = {
        "bench": "llm", "quick": args.quick, "mode": args.mode, "target": "quest_policy_first_command",
        "agreement_before": rows[0]["agreement"], "agreement_after": rows[-1]["agreement"], "chance": round(base, 4),
        "train_agreement_after": rows[-1]["train_agreement"], "final_loss": rows[-1]["loss"],
        "env_steps": steps, "episodes": episodes, "updates": updates, "batch": args.batch, "lr": args.lr,
        "samples": len(train) + len(held), "train_samples": len(train), "held_out_samples": len(held),
        "updates_per_s": round(updates / train_s, 3) if train_s else None,
        "seconds": round(time.perf_counter() - t_start, 1), "collect_s": round(collect_s, 1),
        "train_s": round(train_s, 1), "eval_s": round(eval_s, 1),
        "model_params": sum(p.numel() for p in model.parameters()),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
