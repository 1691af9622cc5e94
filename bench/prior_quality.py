"""The walkthrough yardstick: where each prior ranks the walkthrough's next action.

    python bench/prior_quality.py [--quick] [--games zork1,detective] [--states 30] [--models a,b]
                                  [--device cpu|cuda] [--train-seconds 180] [--seed 0] [key=value ...]

At sampled states along each game's Jericho walkthrough (``pzstream.env.walkthrough``: the
walkthrough's action matched to a valid action by text or world-state hash, else added to the
candidates), every prior ranks the candidates and the walkthrough action's reciprocal rank,
top-1 and top-3 are averaged per game, then over games (each game weighs the same). Ties count
at their expectation under a random order, so a flat prior scores exactly the uniform figures.

Priors: (a) uniform; (b) the tiny model (``llm.model=tiny``); (c) each model of ``--models``
(default ``smollm2-135m-instruct``; ``LABEL=PATH`` names a model directory); (d) the world model's
root prior (``SearchAdapter.root``'s policy logits) untrained, and after a ``launch.py --role all``
run of ``--train-seconds`` on ``--train-games`` (LLM and PPO off: the policy head learns from its
own search's visits), its weights loaded from ``runs/<name>/weights``.

LLMs score through the project's prior: ``scoring_prompts`` then ``TransformersBackend.mean_logprobs``
(the mean token log-prob of each candidate's answer, its end token included), in every variant of
prompt format (priorzero, orz) x candidates listed in the prompt (off, on) x the tokenizer's chat
template (on, off; only where it has one) x score (the mean, or the sum = mean x answer tokens from
``tokens.encode_answers``). Ranks do not depend on the prior temperature; the mean log-probability
of the walkthrough action under ``log_softmax(score / T)`` is reported for a grid of T, with the best.
Cost: milliseconds of scoring per root (``--batch`` roots a call), on the CPU or ``--device cuda``.

Built states are cached under ``<cache dir>/walkthrough/`` (``PZSTREAM_CACHE_DIR``, default
``~/.cache/pzstream``), keyed by the story file's hash and the settings. Progress goes to stderr;
the last stdout line is one JSON object. ``PZSTREAM_BENCH_SMOKE=1``: one game, 3 states, 25 s of training.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

SMOKE = os.environ.get("PZSTREAM_BENCH_SMOKE") == "1"
#: Games whose walkthrough reaches the maximum score and whose valid actions cost about a second
#: or less a state here (measured: bench/RESULTS.md, "Walkthrough yardstick").
DEFAULT_GAMES = ("zork1", "zork3", "planetfall", "plundered", "detective", "905", "reverb", "night")
QUICK_GAMES = ("zork1", "detective", "905", "reverb")
DEFAULT_MODELS = ("smollm2-135m-instruct",)
#: The smoke run's training: small segments and an early first update, so 25 s publish weights.
SMOKE_TRAINING = ["collector.segment_steps=5", "trainer.min_replay_steps=20", "trainer.publish_every=5",
                  "search.num_simulations=4"]
TEMPERATURES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def log(msg: str) -> None:
    print(f"[prior_quality] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- ranking math

def _place(scores: np.ndarray, target: int) -> tuple[int, int]:
    """(candidates scored above the target, others tied with it); NaN counts as -inf."""
    s = np.where(np.isnan(scores), -np.inf, np.asarray(scores, dtype=np.float64))
    if not 0 <= target < len(s):
        raise ValueError(f"target {target} outside {len(s)} scores")
    above = int(np.sum(s > s[target]))
    tied = int(np.sum(s == s[target])) - 1
    return above, tied


def reciprocal_rank(scores: np.ndarray, target: int) -> float:
    """1 / rank of ``target`` when the scores are sorted high to low, ties broken at random: the
    expectation, mean of 1/r for r in above+1 .. above+tied+1."""
    above, tied = _place(scores, target)
    return float(np.mean(1.0 / np.arange(above + 1, above + tied + 2)))


def top_k(scores: np.ndarray, target: int, k: int) -> float:
    """Probability that ``target`` is among the first ``k`` (ties broken at random)."""
    above, tied = _place(scores, target)
    return float(min(max(k - above, 0), tied + 1) / (tied + 1))


def uniform_reciprocal_rank(n: int) -> float:
    """Expected reciprocal rank of one of ``n`` candidates under a uniformly random order: H_n / n."""
    return float(np.sum(1.0 / np.arange(1, n + 1)) / n)


def target_logprob(scores: np.ndarray, target: int, temperature: float) -> float:
    """log softmax(scores / temperature)[target], the prior's log-probability of the target."""
    x = np.where(np.isfinite(scores), np.asarray(scores, dtype=np.float64), -np.inf) / temperature
    m = x.max()
    if not np.isfinite(m):
        return float(-np.log(len(x)))
    return float(x[target] - m - np.log(np.exp(x - m).sum()))


