"""ORZ-style PPO episodes on a real LLM: exact-match reward over episodes, PPO with a critic and GRPO.

    python bench/ppo.py [--quick] [--model smollm2-135m-instruct] [--game zork1] [--methods ppo,grpo]
                        [--seeds S] [--episodes E] [--prompts P] [--held-out H] [--candidates K]
                        [--lr LR] [--runtime auto|ray|inprocess] [--device cpu|cuda] [--seed S0]
                        [llm.KEY=VALUE ...]

1. A fixed prompt set from a game's walkthrough (``prompt_sets.walkthrough_samples``; default
   Jericho's zork1): the first P states, each with K candidate actions (the walkthrough's action
   among them, the others drawn from the valid actions by the run's seed, shuffled), so a uniform
   guess earns exact-match reward 1/K (``chance``). The next H states are held out: never trained
   on, only measured.
2. The model is ``--model`` (or ``llm.model=``; default the packaged real model
   ``smollm2-135m-instruct``, ``tiny`` for the project's random-init tiny Qwen2). Choice mode asks
   the prior's own scoring prompt, as the PPO worker does (``llm.prompt_format``,
   ``llm.list_candidates``, ``llm.history_len``, ``llm.max_prompt_tokens``; defaults here: the
   priorzero format without listed candidates, 1 history step, 192 tokens), so PPO trains the
   token paths the collectors' prior reads.
3. For each seed, one run per method, each on a fresh runtime (``orz.runtime.make_runtime``: by
   default Ray actors + vLLM engine + DeepSpeed ZeRO where they import, else in-process
   transformers + torch), each closed after its last episode:
     - ``ppo``: PPO with a critic (``use_grpo`` False: GAE on the critic's values, whitened advantages);
     - ``grpo``: rewards normalised within each prompt's group, no critic.
   Every episode (``orz.episode.run_episode``) takes all P prompts, ``n_samples_per_prompt``
   answers each, drawn from softmax(mean token log-prob / T) over the K candidates and trained as
   that distribution (``orz/rollout.py``); reward = exact match only (``rewards = ["exact:1.0"]``),
   then the PPO/critic updates and the weight sync into the rollout engine.
4. Figures. An episode's reward is the mean exact-match reward of its own sampled answers
   (``metrics["reward_mean"]``), drawn before that episode's update. The expected reward of a
   policy on a prompt set is the probability its choice distribution gives the walkthrough's
   action, averaged over the prompts (``episode.score_choices``: what a rollout earns on average,
   without the sampling noise); it is measured before the first episode and after the last, on the
   P training prompts and on the H held-out ones; ``top1`` is the share of prompts whose most likely
   answer is the walkthrough's.

Figures in the last stdout line (one JSON object); with several seeds a figure is the mean over
seeds, ``*_sd`` its standard deviation over seeds and ``*_by_seed`` the values:
    reward_first / reward_last     PPO run: mean reward of its first / last 2 episodes
    grpo_reward_first / grpo_reward_last   the same for the GRPO run
    reward_after / grpo_reward_after       expected reward on the training prompts after the last episode
    expected_reward_before         the untrained policy's expected reward on the training prompts
    heldout_reward_before / heldout_reward_after (and grpo_heldout_reward_after)   on the held-out prompts
    chance                         1/K averaged over the prompts
    ppo_curve / grpo_curve         every episode's reward (mean over seeds); *_curves: per seed
    episodes, seeds, runtime, model, game, prompt settings, startup_s, episode_s, per-phase times, versions

Seeds: run ``i`` uses seed ``--seed + i``: Python, numpy and torch, ``ppo.seed`` (the critic head's
init, DeepSpeed), the distractor candidates; episode k samples with seed ``seed + 1000 k`` (as the
PPO worker does), so a rerun on the same machine repeats the curve. ``PZSTREAM_BENCH_SMOKE=1``: the
tiny model, 4 prompts, 2 episodes, GRPO only (checks that the bench runs).
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

SMOKE = os.environ.get("PZSTREAM_BENCH_SMOKE") == "1"
DEFAULT_MODEL = "smollm2-135m-instruct"
#: The prompt the collectors' prior asks the real model (bench/prior_quality.py: the sharpest for
#: SmolLM2), kept short so that an episode takes about a minute on 2 CPU cores.
PROMPT_DEFAULTS = ("llm.prompt_format=orz", "llm.list_candidates=false", "llm.history_len=1",
                   "llm.max_prompt_tokens=192")
#: Adam's step for each model: the tiny model is random-init; the real one is measured in bench/RESULTS.md.
DEFAULT_LR = {"tiny": 1e-3}
REAL_LR = 1e-5
EPISODE_METRICS = ("reward_mean", "kl", "kl_before", "policy_loss", "value_loss", "clip_frac", "response_length")
TIMES = ("generate", "reward", "forward", "train", "sync")
METHODS = {"ppo": False, "grpo": True}  # name -> use_grpo


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


def choice_quality(runtime, samples, cfg, llm_cfg) -> dict[str, float]:
    """The policy's expected exact-match reward on ``samples`` (probability of the walkthrough's
    action under softmax(score / T)) and the share whose most likely answer is it (no update)."""
    from pzstream.llm.factory import prompt_config
    from pzstream.orz.episode import score_choices

    *_, scores = score_choices(runtime, samples, cfg, llm_cfg.history_len, prompt_config(llm_cfg),
                               llm_cfg.list_candidates)
    probs, top1 = [], []
    for s, sc in zip(samples, scores):
        z = np.asarray(sc, np.float64) / cfg.temperature
        q = np.exp(z - z.max())
        q /= q.sum()
        truth = s.candidates.index(s.truth)
        probs.append(q[truth])
        top1.append(float(np.argmax(q) == truth))
    return {"expected": float(np.mean(probs)), "top1": float(np.mean(top1))}


def ppo_section(args, use_grpo: bool, n_prompts: int, seed: int, llm_cfg):
    from pzstream.config import PPOSection

    return PPOSection(enabled=True, runtime=args.runtime, rollout_batch_size=n_prompts, fire_threshold=n_prompts,
                      queue_capacity=max(4096, n_prompts), n_samples_per_prompt=args.samples,
                      micro_train_batch_size=args.micro_batch, micro_forward_batch_size=max(16, args.micro_batch),
                      policy_update_steps=args.update_steps, critic_update_steps=args.update_steps,
                      actor_learning_rate=args.lr, critic_learning_rate=args.critic_lr,
                      use_kl_loss=True, kl_loss_coef=args.kl_coef, use_grpo=use_grpo, answer_mode="choice",
                      rewards=["exact:1.0"], temperature=1.0, seed=seed, ray_num_cpus=args.ray_cpus,
                      prompt_max_len=llm_cfg.max_prompt_tokens, device=args.device)


def one_run(label: str, use_grpo: bool, args, train, held, model_path: str, seed: int, llm_cfg) -> dict:
    from pzstream.llm.factory import prompt_config
    from pzstream.orz.episode import run_episode
    from pzstream.orz.runtime import make_runtime
    from pzstream.roles.ppo_worker import build_reward_fn

    cfg = ppo_section(args, use_grpo, len(train), seed, llm_cfg)
    reward_fn, _ = build_reward_fn(cfg)
    pcfg = prompt_config(llm_cfg)
    seed_all(seed)
    t = time.monotonic()
    runtime = make_runtime(cfg, model_path)
    startup_s = time.monotonic() - t
    print(f"[{label} seed {seed}] runtime {runtime.name} up in {startup_s:.1f}s: {runtime.describe}", flush=True)
    rows, episode_s = [], []
    try:
        before = {"train": choice_quality(runtime, train, cfg, llm_cfg),
                  "held": choice_quality(runtime, held, cfg, llm_cfg) if held else None}
        for k in range(args.episodes):
            t = time.monotonic()
            res = run_episode(runtime, train, cfg, reward_fn, history_len=llm_cfg.history_len, seed=seed + 1000 * k,
                              prior_prompt=pcfg, list_candidates=llm_cfg.list_candidates)
            episode_s.append(time.monotonic() - t)
            m = res.metrics
            rows.append({key: float(m[key]) for key in EPISODE_METRICS if key in m}
                        | {f"time_{p}": float(m.get(f"time_{p}", 0.0)) for p in TIMES})
            print(f"[{label} seed {seed}] episode {k:>3}: reward {m['reward_mean']:.3f}  kl {m.get('kl', 0.0):.4f}  "
                  f"policy_loss {m.get('policy_loss', float('nan')):+.4f}  "
                  f"value_loss {m.get('value_loss', float('nan')):.4f}  {episode_s[-1]:.1f}s", flush=True)
        after = {"train": choice_quality(runtime, train, cfg, llm_cfg),
                 "held": choice_quality(runtime, held, cfg, llm_cfg) if held else None}
    finally:
        runtime.close()
    curve = [r["reward_mean"] for r in rows]
    n_edge = min(2, len(curve))
    print(f"[{label} seed {seed}] expected reward on the training prompts {before['train']['expected']:.3f} -> "
          f"{after['train']['expected']:.3f}" + (f", held-out {before['held']['expected']:.3f} -> "
                                                 f"{after['held']['expected']:.3f}" if held else ""), flush=True)
    return {"label": label, "seed": seed, "runtime": runtime.name, "describe": runtime.describe,
            "startup_s": startup_s, "rows": rows, "curve": curve, "episode_s": episode_s,
            "before": before, "after": after,
            "first": float(np.mean(curve[:n_edge])), "last": float(np.mean(curve[-n_edge:])),
            "times": {p: float(np.mean([r[f"time_{p}"] for r in rows])) for p in TIMES}}


def prompt_sets(game: str, n_train: int, n_held: int, n_candidates: int, seed: int, llm_cfg, env_cfg):
    """(training prompts, held-out prompts): ``n_train + n_held`` states sampled along ``game``'s
    walkthrough by ``seed`` (``pzstream.env.walkthrough``: its action matched to the valid action
    that is the same move), ``n_held`` of them drawn by ``seed`` to be held out; each with the
    walkthrough's action and ``n_candidates - 1`` other valid actions, shuffled."""
    from pzstream.env.sources import resolve_story_file
    from pzstream.env.walkthrough import WalkthroughSettings, cached_states
    from pzstream.orz.samples import PromptSample

    settings = WalkthroughSettings(max_states=n_train + n_held, history_steps=llm_cfg.history_len, seed=seed)
    ws, _ = cached_states(resolve_story_file(game, env_cfg.games_dir), settings, env_cfg.cache_dir)
    if len(ws.states) < n_train + n_held:
        raise SystemExit(f"error: {game}'s walkthrough gave {len(ws.states)} states (< --prompts {n_train} "
                         f"+ --held-out {n_held})")
    rng = random.Random(seed)
    out = []
    for st in ws.states:
        truth = st.candidates[st.target]
        others = [c for c in st.candidates if c != truth]
        rng.shuffle(others)
        cands = others[:n_candidates - 1] + [truth]
        rng.shuffle(cands)
        out.append(PromptSample(game=ws.game, observation=st.observation, candidates=cands, truth=truth,
                                history=[tuple(h) for h in st.history], visits=[float(c == truth) for c in cands],
                                reward=0.0, collector_id="walkthrough", episode_id=0, step=st.step, seed=None,
                                prefix=None, wm_version=0, llm_version=0))
    held_at = set(rng.sample(range(len(out)), n_held))
    return ([s for i, s in enumerate(out) if i not in held_at], [s for i, s in enumerate(out) if i in held_at])


