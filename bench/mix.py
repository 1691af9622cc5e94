"""Which adaptive LLM weight gives the better root decision: PriorZero's or the entropy rule?

    python bench/mix.py [--quick] [--roots N] [--sims N] [--value-noise SIGMA] [--seed S]

What it measures. A controlled synthetic setting, not a game: each root has K in [3, 12]
candidates with known true action values q (the best 1.0, the others uniform in [0, 0.6]).
The world model (WM) gives the search a noisy value of every child, q + N(0, 0.3)
(``--value-noise``), and a
policy whose confidence c ~ U(0, 1) scales a one-hot on its pick; the LLM gives a prior
peaked on its own pick. How often each pick is the best action is set per scenario:

- early:      WM policy untrained: its pick is a random candidate whatever its confidence;
              the LLM picks the best action 60% of the time.
- copying:    the WM has learnt to copy the LLM (its targets were LLM-steered visits): with
              probability c it picks what the LLM picks, else a random candidate; LLM 60%.
- calibrated: WM right with probability 1/K + (0.9 - 1/K) c (confident means right); LLM 60%.
- late:       WM strong and calibrated (right with probability 0.5 + 0.45 c); LLM 30%.

For every root the same WM policy and LLM prior are mixed by each rule
(``search.mix_root_prior`` with ``search.mixing.root_llm_weight``; adaptive range
[0.3, 0.7], fixed 0.5, plus WM-only and LLM-only references), then the project's
``run_search`` runs 16 simulations (the config default, with root Dirichlet noise) with
the same noise draws for every rule. Per rule and scenario it reports:

- prior@best:  mass of the mixed root prior on the best action;
- visits@best: mass of the search's visit distribution on the best action (the policy
               target the world model and the LLM are trained on);
- return:      true value q of the most visited action (1.0 = always the best).

The winner is the adaptive rule with the higher return averaged over the four scenarios
(equal weight each), "tie" within two standard errors of the paired difference over roots.
What it does not measure: training dynamics (WM and LLM learning from the visits over many
updates) or a real game's returns; the scenarios are assumptions, stated above, and the
per-scenario rows show where each rule wins. The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np

from pzstream.search import (
    RecurrentFnOutput,
    RootFnOutput,
    SearchConfig,
    mix_root_prior,
    root_llm_weight,
    run_search,
    softmax_masked,
)
from pzstream.search.mixing import ADAPTIVE_MEANS

K_MAX = 12
VALUE_NOISE = 0.3
WM_SHARPNESS = 5.0     # WM policy logit of its pick at confidence 1
LLM_SHARPNESS = 3.0    # LLM logit of its pick (a prior at temperature ~2 over a few candidates)
LOGIT_NOISE = 0.5
LOW, HIGH, FIXED = 0.3, 0.7, 0.5
RULES = ("wm_only", "fixed", "adaptive_priorzero", "adaptive_entropy", "llm_only")


@dataclass(frozen=True)
class Roots:
    """B synthetic roots. legal bool [B, K]; q, q_hat, wm_logits, llm_probs float [B, K]; best int [B]."""

    legal: np.ndarray
    q: np.ndarray
    q_hat: np.ndarray
    wm_logits: np.ndarray
    llm_probs: np.ndarray
    best: np.ndarray


# (confidence c [B], candidates k [B]) -> probability [B] that the WM picks the best action
WmAccuracy = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Scenario:
    name: str
    llm_accuracy: float
    wm_accuracy: WmAccuracy
    wm_copies_llm: bool = False


SCENARIOS = (
    Scenario("early", 0.6, lambda c, k: 1.0 / k),
    Scenario("copying", 0.6, lambda c, k: 1.0 / k, wm_copies_llm=True),
    Scenario("calibrated", 0.6, lambda c, k: 1.0 / k + (0.9 - 1.0 / k) * c),
    Scenario("late", 0.3, lambda c, k: 0.5 + 0.45 * c),
)


def _pick(rng: np.random.Generator, legal: np.ndarray, best: np.ndarray, p_best: np.ndarray) -> np.ndarray:
    """int [B]: the best slot with probability p_best, else a uniformly drawn other legal slot."""
    other = np.where(legal, rng.random(legal.shape), -1.0)
    other[np.arange(len(best)), best] = -1.0
    wrong = np.argmax(other, axis=1)
    return np.where(rng.random(len(best)) < p_best, best, wrong)


def make_roots(scenario: Scenario, n: int, rng: np.random.Generator, value_noise: float = VALUE_NOISE) -> Roots:
    """n roots of the scenario (see the module docstring for the generative model)."""
    k = rng.integers(3, K_MAX + 1, n)
    legal = np.arange(K_MAX)[None, :] < k[:, None]
    best = rng.integers(0, k)
    q = np.where(legal, rng.uniform(0.0, 0.6, (n, K_MAX)), 0.0)
    q[np.arange(n), best] = 1.0
    q_hat = q + rng.normal(0.0, value_noise, q.shape)
    llm_pick = _pick(rng, legal, best, np.full(n, scenario.llm_accuracy))
    conf = rng.random(n)
    wm_pick = _pick(rng, legal, best, scenario.wm_accuracy(conf, k))
    if scenario.wm_copies_llm:
        wm_pick = np.where(rng.random(n) < conf, llm_pick, wm_pick)
    rows = np.arange(n)
    wm_logits = rng.normal(0.0, LOGIT_NOISE, q.shape)
    wm_logits[rows, wm_pick] += WM_SHARPNESS * conf
    llm_logits = rng.normal(0.0, LOGIT_NOISE, q.shape)
    llm_logits[rows, llm_pick] += LLM_SHARPNESS
    return Roots(legal, q, q_hat, wm_logits.astype(np.float32),
                 softmax_masked(llm_logits.astype(np.float32), legal), best)


def value_model(roots: Roots) -> Callable[[np.ndarray, np.ndarray], RecurrentFnOutput]:
    """recurrent_fn: a child's value is q_hat of the root action it descends from; rewards 0.

    Root b has handle b; its child by action a has handle B + b*K + a, and every deeper
    node keeps that handle, so Q(root, a) ~ discount * q_hat[b, a] at any depth.
    """
    n = len(roots.best)
    rows = np.arange(n)

    def recurrent(parent: np.ndarray, action: np.ndarray) -> RecurrentFnOutput:
        first = np.where(parent < n, action, (parent - n) % K_MAX)
        return RecurrentFnOutput(
            reward=np.zeros(n, np.float32),
            value=roots.q_hat[rows, first].astype(np.float32),
            prior_logits=np.zeros((n, K_MAX), np.float32),
            handle=(n + rows * K_MAX + first).astype(np.int64),
        )

    return recurrent


def rule_weight(rule: str, wm_probs: np.ndarray, legal: np.ndarray) -> np.ndarray:
    """float32 [B] LLM weight of a bench rule (two references plus the config's modes)."""
    if rule == "wm_only":
        return np.zeros(len(wm_probs), np.float32)
    if rule == "llm_only":
        return np.ones(len(wm_probs), np.float32)
    return root_llm_weight(rule, wm_probs, legal, FIXED, LOW, HIGH)


def evaluate(roots: Roots, rule: str, sims: int, seed: int) -> dict[str, np.ndarray]:
    """Per-root figures of one rule: prior@best, visits@best, return, weight (each [B])."""
    wm = softmax_masked(roots.wm_logits, roots.legal)
    w = rule_weight(rule, wm, roots.legal)
    prior = mix_root_prior(wm, roots.llm_probs, w, roots.legal)
    n = len(roots.best)
    root = RootFnOutput(prior_logits=roots.wm_logits, value=np.zeros(n, np.float32), handle=np.arange(n, dtype=np.int64))
    out = run_search(root, value_model(roots), roots.legal, SearchConfig(num_simulations=sims, temperature=0.0),
                     np.random.default_rng(seed), root_prior=prior)
    rows = np.arange(n)
    chosen = np.argmax(out.visit_counts, axis=1)
    return {"prior@best": prior[rows, roots.best], "visits@best": out.visit_probs[rows, roots.best],
            "return": roots.q[rows, chosen], "weight": w}


def run(n_roots: int, sims: int, seed: int, value_noise: float = VALUE_NOISE) -> dict:
    """All scenarios x rules; returns the figures (means) and the paired comparison."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    per_root_returns: dict[str, list[np.ndarray]] = {r: [] for r in RULES}
    for i, sc in enumerate(SCENARIOS):
        roots = make_roots(sc, n_roots, np.random.default_rng(seed + 1000 * i), value_noise)
        table[sc.name] = {}
        for rule in RULES:
            figs = evaluate(roots, rule, sims, seed + 1000 * i + 1)
            table[sc.name][rule] = {key: round(float(v.mean()), 4) for key, v in figs.items()}
            per_root_returns[rule].append(figs["return"])
    mean_return = {r: round(float(np.mean([np.mean(x) for x in per_root_returns[r]])), 4) for r in RULES}
    # paired difference priorzero - entropy: per scenario mean, then equal-weight mean; its SE
    diffs = [a - b for a, b in zip(per_root_returns["adaptive_priorzero"], per_root_returns["adaptive_entropy"])]
    diff = float(np.mean([d.mean() for d in diffs]))
    se = float(np.sqrt(sum(d.var(ddof=1) / len(d) for d in diffs)) / len(diffs))
    winner = "tie" if abs(diff) <= 2 * se else "adaptive_priorzero" if diff > 0 else "adaptive_entropy"
    return {"table": table, "mean_return": mean_return, "diff_priorzero_minus_entropy": round(diff, 4),
            "diff_se": round(se, 4), "winner": winner}


def print_table(result: dict) -> None:
    cols = ("prior@best", "visits@best", "return", "weight")
    print(f"| scenario | rule | {' | '.join(cols)} |")
    print("|---|---|" + "---|" * len(cols))
    for sc, rules in result["table"].items():
        for rule, figs in rules.items():
            print(f"| {sc} | {rule} | " + " | ".join(f"{figs[c]:.3f}" for c in cols) + " |")
    print()
    print("mean return over scenarios: " + ", ".join(f"{r} {v:.4f}" for r, v in result["mean_return"].items()))
    print(f"priorzero - entropy: {result['diff_priorzero_minus_entropy']:+.4f} (SE {result['diff_se']:.4f}); "
          f"better: {result['winner']}{' (within 2 SE)' if result['winner'] == 'tie' else ''}; "
          f"llm.mix=adaptive means {ADAPTIVE_MEANS}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer roots (CI: well under a minute on 2 cores)")
    ap.add_argument("--roots", type=int, default=None, help="roots per scenario (default 10000, quick 400)")
    ap.add_argument("--sims", type=int, default=16, help="simulations per search (the config default)")
    ap.add_argument("--value-noise", type=float, default=VALUE_NOISE, help="std of the WM's child values")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n = args.roots or (400 if args.quick else 10000)
    t0 = time.perf_counter()
    result = run(n, args.sims, args.seed, args.value_noise)
    elapsed = time.perf_counter() - t0
    print(f"bench/mix.py: {len(SCENARIOS)} scenarios x {n} roots, {args.sims} simulations, "
          f"value noise {args.value_noise}, seed {args.seed}, {elapsed:.1f} s")
    print_table(result)
    summary = {"roots_per_scenario": n, "sims": args.sims, "value_noise": args.value_noise, "seed": args.seed,
               "seconds": round(elapsed, 2),
               "adaptive_means": ADAPTIVE_MEANS, **{k: v for k, v in result.items() if k != "table"},
               "return": {sc: {r: f["return"] for r, f in rules.items()} for sc, rules in result["table"].items()},
               "visits_at_best": {sc: {r: f["visits@best"] for r, f in rules.items()}
                                  for sc, rules in result["table"].items()}}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