def same_length(scores: np.ndarray, target: int, words: np.ndarray) -> tuple[np.ndarray, int]:
    """The scores of the candidates with as many words as the target, and the target's index among
    them: ranking there tells what a prior knows beyond how long an action is."""
    keep = np.flatnonzero(np.asarray(words) == words[target])
    return np.asarray(scores)[keep], int(np.flatnonzero(keep == target)[0])


def state_metrics(scores: list[np.ndarray], targets: list[int],
                  words: list[np.ndarray] | None = None) -> dict[str, float]:
    """Mean reciprocal rank, top-1, top-3 and target log-prob per temperature over states; with
    ``words`` (each candidate's word count) also the MRR among the target's same-length candidates."""
    if not scores:
        raise ValueError("no states to score")
    out = {"mrr": np.mean([reciprocal_rank(s, t) for s, t in zip(scores, targets)]),
           "top1": np.mean([top_k(s, t, 1) for s, t in zip(scores, targets)]),
           "top3": np.mean([top_k(s, t, 3) for s, t in zip(scores, targets)])}
    if words is not None:
        out["mrr_same_length"] = np.mean([reciprocal_rank(*same_length(s, t, w))
                                          for s, t, w in zip(scores, targets, words)])
    for temp in TEMPERATURES:
        out[f"logp@{temp:g}"] = np.mean([target_logprob(s, t, temp) for s, t in zip(scores, targets)])
    return {k: float(v) for k, v in out.items()}