def stats(values) -> tuple[float, float]:
    """(mean, standard deviation over seeds; 0 for one seed)."""
    v = np.asarray(list(values), np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def aggregate(runs: list[dict]) -> dict:
    """One method's runs (one per seed) as figures: means, standard deviations, per-seed values."""
    out = {"curves": [r["curve"] for r in runs], "curve": np.mean([r["curve"] for r in runs], axis=0).tolist()}
    for key, pick in (("first", lambda r: r["first"]), ("last", lambda r: r["last"]),
                      ("before", lambda r: r["before"]["train"]["expected"]),
                      ("after", lambda r: r["after"]["train"]["expected"]),
                      ("top1_before", lambda r: r["before"]["train"]["top1"]),
                      ("top1_after", lambda r: r["after"]["train"]["top1"]),
                      ("held_before", lambda r: r["before"]["held"]["expected"] if r["before"]["held"] else np.nan),
                      ("held_after", lambda r: r["after"]["held"]["expected"] if r["after"]["held"] else np.nan),
                      ("held_top1_before", lambda r: r["before"]["held"]["top1"] if r["before"]["held"] else np.nan),
                      ("held_top1_after", lambda r: r["after"]["held"]["top1"] if r["after"]["held"] else np.nan),
                      ("kl_last", lambda r: r["rows"][-1].get("kl", 0.0)), ("startup_s", lambda r: r["startup_s"]),
                      ("episode_s", lambda r: np.mean(r["episode_s"]))):
        vals = [float(pick(r)) for r in runs]
        out[key], out[f"{key}_sd"] = stats(vals)
        out[f"{key}_by_seed"] = vals
    out["times"] = {p: float(np.mean([r["times"][p] for r in runs])) for p in TIMES}
    out["response_tokens"] = [float(np.mean([r["rows"][0]["response_length"] for r in runs])),
                              float(np.mean([r["rows"][-1]["response_length"] for r in runs]))]
    out["runtime"], out["describe"] = runs[0]["runtime"], runs[0]["describe"]
    return out


def tables(agg: dict[str, dict], episodes: int, chance: float) -> str:
    names = list(agg)
    lines = [f"{'episode':>7} | " + " | ".join(f"{n.upper() + ' reward':>16}" for n in names)]
    for k in range(episodes):
        cells = []
        for n in names:
            mean, sd = stats(c[k] for c in agg[n]["curves"])
            cells.append(f"{mean:>9.3f} ± {sd:.3f}")
        lines.append(f"{k:>7} | " + " | ".join(cells))
    lines += ["", f"chance {chance:.3f}; mean ± sd over seeds of the first / last 2 episodes' reward, and the expected "
              "reward (probability of the walkthrough's action) before / after, on the training and held-out prompts",
              f"{'method':>6} | {'first 2':>13} | {'last 2':>13} | {'train before':>13} | {'train after':>13} | "
              f"{'held before':>13} | {'held after':>13}"]
    for n in names:
        a = agg[n]
        lines.append(f"{n:>6} | " + " | ".join(f"{a[k]:>6.3f} ± {a[k + '_sd']:.3f}" for k in
                                              ("first", "last", "before", "after", "held_before", "held_after")))
    lines += ["", f"{'run':>5} | {'startup s':>9} | {'episode s':>9} | " + " | ".join(f"{p + ' s':>10}" for p in TIMES)]
    for n in names:
        a = agg[n]
        lines.append(f"{n:>5} | {a['startup_s']:>9.1f} | {a['episode_s']:>9.2f} | "
                     + " | ".join(f"{a['times'][p]:>10.3f}" for p in TIMES))
    return "\n".join(lines)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer episodes (4 per run), one seed")
    ap.add_argument("--model", default=None, help=f"llm.model (default {DEFAULT_MODEL}; tiny: the random-init tiny model)")
    ap.add_argument("--game", default="zork1", help="the Jericho game whose walkthrough gives the prompts")
    ap.add_argument("--methods", default="ppo,grpo", help="comma-separated: ppo (with a critic), grpo")
    ap.add_argument("--seeds", type=int, default=None, help="runs per method, seeds --seed .. --seed + S - 1 (default 3, quick 1)")
    ap.add_argument("--runtime", default="auto", choices=["auto", "ray", "inprocess"])
    ap.add_argument("--episodes", type=int, default=None, help="episodes per run (default 6, quick 4)")
    ap.add_argument("--prompts", type=int, default=6, help="P: training prompts per episode (rollout_batch_size)")
    ap.add_argument("--held-out", type=int, default=8, help="H: walkthrough states measured, never trained on")
    ap.add_argument("--candidates", type=int, default=4, help="K: candidate actions per prompt (chance 1/K)")
    ap.add_argument("--samples", type=int, default=4, help="n_samples_per_prompt")
    ap.add_argument("--lr", type=float, default=None, help=f"actor_learning_rate (default {REAL_LR:g}; tiny 1e-3)")
    ap.add_argument("--critic-lr", type=float, default=None, help="critic_learning_rate (default: --lr)")
    ap.add_argument("--update-steps", type=int, default=2, help="policy_update_steps = critic_update_steps")
    ap.add_argument("--micro-batch", type=int, default=16, help="micro_train_batch_size")
    ap.add_argument("--kl-coef", type=float, default=0.001, help="kl_loss_coef (use_kl_loss on)")
    ap.add_argument("--ray-cpus", type=float, default=None, help="CPUs of the local Ray (default: all)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of this process (in-process runtime; "
                    "1: on a busy 2-core machine a forward ran 12x slower with 2, bench/RESULTS.md)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="the in-process runtime's device: cpu, cuda or cuda:N")
    ap.add_argument("overrides", nargs="*", help="llm.KEY=VALUE: the model and the prior's prompt (llm.model, "
                    "llm.prompt_format, llm.list_candidates, llm.history_len, llm.max_prompt_tokens)")
    args = ap.parse_args()
    bad = [o for o in args.overrides if not o.startswith("llm.") or "=" not in o]
    if bad:
        ap.error(f"only llm.KEY=VALUE overrides are taken (PPO's settings are flags): {bad}")
    model = args.model or ("tiny" if SMOKE else DEFAULT_MODEL)
    args.overrides = [f"llm.model={model}", *PROMPT_DEFAULTS, *args.overrides]
    if SMOKE:
        args.episodes, args.seeds, args.prompts, args.held_out, args.samples = 2, 1, 4, 2, 2
        args.methods, args.runtime = "grpo", "inprocess"
    args.episodes = args.episodes or (4 if args.quick else 6)
    args.seeds = args.seeds or (1 if args.quick else 3)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        ap.error(f"--methods: {unknown or 'none'} (known: {', '.join(METHODS)})")
    args.methods = methods
    n = args.prompts * args.samples
    if n % args.update_steps or (n // args.update_steps) % args.micro_batch:
        # keep the run valid: the largest micro-batch that divides the mini-batch
        mini = n // args.update_steps
        args.micro_batch = max(d for d in range(1, min(args.micro_batch, mini) + 1) if mini % d == 0)
    return args


def main() -> None:
    args = parse_args()
    quiet_logs()
    torch.set_num_threads(args.threads)
    from pzstream.config import ConfigError, load_config
    from pzstream.llm.tiny import resolve_model
    from pzstream.orz.prompt_sets import chance_of

    try:
        cfg = load_config(None, args.overrides)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    llm_cfg = cfg.llm
    args.lr = args.lr or DEFAULT_LR.get(llm_cfg.model, REAL_LR)
    args.critic_lr = args.critic_lr or args.lr
    t_start = time.monotonic()
    model_path = resolve_model(llm_cfg.model)
    seeds = [args.seed + i for i in range(args.seeds)]
    sets = {s: prompt_sets(args.game, args.prompts, args.held_out, args.candidates, s, llm_cfg, cfg.env) for s in seeds}
    chance = float(np.mean([chance_of(sets[s][0]) for s in seeds]))
    print(f"model {llm_cfg.model} ({model_path}); prompts: {args.prompts} training + {args.held_out} held-out states "
          f"along {args.game}'s walkthrough, K = {args.candidates} (chance {chance:.3f}), {llm_cfg.prompt_format} "
          f"format, candidates {'listed' if llm_cfg.list_candidates else 'not listed'}, {llm_cfg.history_len} history "
          f"steps, <= {llm_cfg.max_prompt_tokens} tokens; {args.samples} samples per prompt; {args.episodes} episodes "
          f"per run; seeds {seeds}; lr {args.lr:g} (critic {args.critic_lr:g}), update steps {args.update_steps}, "
          f"micro-batch {args.micro_batch}", flush=True)
    runs = {m: [one_run(m, METHODS[m], args, *sets[s], model_path, s, llm_cfg) for s in seeds] for m in args.methods}
    agg = {m: aggregate(r) for m, r in runs.items()}
    print()
    print(tables(agg, args.episodes, chance))
    first = agg[args.methods[0]]
    print(f"runtime: {first['runtime']} ({first['describe']})", flush=True)
    print(json.dumps(result_json(agg, args, seeds, chance, llm_cfg, time.monotonic() - t_start)), flush=True)


def result_json(agg: dict[str, dict], args, seeds: list[int], chance: float, llm_cfg, seconds: float) -> dict:
    r3 = lambda x: None if x is None or not np.isfinite(x) else round(float(x), 4)  # noqa: E731
    out: dict = {"bench": "ppo", "quick": args.quick, "smoke": SMOKE, "chance": r3(chance), "episodes": args.episodes,
                 "seeds": seeds, "methods": args.methods, "runtime": agg[args.methods[0]]["runtime"],
                 "model": llm_cfg.model, "game": args.game}
    base = agg[args.methods[0]]  # every method starts from the same weights and prompts
    out["expected_reward_before"], out["expected_reward_before_sd"] = r3(base["before"]), r3(base["before_sd"])
    out["top1_before"] = r3(base["top1_before"])
    out["heldout_reward_before"], out["heldout_top1_before"] = r3(base["held_before"]), r3(base["held_top1_before"])
    for m in METHODS:
        p = "" if m == "ppo" else f"{m}_"
        a = agg.get(m)
        keys = {"reward_first": "first", "reward_last": "last", "reward_after": "after", "top1_after": "top1_after",
                "heldout_reward_after": "held_after", "heldout_top1_after": "held_top1_after"}
        for key, src in keys.items():
            out[f"{p}{key}"] = r3(a[src]) if a else None
            out[f"{p}{key}_sd"] = r3(a[f"{src}_sd"]) if a else None
            out[f"{p}{key}_by_seed"] = [r3(x) for x in a[f"{src}_by_seed"]] if a else None
        out[f"{m}_curve"] = [r3(x) for x in a["curve"]] if a else None
        out[f"{m}_curves"] = [[r3(x) for x in c] for c in a["curves"]] if a else None
        out[f"{m}_response_tokens"] = [r3(x) for x in a["response_tokens"]] if a else None
        out[f"{m}_kl_last"] = r3(a["kl_last"]) if a else None
        out[f"{p}startup_s"] = r3(a["startup_s"]) if a else None
        out[f"{p}episode_s"] = r3(a["episode_s"]) if a else None
        out[f"{p}times_s"] = {t: r3(a["times"][t]) for t in TIMES} if a else None
    out.update({"prompts": args.prompts, "held_out": args.held_out, "candidates": args.candidates,
                "samples_per_prompt": args.samples, "prompt_format": llm_cfg.prompt_format,
                "list_candidates": llm_cfg.list_candidates, "history_len": llm_cfg.history_len,
                "prompt_max_len": llm_cfg.max_prompt_tokens, "actor_learning_rate": args.lr,
                "critic_learning_rate": args.critic_lr, "policy_update_steps": args.update_steps,
                "critic_update_steps": args.update_steps, "micro_train_batch_size": args.micro_batch,
                "kl_loss_coef": args.kl_coef, "seed": args.seed, "threads": args.threads,
                "seconds": round(seconds, 1), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "versions": versions()})
    return out


if __name__ == "__main__":
    main()
