"""LLM prior scoring throughput: packed tree and shared-prompt KV cache against naive sequences.

    python bench/prior.py [--quick] [--device cpu|cuda] [--shape tiny|qwen2.5-0.5b]
                          [--peak-tflops 989] [--threads N] [--batches 1,8,32] [--profile] [--compile]

For B in {1, 8, 32} roots (``--batches``; 8 is always run, the JSON's headline figures are at 8), each root has a distinct prompt (~200 tokens on the tiny model,
~512 on the Qwen2.5-0.5B shape) and K = 20 candidate actions of ~6 tokens. Three methods of
``pzstream.llm.prior`` score the same inputs in the same process: ``tree`` (packed rows with a
4-D mask, the method ``TransformersBackend`` uses on the device, ``tree_scorer``: one forward on a
GPU, the prompts then the candidates on a CPU; JSON ``method``), ``kvcopy`` (``candidate_logprobs_shared``:
prompt KV cache copied per candidate) and ``naive`` (full sequences, the reference).
``alt_ms`` times the other packed method (``split`` on a GPU, ``tree`` on a CPU), to check that choice.
``max_abs_diff`` is the largest difference of mean candidate log-probs between the backend's
(tree) method and naive; ``kvcopy_max_abs_diff`` the same for kvcopy. Rates are roots per
second. In the JSON, ``shared_*`` and ``speedup`` (naive / shared time) refer to the backend's
method (tree), ``kvcopy_*`` to the KV-copy method.

``--shape tiny`` uses the locally built tiny model (fp32). ``--shape qwen2.5-0.5b`` builds a
Qwen2Config of Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads,
intermediate 4864, vocab 151936, tied embeddings) with RANDOM weights (nothing is
downloaded), in bf16 on cuda (fp32 on cpu), with the tiny tokenizer (its ids are a subset
of the vocabulary). For it the FLOP floor is reported: 2 x parameters x tokens processed
by the shared-prompt methods (B x (prompt + K x candidate tokens)) / (--peak-tflops x 1e12),
and the ratio measured / floor for tree and kvcopy. Above B = 32 the naive reference is not run
(its B x K full sequences): ``max_abs_diff`` there is against kvcopy. ``tokenize_ms`` is the part of the backend's
time spent tokenising (``tokens.encode_roots``) with the texts seen before (the scorer's case: the prompt
was tokenised when it was fitted, the candidates recur), ``tokenize_cold_ms`` with none seen. ``--profile``: the backend's method at the largest
B under ``torch.profiler``, its ten costliest operators printed (device time on a GPU) and saved
as ``profile`` in the JSON. ``--compile`` (a GPU): after the eager figures, the decoder layers are compiled
for scoring as ``llm.compile`` does (``pzstream.compiled.compile_blocks(..., scoring=True)``) and both packed
methods are timed again at every B: ``compiled_ms``, ``compiled_alt_ms``, ``compiled_over_floor``,
``compiled_max_abs_diff`` (against the same reference as ``max_abs_diff``) per B, ``compile_s`` (the first
compiled call, at the largest B). The last stdout line is one JSON object.

Imports only torch, transformers, numpy and pzstream.llm.*.
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
import transformers  # noqa: E402

from pzstream.llm.prior import (candidate_logprobs_naive, candidate_logprobs_shared,  # noqa: E402
                                candidate_logprobs_split, candidate_logprobs_tree, tree_scorer)
from pzstream.llm.prompts import PromptConfig, build_prompt  # noqa: E402
from pzstream.llm.tokens import DEFAULT_CONTINUATION, encode_roots, text_ids  # noqa: E402
from pzstream.llm.tiny import resolve_model  # noqa: E402

K = 20
NAIVE_MAX_B = 32  # above it the naive reference is not run (its diffs are then against kvcopy)
CAND_TOKENS = 6
_WORDS = ("lamp lantern sword mailbox leaflet door window trapdoor rug table sack bottle water "
          "garlic rope egg nest tree book candles bell skull painting chest box key coin").split()
_VERBS = ("take", "drop", "open", "close", "examine", "read", "push", "pull", "go", "climb", "light")


def make_model(shape: str, device: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    path = resolve_model("tiny")  # built locally on first use
    tok = AutoTokenizer.from_pretrained(path)
    if shape == "tiny":
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        dtype = torch.float32
    else:
        cfg = Qwen2Config(vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                          num_key_value_heads=2, intermediate_size=4864, tie_word_embeddings=True,
                          max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                          bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.eos_token_id)
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        torch.manual_seed(0)
        with torch.device(device):
            model = Qwen2ForCausalLM(cfg).to(dtype)
    return model.to(device).eval(), tok, dtype


def make_inputs(tok, n_roots: int, prompt_tokens: int, rng: np.random.Generator):
    cfg = PromptConfig(max_prompt_tokens=prompt_tokens)
    prompts, cands = [], []
    for r in range(n_roots):
        words = [str(w) for w in rng.choice(_WORDS + list(_VERBS), 4 * prompt_tokens)]
        hist = [(f"You see a {w}.", f"take {w}", 0) for w in words[:3]]
        obs = f"Room {r}. " + " ".join(words)
        p = build_prompt(cfg, hist, obs)
        ids = tok(p, add_special_tokens=False)["input_ids"]
        # keep the end (the instruction) and exactly `prompt_tokens` tokens
        prompts.append(tok.decode(ids[-prompt_tokens:]))
        cs = []
        for _ in range(K):  # verb + words until ~CAND_TOKENS tokens (one more at most)
            c = str(rng.choice(_VERBS))
            while len(tok(" " + c, add_special_tokens=False)["input_ids"]) < CAND_TOKENS - int(rng.integers(0, 2)):
                c += " " + str(rng.choice(_WORDS))
            cs.append(c)
        cands.append(cs)
    return prompts, cands


def timed(fn, repeats: int, device: str) -> tuple[float, list[np.ndarray]]:
    out = fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def profiled(fn, device: str, top: int = 10) -> list[dict]:
    """The ``top`` operators of one call of ``fn`` by device time (CPU time on a CPU), printed and returned."""
    from torch.profiler import ProfilerActivity, profile

    fn()  # warm-up
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=acts) as prof:
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    key = "device_time_total" if device.startswith("cuda") else "cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: -getattr(e, key, 0.0))[:top]
    out = [dict(op=e.key, calls=e.count, device_ms=getattr(e, "device_time_total", 0.0) / 1e3,
                cpu_ms=e.cpu_time_total / 1e3) for e in events]
    print(f"{'operator':<48} {'calls':>6} {'device ms':>10} {'cpu ms':>9}")
    for r in out:
        print(f"{r['op'][:48]:<48} {r['calls']:>6} {r['device_ms']:>10.2f} {r['cpu_ms']:>9.2f}")
    return out


def compiled_figures(model, tok, rows: list[dict], refs: dict, prompts, cands, device: str, repeats: int,
                     alt_scorer) -> float | None:
    """Both packed methods again with the decoder layers compiled for scoring, into ``rows``; the
    first compiled call's seconds (None where nothing compiles: a CPU)."""
    from pzstream.compiled import compile_blocks, decoder_layers

    if not compile_blocks(decoder_layers(model), device, scoring=True):
        print("--compile: nothing is compiled on a CPU (compile_blocks compiles for a GPU only)")
        return None
    scorer = tree_scorer(device)
    B = max(r["B"] for r in rows)
    t0 = time.perf_counter()
    scorer(model, tok, prompts[:B], cands[:B], device, max_rows=B * K)
    compile_s = time.perf_counter() - t0
    print(f"compiled layers: first call {compile_s:.1f} s")
    print(f"{'B':>3} {'compiled ms':>12} {'eager ms':>9} {'compiled alt ms':>16} {'|diff|':>9}"
          + (f" {'xfloor':>7}" if "floor_ms" in rows[0] else ""))
    for row in rows:
        b = row["B"]
        tc, out = timed(lambda: scorer(model, tok, prompts[:b], cands[:b], device, max_rows=b * K), repeats, device)
        ta, _ = timed(lambda: alt_scorer(model, tok, prompts[:b], cands[:b], device, max_rows=b * K), repeats, device)
        diff = max(float(np.abs(x - y).max()) for x, y in zip(out, refs[b]))
        row.update(compiled_ms=tc * 1e3, compiled_alt_ms=ta * 1e3, compiled_max_abs_diff=diff)
        line = f"{b:>3} {tc * 1e3:>12.1f} {row['tree_ms']:>9.1f} {ta * 1e3:>16.1f} {diff:>9.2e}"
        if "floor_ms" in row:
            row["compiled_over_floor"] = tc * 1e3 / row["floor_ms"]
            line += f" {row['compiled_over_floor']:>7.1f}"
        print(line, flush=True)
    return compile_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--shape", default="tiny", choices=("tiny", "qwen2.5-0.5b"))
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 TFLOP/s of the card")
    ap.add_argument("--prompt-tokens", type=int, default=0, help="0: 200 (tiny) or 512 (qwen shape)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    ap.add_argument("--repeats", type=int, default=0, help="timed repeats per case (0: 1 quick, 3 full)")
    ap.add_argument("--batches", default="1,8,32", help="comma-separated root counts B (8 is always added)")
    ap.add_argument("--profile", action="store_true", help="profile the backend's method at the largest B")
    ap.add_argument("--compile", action="store_true", help="also time both packed methods with compiled layers (GPU)")
    args = ap.parse_args()
    try:
        batches = sorted({int(b) for b in args.batches.split(",") if b.strip()} | {8})
    except ValueError:
        raise SystemExit(f"--batches: expected comma-separated integers, got {args.batches!r}")
    if batches[0] < 1:
        raise SystemExit("--batches: every B must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    repeats = args.repeats or (1 if args.quick else 3)
    prompt_tokens = args.prompt_tokens or (200 if args.shape == "tiny" else 512)

    model, tok, dtype = make_model(args.shape, args.device)
    n_params = sum(p.numel() for p in model.parameters())  # tied embeddings counted once
    rng = np.random.default_rng(0)
    all_prompts, all_cands = make_inputs(tok, max(batches), prompt_tokens, rng)
    cand_tok = float(np.mean([len(tok(" " + c, add_special_tokens=False)["input_ids"])
                              for cs in all_cands for c in cs]))

    rows, refs, max_diff, kv_max_diff = [], {}, 0.0, 0.0
    # the other packed method (two passes on a GPU, one forward on a CPU), to check tree_scorer's choice
    alt_scorer = candidate_logprobs_tree if tree_scorer(args.device) is candidate_logprobs_split else candidate_logprobs_split
    alt_name = alt_scorer.__name__.removeprefix("candidate_logprobs_")
    floor_cols = args.shape != "tiny"
    print(f"{'B':>3} {'tree ms':>9} {'kvcopy ms':>10} {'naive ms':>9} {'tree r/s':>9} {'kvcopy r/s':>11} "
          f"{'naive r/s':>10} {'speedup':>8} {'tree|diff|':>10} {'kv|diff|':>9} {'tok ms':>7} {'cold':>6} {alt_name + ' ms':>9}"
          + (f" {'floor ms':>9} {'tree xfl':>9} {'kv xfl':>7}" if floor_cols else ""))
    for b in batches:
        prompts, cands = all_prompts[:b], all_cands[:b]
        tt, tree = timed(lambda: tree_scorer(args.device)(model, tok, prompts, cands, args.device,
                                                         max_rows=b * K), repeats, args.device)
        ta, alt = timed(lambda: alt_scorer(model, tok, prompts, cands, args.device, max_rows=b * K),
                        repeats, args.device)
        ts, shared = timed(lambda: candidate_logprobs_shared(model, tok, prompts, cands, args.device,
                                                             max_rows=b * K), repeats, args.device)
        if b <= NAIVE_MAX_B:
            tn, naive = timed(lambda: candidate_logprobs_naive(model, tok, prompts, cands, args.device,
                                                               max_rows=b * K), repeats, args.device)
        else:  # the reference's full sequences do not fit a forward: kvcopy (equal to it below) stands in
            tn, naive = float("nan"), shared
        def encode(fresh: bool):
            if fresh:  # a table that has seen none of these texts
                text_ids(tok).clear()
            return encode_roots(tok, prompts, cands, DEFAULT_CONTINUATION, 32,
                                max_total_tokens=model.config.max_position_embeddings)
        tk_cold, _ = timed(lambda: encode(True), repeats, "cpu")
        tk, _ = timed(lambda: encode(False), repeats, "cpu")
        refs[b] = naive
        diff = max(float(np.abs(x - y).max()) for x, y in zip(tree, naive))
        kv_diff = max(float(np.abs(x - y).max()) for x, y in zip(shared, naive))
        max_diff, kv_max_diff = max(max_diff, diff), max(kv_max_diff, kv_diff)
        row = dict(B=b, tree_ms=tt * 1e3, kvcopy_ms=ts * 1e3, naive_ms=tn * 1e3,
                   tree_roots_per_s=b / tt, kvcopy_roots_per_s=b / ts, naive_roots_per_s=b / tn,
                   shared_ms=tt * 1e3, shared_roots_per_s=b / tt, speedup=tn / tt,
                   speedup_over_kvcopy=ts / tt, max_abs_diff=diff, kvcopy_max_abs_diff=kv_diff,
                   tokenize_ms=tk * 1e3, tokenize_cold_ms=tk_cold * 1e3, alt_ms=ta * 1e3,
                   alt_max_abs_diff=max(float(np.abs(x - y).max()) for x, y in zip(alt, naive)))
        line = (f"{b:>3} {tt * 1e3:>9.1f} {ts * 1e3:>10.1f} {tn * 1e3:>9.1f} {b / tt:>9.1f} {b / ts:>11.1f} "
                f"{b / tn:>10.1f} {tn / tt:>8.2f} {diff:>10.2e} {kv_diff:>9.2e} {tk * 1e3:>7.1f} {tk_cold * 1e3:>6.1f} {ta * 1e3:>9.1f}")
        if floor_cols:
            tokens = b * (prompt_tokens + K * cand_tok)
            floor = 2.0 * n_params * tokens / (args.peak_tflops * 1e12)
            row.update(tokens_processed=tokens, floor_ms=floor * 1e3, tree_over_floor=tt / floor, alt_over_floor=ta / floor,
                       kvcopy_over_floor=ts / floor, shared_over_floor=tt / floor)
            line += f" {floor * 1e3:>9.2f} {tt / floor:>9.1f} {ts / floor:>7.1f}"
        rows.append(row)
        print(line, flush=True)

    profile = profiled(lambda: tree_scorer(args.device)(model, tok, all_prompts, all_cands, args.device,
                                                        max_rows=max(batches) * K), args.device) if args.profile else None
    compile_s = compiled_figures(model, tok, rows, refs, all_prompts, all_cands, args.device, repeats, alt_scorer) \
        if args.compile else None
    at8 = next(r for r in rows if r["B"] == 8)
    result = dict(
        bench="prior", shape=args.shape, quick=args.quick, device=args.device,
        device_name=(torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or platform.machine()),
        dtype=str(dtype).replace("torch.", ""), threads=torch.get_num_threads(), params=n_params,
        prompt_tokens=prompt_tokens, K=K, mean_candidate_tokens=cand_tok, repeats=repeats,
        method=tree_scorer(args.device).__name__.removeprefix("candidate_logprobs_"), alt_method=alt_name, max_abs_diff=max_diff, shared_roots_per_s=at8["shared_roots_per_s"],
        naive_roots_per_s=at8["naive_roots_per_s"], speedup=at8["speedup"],
        kvcopy_roots_per_s=at8["kvcopy_roots_per_s"], kvcopy_max_abs_diff=kv_max_diff,
        speedup_over_kvcopy=at8["speedup_over_kvcopy"],
        peak_tflops=args.peak_tflops if args.shape != "tiny" else None,
        per_b=rows, profile=profile, compile_s=compile_s, versions=dict(python=platform.python_version(), torch=torch.__version__,
                                  transformers=transformers.__version__, numpy=np.__version__),
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