def over_games(per_game: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each figure's mean over games (every game weighs the same, whatever its state count)."""
    keys = next(iter(per_game.values())).keys()
    return {k: float(np.mean([m[k] for m in per_game.values()])) for k in keys}


def best_temperature(summary: dict[str, float]) -> tuple[float, float]:
    """(T, mean target log-prob) of the temperature that gives the target the most probability."""
    return max(((t, summary[f"logp@{t:g}"]) for t in TEMPERATURES), key=lambda x: x[1])


# ---------------------------------------------------------------- states

def build_all_states(games: list[str], settings, games_dir: str | None, cache_dir: str | None) -> dict:
    """{game name: WalkthroughStates} (from the cache where built before)."""
    from pzstream.env.sources import resolve_story_file
    from pzstream.env.walkthrough import cached_states

    out = {}
    for g in games:
        t = time.perf_counter()
        states, hit = cached_states(resolve_story_file(g, games_dir), settings, cache_dir, progress=log)
        if not states.states:
            raise RuntimeError(f"{g}: its walkthrough gave no states")
        log(f"{g}: {len(states.states)} states {'from the cache' if hit else 'built'} in "
            f"{time.perf_counter() - t:.1f} s, matches {states.matches()}")
        out[states.game] = states
    return out


# ---------------------------------------------------------------- the priors

def candidate_words(candidates) -> np.ndarray:
    """Words per candidate: the walkthrough's action is often a one-word move, so a prior that only
    prefers short answers already beats uniform (the ``fewest_words`` baseline measures that)."""
    return np.array([len(c.split()) for c in candidates])

@dataclass(frozen=True)
class Variant:
    """How an LLM is asked: prompt format, candidates listed in the prompt, chat template."""

    prompt_format: str
    list_candidates: bool
    chat: bool

    def name(self, score: str) -> str:
        return (f"{self.prompt_format}{'+list' if self.list_candidates else ''}{'+chat' if self.chat else ''}"
                f"/{score}")


def llm_variants(has_chat: bool) -> list[Variant]:
    return [Variant(f, lc, chat) for f in ("priorzero", "orz") for lc in (False, True)
            for chat in ((True, False) if has_chat else (False,))]


def score_llm(label: str, spec: str, llm_cfg, all_states: dict, batch: int) -> dict[str, dict]:
    """{variant name: {"scores": {game: [scores per state]}, "seconds": s, "roots": n}} for one LLM."""
    from pzstream.llm.factory import make_backend, prompt_config
    from pzstream.llm.prompts import scoring_prompts
    from pzstream.llm.tokens import chat_frame, encode_answers

    cfg = llm_cfg.model_copy(update={"model": spec})
    t = time.perf_counter()
    backend = make_backend(cfg, prompt_config(cfg))
    tok = backend.tokenizer
    template = tok.chat_template
    has_chat = chat_frame(tok) is not None
    n_params = sum(p.numel() for p in backend.model.parameters())
    log(f"{label}: {spec} loaded in {time.perf_counter() - t:.1f} s ({n_params / 1e6:.1f} M parameters, "
        f"chat template {'yes' if has_chat else 'no'})")
    out: dict[str, dict] = {}
    for v in llm_variants(has_chat):
        pcfg = prompt_config(cfg.model_copy(update={"prompt_format": v.prompt_format}))
        backend.prompt_config = pcfg
        tok.chat_template = template if v.chat else None
        means, sums, seconds, roots = {}, {}, 0.0, 0
        for game, ws in all_states.items():
            st = ws.states
            cands = [list(s.candidates) for s in st]
            prompts = scoring_prompts(tok, pcfg, [list(s.history) for s in st], [s.observation for s in st], cands,
                                      v.list_candidates)
            t = time.perf_counter()
            got = []
            for i in range(0, len(st), batch):
                got += backend.mean_logprobs(prompts[i:i + batch], cands[i:i + batch])
            seconds += time.perf_counter() - t
            roots += len(st)
            counts = [np.array([len(a) for a in encode_answers(tok, c, pcfg.continuation_template,
                                                                backend.max_candidate_tokens)]) for c in cands]
            means[game] = [np.asarray(m, np.float64) for m in got]
            sums[game] = [m * n for m, n in zip(means[game], counts)]
        tok.chat_template = template
        log(f"{label} {v.name('*')}: {roots} roots, {1000 * seconds / roots:.0f} ms a root")
        for score, table in (("mean", means), ("sum", sums)):
            out[v.name(score)] = {"scores": table, "seconds": seconds, "roots": roots}
    del backend
    return out


def score_world_model(model, all_states: dict, device: str, batch: int) -> dict:
    """{"scores": {game: [root prior logits per state]}, "seconds", "roots"}; candidates past the
    world model's cap (``max_candidates``) get -inf, as the search never visits them."""
    import torch

    from pzstream.model.inference import SearchAdapter

    adapter = SearchAdapter(model.to(device).eval(), device)
    scores, seconds, roots = {}, 0.0, 0
    for game, ws in all_states.items():
        st, got = ws.states, []
        for i in range(0, len(st), batch):
            part = st[i:i + batch]
            t = time.perf_counter()
            with torch.inference_mode():
                root = adapter.root([[(o, a) for o, a, _ in s.history] for s in part], [s.observation for s in part],
                                    [list(s.candidates) for s in part])
            seconds += time.perf_counter() - t
            adapter.reset()
            for j, s in enumerate(part):
                row = np.full(len(s.candidates), -np.inf)
                k = min(len(s.candidates), root.prior_logits.shape[1])
                row[:k] = root.prior_logits[j, :k]
                got.append(row)
        scores[game] = got
        roots += len(st)
    return {"scores": scores, "seconds": seconds, "roots": roots}


def train_world_model(games: list[str], seconds: float, config: str | None, overrides: list[str]) -> dict:
    """A real training run (hub, trainer, MCTS collectors, one per game; LLM and PPO off): its summary
    and weights directory."""
    from bench.launched import run_all
    from pzstream.stream.transport import free_base_port

    name = f"prior-quality-train-{os.getpid()}"
    address = f"tcp://127.0.0.1:{free_base_port()}"
    keep = [o for o in overrides if not o.startswith(("llm.", "ppo.", "hub.address="))]
    summary = run_all([*(["--config", config] if config else []), "--game", ",".join(games), "--max-seconds",
                       str(seconds), "--collectors", str(len(games)), f"run.name={name}", "run.log_level=WARNING",
                       "llm.enabled=false", "ppo.enabled=false", "search_server.start=never", *keep,
                       "--learner", address], seconds, "train")
    log(f"training: {summary.get('env_steps')} env steps, world model v{summary.get('wm_version_published')}")
    return {"summary": summary, "weights": ROOT / "runs" / name / "weights"}


def load_world_model(cfg, weights_dir: Path | None):
    """(world model, version): the newest published weights in ``weights_dir`` (as
    ``pzstream.roles.evaluate.load_models`` reads them), else the untrained one (version 0)."""
    from pzstream.model.world_model import load_weights_bytes, untrained_world_model
    from pzstream.stream.weights_client import WeightsClient

    wm = untrained_world_model(cfg.world_model()).eval()
    if weights_dir is None or not weights_dir.is_dir():
        return wm, 0
    client = WeightsClient({"wm": lambda data, _v: load_weights_bytes(wm, data)}, who="bench-prior-quality")
    version = client.load_mirror(weights_dir).get("wm", 0)
    if client.stats.rejected:
        raise RuntimeError(f"world-model weights in {weights_dir} failed their checks: {client.stats.errors}")
    return wm, version


# ---------------------------------------------------------------- summaries and output

def summarise(policy: dict, targets: dict[str, list[int]], words: dict[str, list[np.ndarray]]) -> dict:
    """A policy's figures per game and over games, and its milliseconds per root."""
    per_game = {g: state_metrics(policy["scores"][g], targets[g], words[g]) for g in targets}
    mean = over_games(per_game)
    temp, logp = best_temperature(mean)
    return {"per_game": per_game, "mean": mean, "best_temperature": temp, "target_logprob": logp,
            "ms_per_root": 1000 * policy["seconds"] / policy["roots"] if policy.get("roots") else 0.0}


def best_variant(summaries: dict[str, dict], label: str) -> str | None:
    """The variant of model ``label`` with the highest mean MRR over games."""
    names = [n for n in summaries if n.startswith(f"{label} ")]
    return max(names, key=lambda n: summaries[n]["mean"]["mrr"]) if names else None


def format_tables(summaries: dict[str, dict], all_states: dict, heads: dict[str, str | None]) -> str:
    """Per game rows with one MRR column per policy (a model's best variant); then every policy and
    variant with its mean MRR, top-1, top-3, best temperature's target log-prob and cost."""
    cols = [(h, n) for h, n in heads.items() if n is not None]
    lines = ["walkthrough action's MRR per game (an LLM's column is its best variant, named below)",
             f"{'game':<14}{'states':>7}{'K':>6}{'added':>6}" + "".join(f"{h[:13]:>14}" for h, _ in cols)]
    for g, ws in all_states.items():
        k = np.mean([len(s.candidates) for s in ws.states])
        lines.append(f"{g:<14}{len(ws.states):>7}{k:>6.1f}{ws.matches()['added']:>6}"
                     + "".join(f"{summaries[n]['per_game'][g]['mrr']:>14.3f}" for _, n in cols))
    lines.append(f"{'mean over games':<33}" + "".join(f"{summaries[n]['mean']['mrr']:>14.3f}" for _, n in cols))
    lines += ["", ", ".join(f"{h} = {n}" for h, n in cols if h != n), "",
              f"{'policy / variant':<46}{'MRR':>7}{'top-1':>7}{'top-3':>7}{'MRR|len':>8}{'logp(T*)':>10}{'T*':>6}"
              f"{'ms/root':>9}"]
    for n, s in summaries.items():
        m = s["mean"]
        lines.append(f"{n:<46}{m['mrr']:>7.3f}{m['top1']:>7.3f}{m['top3']:>7.3f}{m['mrr_same_length']:>8.3f}"
                     f"{s['target_logprob']:>10.3f}{s['best_temperature']:>6g}{s['ms_per_root']:>9.1f}")
    lines.append("MRR|len: the MRR among the candidates with as many words as the walkthrough's action")
    return "\n".join(lines)


def result_json(summaries: dict[str, dict], all_states: dict, models: list[str], heads: dict, extra: dict) -> dict:
    """The JSON line: headline keys first, then every variant's figures."""
    r = lambda x: round(float(x), 4) if np.isfinite(x) else None  # noqa: E731  (strict JSON has no inf)
    ms_key = "ms_per_root_gpu" if extra["device"].startswith("cuda") else "ms_per_root_cpu"
    tiny = heads["tiny"]
    fewest = summaries["fewest_words"]["mean"]
    out = {"bench": "prior_quality", "games": list(all_states), "states": sum(len(w.states) for w in all_states.values()),
           "states_per_game": {g: len(w.states) for g, w in all_states.items()},
           "candidates_mean": r(np.mean([len(s.candidates) for w in all_states.values() for s in w.states])),
           "matches": {m: sum(w.matches()[m] for w in all_states.values()) for m in ("text", "hash", "added")},
           "walkthrough_score": {g: [w.walkthrough_score, w.max_score] for g, w in all_states.items()},
           "mrr_uniform": r(summaries["uniform"]["mean"]["mrr"]), "top1_uniform": r(summaries["uniform"]["mean"]["top1"]),
           "top3_uniform": r(summaries["uniform"]["mean"]["top3"]),
           "mrr_fewest_words": r(fewest["mrr"]), "top1_fewest_words": r(fewest["top1"]),
           "one_word_targets": r(np.mean([len(s.candidates[s.target].split()) == 1
                                          for w in all_states.values() for s in w.states])),
           "mrr_tiny": r(summaries[tiny]["mean"]["mrr"]), "tiny_variant": tiny.split(" ", 1)[1],
           "mrr_real": {}, "top1_real": {}, "top3_real": {}}
    for label in models:
        best = heads[label]
        out["mrr_real"][label] = {"mrr": r(summaries[best]["mean"]["mrr"]), "variant": best.split(" ", 1)[1],
                                  "mrr_same_length": r(summaries[best]["mean"]["mrr_same_length"])}
        out["top1_real"][label] = r(summaries[best]["mean"]["top1"])
        out["top3_real"][label] = r(summaries[best]["mean"]["top3"])
    out["config_variant"] = {}
    for label in ["tiny", *models]:  # what the config's llm section scores with (chat wherever the model has it)
        v = Variant(extra["llm_config"]["prompt_format"], extra["llm_config"]["list_candidates"], True)
        name = next((n for n in (f"{label} {v.name('mean')}", f"{label} {replace(v, chat=False).name('mean')}")
                     if n in summaries), None)
        out["config_variant"][label] = {"variant": name.split(" ", 1)[1], "mrr": r(summaries[name]["mean"]["mrr"])}
    out[ms_key] = {h: round(summaries[n]["ms_per_root"], 2) for h, n in heads.items()
                   if n is not None and h not in ("uniform", "fewest_words")}
    for wm in ("wm_untrained", "wm_trained"):
        s = summaries.get(wm)
        out[f"mrr_{wm}"] = r(s["mean"]["mrr"]) if s else None
        out[f"top1_{wm}"] = r(s["mean"]["top1"]) if s else None
    out["variants"] = {n: {"mrr": r(s["mean"]["mrr"]), "top1": r(s["mean"]["top1"]), "top3": r(s["mean"]["top3"]),
                           "mrr_same_length": r(s["mean"]["mrr_same_length"]),
                           "target_logprob": r(s["target_logprob"]), "best_temperature": s["best_temperature"],
                           "logp_by_temperature": {f"{t:g}": r(s["mean"][f"logp@{t:g}"]) for t in TEMPERATURES},
                           "ms_per_root": round(s["ms_per_root"], 2),
                           "mrr_per_game": {g: r(m["mrr"]) for g, m in s["per_game"].items()}}
                       for n, s in summaries.items()}
    out.update(extra)
    return out


def save_scores(path: str, policies: dict, all_states: dict) -> None:
    """Every policy's scores per state beside its candidates and target, to analyse without rescoring."""
    out = {g: [{"step": s.step, "candidates": list(s.candidates), "target": s.target, "match": s.match,
                "scores": {n: [x if np.isfinite(x) else None for x in map(float, p["scores"][g][i])]
                           for n, p in policies.items()}} for i, s in enumerate(ws.states)]
           for g, ws in all_states.items()}
    Path(path).write_text(json.dumps(out))


def parse_models(text: str) -> dict[str, str]:
    """``a,LABEL=PATH`` -> {label: model spec}."""
    out = {}
    for item in (x.strip() for x in text.split(",")):
        if item:
            label, _, spec = item.rpartition("=")
            out[label or spec] = spec
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"games {','.join(QUICK_GAMES)}, 10 states each, 60 s training")
    ap.add_argument("--games", default=None,
                    help=f"comma-separated names or story files (default {','.join(DEFAULT_GAMES)})")
    ap.add_argument("--states", type=int, default=None, help="states per game (default 30; --quick 10)")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="real LLMs: llm.model values, or LABEL=PATH")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: where the LLMs and the world model score")
    ap.add_argument("--batch", type=int, default=1, help="roots a scoring call (1: a collector's move)")
    ap.add_argument("--train-seconds", type=float, default=None, help="the world model's training run (default 180; "
                    "--quick 60; 0: none)")
    ap.add_argument("--train-games", default=None, help="games of that run (default: the first two)")
    ap.add_argument("--seed", type=int, default=0, help="which walkthrough steps are sampled")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: as a collector scores)")
    ap.add_argument("--config", default=None, help="config file (default config/debug.yaml): llm.history_len, "
                    "llm.max_prompt_tokens and the world model's shape come from it")
    ap.add_argument("--scores-out", default=None, help="write every policy's score of every candidate here (JSON)")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = ap.parse_args()
    run(args)


