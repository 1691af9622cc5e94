"""PriorZero's built-in LLM training (SFT / RFT) on a real LLM: agreement with the search, and the
walkthrough yardstick before and after.

    python bench/llm.py [--quick] [--model smollm2-135m-instruct] [--mode sft|sft_visits|rft]
                        [--source mcts|quest] [--games zork1,detective] [--steps N] [--updates N]
                        [--lr LR] [--mrr-games a,b] [--mrr-states N] [--wm-weights DIR] [llm.KEY=VALUE ...]

1. Data. ``--source mcts`` (default): ``--steps`` real env steps of ``--games`` played by the
   collectors' own policy, MCTS over the world model (untrained, version 0, unless ``--wm-weights``
   names a run's weights directory) with the LLM's root prior mixed in (``llm.mix``,
   ``llm.fixed_weight``), exploring as a collector does (root Dirichlet noise, visits sampled at the
   search's temperature). The segments carry the search's visit distribution. ``--source quest``: the
   quest teacher on the embedded TextWorld game (``bench/quest_teacher.py``: visits peaked on the
   first command of TextWorld's winning policy). Samples use ``chosen="visits"`` (the most visited
   candidate); episodes are split train / held-out (every 4th episode held out).
2. The LLM is ``--model`` (or ``llm.model=``; default the packaged real model
   ``smollm2-135m-instruct``; ``tiny``: the project's random-init tiny Qwen2), loaded once as the
   collectors' prior (``factory.LocalPrior``): it prices the search's roots, it is trained in place
   by ``LLMTrainer`` (``--mode``), and it is measured. Prompts are the prior's (``llm.prompt_format``,
   ``llm.list_candidates``, ``llm.history_len``, ``llm.max_prompt_tokens``; defaults here: priorzero
   without listed candidates, 1 history step, 256 tokens), in its chat template where it has one.
3. Agreement (top candidate by mean token log-prob == the search's most visited) on the held-out
   and training steps, before, during and after training. Chance = mean 1/K.
4. The walkthrough yardstick (``bench/prior_quality.py``) before and after training, on the same
   states and prompts: at sampled states along each ``--mrr-games`` Jericho walkthrough, the rank of
   the walkthrough's action among the valid actions under the prior's scores; MRR, top-1, top-3 per
   game and over games (each game weighs the same). And a collapse check on those states: the
   prior's mean entropy over the candidates (softmax(score / ``llm.temperature``), as the search
   gets it) divided by log K, the share of states whose top candidate is the most common top
   candidate text, the number of distinct top texts, and the share of states whose top candidate
   changed with training.

The last stdout line is one JSON object. ``PZSTREAM_BENCH_SMOKE=1``: the tiny model, a few steps of
one game, 4 updates, 3 walkthrough states of one game (checks that the bench runs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pzstream.llm.train import LLMTrainer, agreement, chance, samples_from_segments  # noqa: E402

SMOKE = os.environ.get("PZSTREAM_BENCH_SMOKE") == "1"
DEFAULT_MODEL = "smollm2-135m-instruct"
PROMPT_DEFAULTS = ("llm.prompt_format=orz", "llm.list_candidates=false", "llm.history_len=1",
                   "llm.max_prompt_tokens=256")
#: AdamW's step: the random-init tiny model learns at 3e-3; the real model's was measured (bench/RESULTS.md).
DEFAULT_LR = {"tiny": 3e-3}
REAL_LR = 1e-5


def log(msg: str) -> None:
    print(f"[llm] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data

def collect_mcts_segments(cfg, prior, games: list[str], steps: int, seed: int, max_episode_steps: int,
                          weights_dir: Path | None):
    """``steps`` env steps (shared out over ``games``) played by the collectors' MCTS policy with
    ``prior`` at its root; returns (segments, world-model version, the policies' prior failures)."""
    from bench.prior_quality import load_world_model
    from bench.quest_teacher import play_segments
    from pzstream.agent import GamePlayer, mcts_policy
    from pzstream.env import open_game

    wm, version = load_world_model(cfg, weights_dir)
    segs, errors = [], 0
    for i, g in enumerate(games):
        n = steps // len(games) + (1 if i < steps % len(games) else 0)
        game = open_game(g, games_dir=cfg.env.games_dir, cache_dir=cfg.env.cache_dir)
        policy = mcts_policy(cfg, seed + i, prior, device=cfg.search_server.device)
        policy.offer(wm, version)
        try:
            player = GamePlayer(game, policy, f"mcts-{g}", 20, max_episode_steps, seed + 100 * i)
            segs += play_segments(player, n)
        finally:
            game.close()
        errors += policy.prior_errors
        log(f"{g}: {player.stats.env_steps} steps, {player.stats.episodes} episodes ended, scores {player.stats.scores}")
    return segs, version, errors


def collect(args, cfg, prior):
    """(segments, a description of where they came from)."""
    if args.source == "quest":
        from bench.quest_teacher import collect_quest_segments

        segs = collect_quest_segments(args.steps, seed=args.seed, explore=0.5, max_episode_steps=40)
        return segs, {"source": "quest", "games": ["tw-default"]}
    segs, version, errors = collect_mcts_segments(cfg, prior, args.games, args.steps, args.seed,
                                                  args.max_episode_steps, args.wm_weights)
    return segs, {"source": "mcts", "games": args.games, "wm_version": version, "prior_errors": errors,
                  "num_simulations": cfg.search.num_simulations, "llm_mix": cfg.llm.mix,
                  "llm_fixed_weight": cfg.llm.fixed_weight, "root_noise_fraction": cfg.search.root_noise_fraction}


# ---------------------------------------------------------------- the walkthrough yardstick

def walkthrough_states(games: list[str], n_states: int, seed: int, cfg) -> dict:
    """{game: WalkthroughStates}, built as ``bench/prior_quality.py`` builds them (so its cache serves)."""
    from bench.prior_quality import build_all_states
    from pzstream.env.sources import default_games_dir
    from pzstream.env.walkthrough import WalkthroughSettings

    settings = WalkthroughSettings(max_states=n_states, seed=seed,
                                   history_steps=max(cfg.llm.history_len, cfg.world_model().context_steps))
    games_dir = str(Path(cfg.env.games_dir).expanduser()) if cfg.env.games_dir else str(default_games_dir())
    return build_all_states(games, settings, games_dir, cfg.env.cache_dir)


def score_walkthrough(prior, all_states: dict) -> dict[str, list[np.ndarray]]:
    """{game: the prior's mean token log-prob of every candidate, per state}: the collectors' prompts
    (``scoring_prompts``) scored by the prior's backend, one root a call as a collector asks."""
    from pzstream.llm.prompts import scoring_prompts

    backend = prior.backend
    backend.prefix.clear()  # the weights may have changed since the prompts' shared head was computed
    out = {}
    for game, ws in all_states.items():
        st = ws.states
        cands = [list(s.candidates) for s in st]
        prompts = scoring_prompts(backend.tokenizer, prior.prompt_cfg, [list(s.history) for s in st],
                                  [s.observation for s in st], cands, prior.cfg.list_candidates)
        out[game] = [np.asarray(backend.mean_logprobs([p], [c])[0], np.float64) for p, c in zip(prompts, cands)]
    return out


def collapse(scores: dict[str, list[np.ndarray]], all_states: dict, temperature: float) -> dict:
    """Is the prior collapsing into one answer? Mean normalised entropy of softmax(score / T), the
    share of states whose top candidate is the most common top text, the distinct top texts."""
    ent, tops = [], []
    for game, ws in all_states.items():
        for s, sc in zip(ws.states, scores[game]):
            z = sc / temperature
            p = np.exp(z - z.max())
            p /= p.sum()
            if len(p) > 1:
                ent.append(float(-(p * np.log(np.clip(p, 1e-30, None))).sum() / np.log(len(p))))
            tops.append(s.candidates[int(np.argmax(sc))])
    common, n = Counter(tops).most_common(1)[0]
    return {"entropy_norm": float(np.mean(ent)), "top_share": n / len(tops), "top_text": common,
            "distinct_tops": len(set(tops)), "states": len(tops), "tops": tops}


def yardstick(prior, all_states: dict) -> dict:
    """MRR / top-1 / top-3 per game and over games, and the collapse figures, of the prior as it is now."""
    from bench.prior_quality import over_games, state_metrics

    t = time.perf_counter()
    scores = score_walkthrough(prior, all_states)
    per_game = {g: state_metrics(scores[g], [s.target for s in ws.states]) for g, ws in all_states.items()}
    mean = over_games(per_game)
    return {"per_game": per_game, "mrr": mean["mrr"], "top1": mean["top1"], "top3": mean["top3"],
            "collapse": collapse(scores, all_states, prior.cfg.temperature), "seconds": time.perf_counter() - t}


# ---------------------------------------------------------------- training

def train(args, prior, train_set, held) -> tuple[list[dict], dict]:
    """``args.updates`` trainer steps on batches drawn from ``train_set``; agreement measured at
    ``args.evals + 1`` points. Returns the rows and the times."""
    model, tok = prior.backend.model, prior.backend.tokenizer
    cont = prior.prompt_cfg.continuation_template
    dev = next(model.parameters()).device  # train where the prior scores (llm.device), not the trainer's cpu default
    trainer = LLMTrainer(model, tok, lr=args.lr, mode=args.mode, continuation=cont, device=dev)
    rng = np.random.default_rng(args.seed)
    eval_at = set(np.linspace(0, args.updates, args.evals + 1).astype(int).tolist())
    rows, loss_key = [], "train/llm_rft_loss" if args.mode == "rft" else "train/llm_sft_loss"
    train_s = eval_s = kl = 0.0
    recent: list[float] = []
    print(f"{'step':>6} {'loss':>9} {'kl':>8} {'held-out agreement':>19} {'train agreement':>16}", flush=True)
    for step in range(args.updates + 1):
        if step in eval_at:
            t = time.perf_counter()
            a_held = agreement(model, tok, held, device=dev, continuation=cont)
            a_train = agreement(model, tok, train_set[:len(held)], device=dev, continuation=cont)
            eval_s += time.perf_counter() - t
            loss = float(np.mean(recent)) if recent else None
            rows.append({"step": step, "loss": loss, "kl": kl, "agreement": a_held, "train_agreement": a_train})
            print(f"{step:>6} {'-' if loss is None else f'{loss:.4f}':>9} {kl:>8.4f} {a_held:>19.3f} {a_train:>16.3f}",
                  flush=True)
            recent = []
        if step == args.updates:
            break
        t = time.perf_counter()
        batch = [train_set[j] for j in rng.choice(len(train_set), min(args.batch, len(train_set)), replace=False)]
        m = trainer.step(batch)
        train_s += time.perf_counter() - t
        recent.append(m[loss_key])
        kl = m["train/llm_kl"]
    model.eval()
    prior.memo.clear()  # the weights changed: priors scored before are stale
    return rows, {"train_s": train_s, "eval_s": eval_s}


def mrr_table(before: dict, after: dict) -> str:
    lines = [f"{'walkthrough yardstick':<22}{'MRR before':>11}{'MRR after':>11}{'top-1 before':>14}{'top-1 after':>13}"]
    for g in before["per_game"]:
        b, a = before["per_game"][g], after["per_game"][g]
        lines.append(f"{g:<22}{b['mrr']:>11.3f}{a['mrr']:>11.3f}{b['top1']:>14.3f}{a['top1']:>13.3f}")
    lines.append(f"{'mean over games':<22}{before['mrr']:>11.3f}{after['mrr']:>11.3f}{before['top1']:>14.3f}"
                 f"{after['top1']:>13.3f}")
    cb, ca = before["collapse"], after["collapse"]
    lines += ["", f"collapse check over {cb['states']} states: entropy / log K {cb['entropy_norm']:.3f} -> "
              f"{ca['entropy_norm']:.3f}; most common top answer {cb['top_text']!r} {cb['top_share']:.3f} -> "
              f"{ca['top_text']!r} {ca['top_share']:.3f}; distinct top answers {cb['distinct_tops']} -> "
              f"{ca['distinct_tops']}; top answer changed at {top_changed(before, after):.3f} of the states"]
    return "\n".join(lines)


def top_changed(before: dict, after: dict) -> float:
    b, a = before["collapse"]["tops"], after["collapse"]["tops"]
    return float(np.mean([x != y for x, y in zip(b, a)]))


# ---------------------------------------------------------------- command line

def parse_args():
    from bench.prior_quality import QUICK_GAMES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps, updates and walkthrough states")
    ap.add_argument("--model", default=None, help=f"llm.model (default {DEFAULT_MODEL}; tiny: the random-init tiny model)")
    ap.add_argument("--mode", default="sft_visits", choices=LLMTrainer.MODES)
    ap.add_argument("--source", default="mcts", choices=["mcts", "quest"], help="where the search's targets come from")
    ap.add_argument("--games", default="zork1,detective", help="games the MCTS source plays (Jericho names or story files)")
    ap.add_argument("--steps", type=int, default=None, help="env steps to collect (default 160, quick 80)")
    ap.add_argument("--max-episode-steps", type=int, default=20, help="MCTS source: moves per episode")
    ap.add_argument("--wm-weights", type=Path, default=None, help="MCTS source: a run's weights directory (default: "
                    "the untrained world model)")
    ap.add_argument("--updates", type=int, default=None, help="trainer steps (default 30, quick 10)")
    ap.add_argument("--evals", type=int, default=None, help="agreement measurements after the first (default 2, quick 1)")
    ap.add_argument("--batch", type=int, default=None, help="samples an update (default 8, quick 4)")
    ap.add_argument("--lr", type=float, default=None, help=f"AdamW learning rate (default {REAL_LR:g}; tiny 3e-3)")
    ap.add_argument("--mrr-games", default=None, help="walkthrough yardstick games (default bench/prior_quality.py's "
                    f"quick set, {','.join(QUICK_GAMES)})")
    ap.add_argument("--mrr-states", type=int, default=None, help="walkthrough states per game (default 15, quick 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: see bench/ppo.py --help)")
    ap.add_argument("--config", default=None, help="config file (default config/debug.yaml): the search and world model")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides (llm.model, llm.prompt_format, ...)")
    args = ap.parse_args()
    model = args.model or ("tiny" if SMOKE else DEFAULT_MODEL)
    args.overrides = [f"llm.model={model}", *PROMPT_DEFAULTS, "llm.enabled=true", *args.overrides]
    args.games = [g for g in args.games.split(",") if g]
    args.mrr_games = [g for g in (args.mrr_games or ",".join(QUICK_GAMES)).split(",") if g]
    if SMOKE:
        args.games, args.mrr_games = args.games[:1], args.mrr_games[:1]
        args.steps, args.max_episode_steps, args.updates, args.evals, args.mrr_states, args.batch = 16, 4, 4, 2, 3, 4
    args.steps = args.steps or (80 if args.quick else 160)
    args.updates = args.updates or (10 if args.quick else 30)
    args.evals = args.evals or (1 if args.quick else 2)
    args.batch = args.batch or (4 if args.quick else 8)
    args.mrr_states = args.mrr_states or (8 if args.quick else 15)
    return args


def main() -> None:
    args = parse_args()
    from pzstream.config import ConfigError, load_config
    from pzstream.llm.factory import LocalPrior

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    args.lr = args.lr or DEFAULT_LR.get(cfg.llm.model, REAL_LR)
    t_start = time.perf_counter()
    t = time.perf_counter()
    prior = LocalPrior(cfg.llm)
    load_s = time.perf_counter() - t
    tok = prior.backend.tokenizer
    states = walkthrough_states(args.mrr_games, args.mrr_states, args.seed, cfg)
    before = yardstick(prior, states)
    log(f"walkthrough yardstick before training: MRR {before['mrr']:.3f} ({before['seconds']:.0f} s)")

    t = time.perf_counter()
    segs, source = collect(args, cfg, prior)
    collect_s = time.perf_counter() - t
    from bench.quest_teacher import split_by_episode

    train_segs, held_segs = split_by_episode(segs, held_out_every=4)
    train_set = samples_from_segments(train_segs, prior.prompt_cfg, chosen="visits", tokenizer=tok)
    held = samples_from_segments(held_segs, prior.prompt_cfg, chosen="visits", tokenizer=tok)
    if not train_set or not held:
        sys.exit(f"error: {len(train_set)} training and {len(held)} held-out samples: collect more steps "
                 "(--steps) or shorter episodes (--max-episode-steps)")
    episodes = len({(s.header.collector_id, s.header.episode_id) for s in segs})
    base = chance(held)
    print(f"model {cfg.llm.model} ({sum(p.numel() for p in prior.backend.model.parameters()) / 1e6:.1f} M parameters, "
          f"loaded in {load_s:.1f} s); {cfg.llm.prompt_format} prompts, candidates "
          f"{'listed' if cfg.llm.list_candidates else 'not listed'}, {cfg.llm.history_len} history steps, "
          f"<= {cfg.llm.max_prompt_tokens} tokens", flush=True)
    print(f"collected {sum(s.n_steps for s in segs)} steps ({source['source']}: {', '.join(source['games'])}) in "
          f"{collect_s:.1f}s: {episodes} episodes, {len(train_set)} train / {len(held)} held-out samples, chance "
          f"{base:.3f}; {args.mode}, lr {args.lr:g}, {args.updates} updates of {args.batch}", flush=True)

    rows, times = train(args, prior, train_set, held)
    after = yardstick(prior, states)
    print()
    print(mrr_table(before, after), flush=True)
    print(json.dumps(result_json(args, cfg, rows, before, after, source, dict(
        times, collect_s=collect_s, load_s=load_s, seconds=time.perf_counter() - t_start), train_set, held, base,
        episodes, prior)))


def result_json(args, cfg, rows, before, after, source, times, train_set, held, base, episodes, prior) -> dict:
    import transformers

    r = lambda x: round(float(x), 4)  # noqa: E731
    cb, ca = before["collapse"], after["collapse"]
    return {
        "bench": "llm", "quick": args.quick, "smoke": SMOKE, "mode": args.mode, "model": cfg.llm.model,
        "source": source["source"], "target": "most_visited" if source["source"] == "mcts" else "quest_policy_first_command",
        "agreement_before": rows[0]["agreement"], "agreement_after": rows[-1]["agreement"], "chance": r(base),
        "train_agreement_before": rows[0]["train_agreement"], "train_agreement_after": rows[-1]["train_agreement"],
        "final_loss": rows[-1]["loss"], "final_kl": rows[-1]["kl"], "curve": rows,
        "mrr_before": r(before["mrr"]), "mrr_after": r(after["mrr"]),
        "top1_before": r(before["top1"]), "top1_after": r(after["top1"]),
        "top3_before": r(before["top3"]), "top3_after": r(after["top3"]),
        "mrr_per_game_before": {g: r(m["mrr"]) for g, m in before["per_game"].items()},
        "mrr_per_game_after": {g: r(m["mrr"]) for g, m in after["per_game"].items()},
        "entropy_norm_before": r(cb["entropy_norm"]), "entropy_norm_after": r(ca["entropy_norm"]),
        "top_share_before": r(cb["top_share"]), "top_share_after": r(ca["top_share"]),
        "top_text_before": cb["top_text"], "top_text_after": ca["top_text"],
        "distinct_tops_before": cb["distinct_tops"], "distinct_tops_after": ca["distinct_tops"],
        "top_changed": r(top_changed(before, after)), "mrr_games": list(before["per_game"]),
        "mrr_states": cb["states"], "mrr_states_per_game": args.mrr_states, "prior_temperature": cfg.llm.temperature,
        "prompt_format": cfg.llm.prompt_format, "list_candidates": cfg.llm.list_candidates,
        "history_len": cfg.llm.history_len, "max_prompt_tokens": cfg.llm.max_prompt_tokens,
        **{k: v for k, v in source.items() if k != "source"},
        "env_steps": args.steps, "episodes": episodes, "updates": args.updates, "batch": args.batch, "lr": args.lr,
        "samples": len(train_set) + len(held), "train_samples": len(train_set), "held_out_samples": len(held),
        "updates_per_s": round(args.updates / times["train_s"], 4) if times["train_s"] else None,
        **{k: round(v, 1) for k, v in times.items()}, "yardstick_s": round(before["seconds"] + after["seconds"], 1),
        "seed": args.seed, "threads": args.threads,
        "model_params": sum(p.numel() for p in prior.backend.model.parameters()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__},
    }


if __name__ == "__main__":
    main()
