"""ORZ-style PPO episodes on the tiny LLM: exact-match reward over episodes, PPO with a critic and GRPO.

    python bench/ppo.py [--quick] [--runtime auto|ray|inprocess] [--episodes E] [--prompts P]
                        [--candidates K] [--seed S]

1. A fixed prompt set from the embedded default game (``prompt_sets.walkthrough_samples``):
   the first P states of its walkthrough, each with K candidate actions (the walkthrough's
   action among them, shuffled), so a uniform guess earns exact-match reward 1/K (``chance``).
2. Two runs in one invocation, each on a fresh runtime (``orz.runtime.make_runtime``: by default
   Ray actors + vLLM engine + DeepSpeed ZeRO where they import, else in-process transformers +
   torch), each closed after its last episode:
     - PPO with a critic (``use_grpo`` False: GAE on the critic's values, whitened advantages);
     - GRPO (``use_grpo`` True: rewards normalised within each prompt's group, no critic).
   Every episode (``orz.episode.run_episode``) takes all P prompts (``rollout_batch_size`` =
   ``fire_threshold`` = P), ``n_samples_per_prompt`` responses each in ``choice`` mode (the prior's
   scoring prompt, ending ``</think>\\n<answer>``, then one ``CANDIDATE</answer>`` drawn from
   softmax(mean token log-prob / T), trained as that distribution: ``orz/rollout.py``), reward = exact match only
   (``rewards = ["exact:1.0"]``), then the PPO/critic updates and the weight sync into the
   rollout engine.
3. The reward of an episode is the mean exact-match reward of its own sampled responses
   (``metrics["reward_mean"]``): sampled before that episode's update, i.e. from the policy
   after the previous episodes. After the last episode, one more rollout of all prompts with
   the final policy (no update) is scored the same way: ``reward_after`` / ``grpo_reward_after``.

Figures in the last stdout line (one JSON object):
    reward_first   PPO-with-critic run: mean reward of its first 2 episodes
    reward_last    PPO-with-critic run: mean reward of its last 2 episodes
    grpo_reward_first / grpo_reward_last   the same for the GRPO run
    chance         1/K averaged over the prompts
    episodes       episodes per run
    runtime        the runtime's name ("ray+vllm+deepspeed" or "inprocess")
    ppo_curve / grpo_curve   every episode's reward; startup_s, episode_s, per-phase times, versions
    ppo_response_tokens / grpo_response_tokens   mean response length (tokens), first and last episode

Seeds: Python, numpy and torch are seeded with ``--seed``; the runtime gets ``ppo.seed`` =
``--seed`` (model init of the critic head, DeepSpeed); episode k samples with seed
``seed + 1000 k`` (as the PPO worker does), so a rerun on the same machine repeats the curve
(vLLM's per-request seeds, one torch thread per Ray actor).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Ray, vLLM and DeepSpeed are noisy; their workers inherit this environment (vLLM's log to stderr,
# so that stdout keeps the bench's own lines; Ray passes the actors' stdout and stderr on as such).
for _k, _v in (("VLLM_LOGGING_LEVEL", "WARNING"), ("VLLM_LOGGING_STREAM", "ext://sys.stderr"), ("RAY_DEDUP_LOGS", "1"), ("TOKENIZERS_PARALLELISM", "false"),
               ("VLLM_CONFIGURE_LOGGING", "1"), ("DS_ACCELERATOR", "cpu"), ("RAY_USAGE_STATS_ENABLED", "0"),
               ("PYTHONWARNINGS", "ignore")):
    os.environ.setdefault(_k, _v)

import numpy as np  # noqa: E402
import torch  # noqa: E402

EPISODE_METRICS = ("reward_mean", "kl", "kl_before", "policy_loss", "value_loss", "clip_frac", "response_length")
TIMES = ("generate", "reward", "forward", "train", "sync")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__}
    for name in ("transformers", "vllm", "ray", "deepspeed"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - absent or broken: not reported
            pass
    return out


def quiet_logs() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("ray", "vllm", "deepspeed", "DeepSpeed", "transformers", "torch", "pzstream"):
        logging.getLogger(name).setLevel(logging.WARNING)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def final_rollout_reward(runtime, samples, cfg, reward_fn, seed: int) -> float:
    """Mean exact-match reward of one rollout of every prompt with the final policy (no update)."""
    from pzstream.orz.episode import rollout

    tok = runtime.tokenizer
    ro = rollout(runtime, samples, cfg, 3, seed)
    rewards = [reward_fn(s, text)[0] for s, texts in zip(samples, ro.texts(tok)) for text in texts]
    return float(np.mean(rewards))


def one_run(label: str, use_grpo: bool, args, samples, model_path: str) -> dict:
    from pzstream.config import PPOSection
    from pzstream.orz.episode import run_episode
    from pzstream.orz.runtime import make_runtime
    from pzstream.roles.ppo_worker import build_reward_fn

    P = len(samples)
    cfg = PPOSection(enabled=True, runtime=args.runtime, rollout_batch_size=P, fire_threshold=P,
                     queue_capacity=max(4096, P), n_samples_per_prompt=args.samples,
                     micro_train_batch_size=args.micro_batch, micro_forward_batch_size=max(16, args.micro_batch),
                     policy_update_steps=args.update_steps, critic_update_steps=args.update_steps,
                     actor_learning_rate=args.lr, critic_learning_rate=args.critic_lr,
                     use_kl_loss=True, kl_loss_coef=args.kl_coef, use_grpo=use_grpo, answer_mode="choice",
                     rewards=["exact:1.0"], temperature=1.0, seed=args.seed,
                     ray_num_cpus=args.ray_cpus)
    reward_fn, _ = build_reward_fn(cfg)
    seed_all(args.seed)
    t = time.monotonic()
    runtime = make_runtime(cfg, model_path)
    startup_s = time.monotonic() - t
    print(f"[{label}] runtime {runtime.name} up in {startup_s:.1f}s: {runtime.describe}", flush=True)
    rows, episode_s = [], []
    try:
        for k in range(args.episodes):
            t = time.monotonic()
            res = run_episode(runtime, samples, cfg, reward_fn, history_len=3, seed=args.seed + 1000 * k)
            episode_s.append(time.monotonic() - t)
            m = res.metrics
            rows.append({key: float(m[key]) for key in EPISODE_METRICS if key in m}
                        | {f"time_{p}": float(m.get(f"time_{p}", 0.0)) for p in TIMES})
            print(f"[{label}] episode {k:>3}: reward {m['reward_mean']:.3f}  kl {m.get('kl', 0.0):.4f}  "
                  f"policy_loss {m.get('policy_loss', float('nan')):+.4f}  "
                  f"value_loss {m.get('value_loss', float('nan')):.4f}  {episode_s[-1]:.1f}s", flush=True)
        t = time.monotonic()
        after = final_rollout_reward(runtime, samples, cfg, reward_fn, args.seed + 1000 * args.episodes)
        after_s = time.monotonic() - t
    finally:
        runtime.close()
    curve = [r["reward_mean"] for r in rows]
    n_edge = min(2, len(curve))
    return {"label": label, "runtime": runtime.name, "describe": runtime.describe, "startup_s": startup_s,
            "rows": rows, "curve": curve, "episode_s": episode_s, "after": after, "after_s": after_s,
            "first": float(np.mean(curve[:n_edge])), "last": float(np.mean(curve[-n_edge:])),
            "times": {p: float(np.mean([r[f"time_{p}"] for r in rows])) for p in TIMES}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer episodes (8 per run)")
    ap.add_argument("--runtime", default="auto", choices=["auto", "ray", "inprocess"])
    ap.add_argument("--episodes", type=int, default=None, help="episodes per run (default 24, quick 8)")
    ap.add_argument("--prompts", type=int, default=8, help="P: prompts per episode (rollout_batch_size)")
    ap.add_argument("--candidates", type=int, default=4, help="K: candidate actions per prompt (chance 1/K)")
    ap.add_argument("--samples", type=int, default=4, help="n_samples_per_prompt")
    ap.add_argument("--lr", type=float, default=1e-3, help="actor_learning_rate")
    ap.add_argument("--critic-lr", type=float, default=1e-3, help="critic_learning_rate")
    ap.add_argument("--update-steps", type=int, default=2, help="policy_update_steps = critic_update_steps")
    ap.add_argument("--micro-batch", type=int, default=16, help="micro_train_batch_size")
    ap.add_argument("--kl-coef", type=float, default=0.001, help="kl_loss_coef (use_kl_loss on)")
    ap.add_argument("--ray-cpus", type=float, default=None, help="CPUs of the local Ray (default: all)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of this process (in-process runtime)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.episodes is None:
        args.episodes = 8 if args.quick else 24
    n = args.prompts * args.samples
    if n % args.update_steps or (n // args.update_steps) % args.micro_batch:
        # keep the run valid: the largest micro-batch that divides the mini-batch
        mini = n // args.update_steps
        args.micro_batch = max(d for d in range(1, min(args.micro_batch, mini) + 1) if mini % d == 0)
    quiet_logs()
    torch.set_num_threads(args.threads)
    seed_all(args.seed)

    from pzstream.llm.tiny import resolve_model
    from pzstream.orz.prompt_sets import chance_of, walkthrough_samples

    t_start = time.monotonic()
    samples = walkthrough_samples("default", max_candidates=args.candidates, limit=args.prompts)
    if len(samples) < args.prompts:
        raise SystemExit(f"the default game's walkthrough has only {len(samples)} states (< --prompts {args.prompts})")
    chance = chance_of(samples)
    model_path = resolve_model("tiny")
    print(f"prompt set: {len(samples)} walkthrough states of the default game, K = {args.candidates} "
          f"(chance {chance:.3f}); {args.samples} samples per prompt; {args.episodes} episodes per run; "
          f"lr {args.lr:g}, update steps {args.update_steps}, micro-batch {args.micro_batch}", flush=True)

    ppo = one_run("ppo", False, args, samples, model_path)
    grpo = one_run("grpo", True, args, samples, model_path)

    print()
    print(f"{'episode':>7} | {'PPO reward':>10} | {'GRPO reward':>11}")
    for k in range(args.episodes):
        print(f"{k:>7} | {ppo['curve'][k]:>10.3f} | {grpo['curve'][k]:>11.3f}")
    print(f"{'after':>7} | {ppo['after']:>10.3f} | {grpo['after']:>11.3f}")
    print(f"chance {chance:.3f}; PPO first/last 2 episodes {ppo['first']:.3f} -> {ppo['last']:.3f}; "
          f"GRPO {grpo['first']:.3f} -> {grpo['last']:.3f}")
    print()
    print(f"{'run':>5} | {'startup s':>9} | {'episode s':>9} | " + " | ".join(f"{p + ' s':>10}" for p in TIMES))
    for r in (ppo, grpo):
        print(f"{r['label']:>5} | {r['startup_s']:>9.1f} | {np.mean(r['episode_s']):>9.2f} | "
              + " | ".join(f"{r['times'][p]:>10.3f}" for p in TIMES))
    print(f"runtime: {ppo['runtime']} ({ppo['describe']})", flush=True)

    r3 = lambda x: round(float(x), 4)  # noqa: E731
    out = {
        "bench": "ppo", "quick": args.quick,
        "reward_first": r3(ppo["first"]), "reward_last": r3(ppo["last"]), "chance": r3(chance),
        "episodes": args.episodes, "runtime": ppo["runtime"],
        "grpo_reward_first": r3(grpo["first"]), "grpo_reward_last": r3(grpo["last"]),
        "reward_after": r3(ppo["after"]), "grpo_reward_after": r3(grpo["after"]),
        "ppo_curve": [r3(x) for x in ppo["curve"]], "grpo_curve": [r3(x) for x in grpo["curve"]],
        "ppo_response_tokens": [r3(ppo["rows"][0]["response_length"]), r3(ppo["rows"][-1]["response_length"])],
        "grpo_response_tokens": [r3(grpo["rows"][0]["response_length"]), r3(grpo["rows"][-1]["response_length"])],
        "ppo_kl_last": r3(ppo["rows"][-1].get("kl", 0.0)), "grpo_kl_last": r3(grpo["rows"][-1].get("kl", 0.0)),
        "startup_s": r3(ppo["startup_s"]), "grpo_startup_s": r3(grpo["startup_s"]),
        "episode_s": r3(np.mean(ppo["episode_s"])), "grpo_episode_s": r3(np.mean(grpo["episode_s"])),
        "times_s": {p: r3(ppo["times"][p]) for p in TIMES}, "grpo_times_s": {p: r3(grpo["times"][p]) for p in TIMES},
        "prompts": args.prompts, "candidates": args.candidates, "samples_per_prompt": args.samples,
        "actor_learning_rate": args.lr, "critic_learning_rate": args.critic_lr,
        "policy_update_steps": args.update_steps, "critic_update_steps": args.update_steps,
        "micro_train_batch_size": args.micro_batch, "kl_loss_coef": args.kl_coef, "seed": args.seed,
        "seconds": round(time.monotonic() - t_start, 1), "versions": versions(),
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