def run(args) -> None:
    import torch
    import transformers

    from pzstream.config import load_config
    from pzstream.env.sources import default_games_dir
    from pzstream.env.walkthrough import WalkthroughSettings

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, [*args.overrides, f"llm.device={args.device}"])
    games_dir = Path(cfg.env.games_dir).expanduser() if cfg.env.games_dir else default_games_dir()
    games = (args.games or ",".join(("zork1",) if SMOKE else QUICK_GAMES if args.quick else DEFAULT_GAMES)).split(",")
    if not games_dir.is_dir() and not all(os.sep in g for g in games):
        sys.exit(f"error: the Jericho games directory {str(games_dir)!r} does not exist: set env.games_dir=DIR or "
                 "PZSTREAM_GAMES_DIR (the suite is not part of the repository: bring your own copy)")
    n_states = args.states or (3 if SMOKE else 10 if args.quick else 30)
    train_s = 25.0 if SMOKE else args.train_seconds if args.train_seconds is not None else 60.0 if args.quick else 180.0
    models = parse_models(args.models)
    settings = WalkthroughSettings(max_states=n_states, seed=args.seed,
                                   history_steps=max(cfg.llm.history_len, cfg.world_model().context_steps))
    t0 = time.perf_counter()
    all_states = build_all_states([g for g in games if g], settings, str(games_dir), cfg.env.cache_dir)
    targets = {g: [s.target for s in ws.states] for g, ws in all_states.items()}
    words = {g: [candidate_words(s.candidates) for s in ws.states] for g, ws in all_states.items()}
    policies = {"uniform": {"scores": {g: [np.zeros(len(s.candidates)) for s in ws.states]
                                       for g, ws in all_states.items()}},
                "fewest_words": {"scores": {g: [-w for w in words[g]] for g in words}}}
    for label, spec in {"tiny": "tiny", **models}.items():
        for name, p in score_llm(label, spec, cfg.llm, all_states, args.batch).items():
            policies[f"{label} {name}"] = p
    wm, _ = load_world_model(cfg, None)
    policies["wm_untrained"] = score_world_model(wm, all_states, args.device, args.batch)
    trained = None
    if train_s > 0:
        train_games = (args.train_games.split(",") if args.train_games else list(all_states)[:2])
        run_ = train_world_model(train_games, train_s, args.config, [*(SMOKE_TRAINING if SMOKE else []), *args.overrides])
        wm, version = load_world_model(cfg, run_["weights"])
        trained = {"games": train_games, "seconds": train_s, "wm_version": version,
                   "env_steps": run_["summary"].get("env_steps"), "weights": str(run_["weights"])}
        if version > 0:
            policies["wm_trained"] = score_world_model(wm, all_states, args.device, args.batch)
        else:
            log(f"the training run published no world-model weights in {train_s:.0f} s: no wm_trained figures")
    summaries = {n: summarise(p, targets, words) for n, p in policies.items()}
    if args.scores_out:
        save_scores(args.scores_out, policies, all_states)
    heads = {"uniform": "uniform", "fewest_words": "fewest_words", "tiny": best_variant(summaries, "tiny"),
             **{label: best_variant(summaries, label) for label in models},
             "wm_untrained": "wm_untrained", "wm_trained": "wm_trained" if "wm_trained" in summaries else None}
    print(format_tables(summaries, all_states, heads))
    extra = {"device": args.device, "threads": args.threads, "batch": args.batch, "models": models,
             "llm_config": {"prompt_format": cfg.llm.prompt_format, "list_candidates": cfg.llm.list_candidates},
             "seeds": {"walkthrough_sample": args.seed, "world_model_untrained": "VERSION0_SEED (fixed)"},
             "settings": {"states_per_game": n_states, "history_steps": settings.history_steps,
                          "history_len": cfg.llm.history_len, "max_prompt_tokens": cfg.llm.max_prompt_tokens,
                          "config": args.config or "config/debug.yaml", "overrides": list(args.overrides),
                          "quick": bool(args.quick), "smoke": SMOKE},
             "wm_trained_run": trained, "seconds": round(time.perf_counter() - t0, 1),
             "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "python": platform.python_version(),
             "torch": torch.__version__, "transformers": transformers.__version__}
    print(json.dumps(result_json(summaries, all_states, list(models), heads, extra)))


if __name__ == "__main__":
    main()
