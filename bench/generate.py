"""Free-mode generation without vLLM (the in-process PPO runtime), against transformers' best.

    python bench/generate.py --quick                                   # CPU, tiny model
    python bench/generate.py --device cuda --model random:qwen2.5-0.5b  # batch 64, 256 new tokens

Three ways in the same run, on the same prompts (walkthrough prompts of the default game, P
prompts x n answers = the batch), every answer held to the full length (``min_new_tokens``):
- ``runtime``: as the in-process runtime samples: on a GPU its bf16 ``GenerationCopy`` of the
  policy with a static cache, on a CPU ``transformers_sample`` from the policy itself;
- ``policy_fp32``: sampling from the fp32 policy in one left-padded batch (bf16 autocast on a
  GPU): the runtime earlier in issue 13;
- ``per_prompt``: the baseline before issue 13, one ``generate`` per prompt (n answers each);
- ``best``: transformers at its fastest here: bfloat16 weights, one batch, a static KV cache
  (with which transformers compiles the decoding step itself on a GPU; compiling the forward by
  hand as well broke its CUDA graphs: "accessing tensor output of CUDAGraphs that has been
  overwritten", transformers 5.17, torch 2.11).
Tokens/s counts generated tokens; ``gen_over_best`` = best / runtime (goal <= 2).
The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from pzstream.llm.tiny import resolve_model  # noqa: E402
from pzstream.orz.rollout import GenerationCopy, left_padded, transformers_sample  # noqa: E402


def prompts_of(tokenizer, count: int, prompt_len: int) -> list[list[int]]:
    from pzstream.config import PPOSection
    from pzstream.orz.episode import encode_prompts
    from pzstream.orz.prompt_sets import walkthrough_samples

    samples = walkthrough_samples(max_candidates=8)
    ids = encode_prompts(samples, tokenizer, PPOSection(prompt_max_len=prompt_len), history_len=3)
    return [ids[i % len(ids)] for i in range(count)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> tuple[float, int]:
    """(best seconds of ``repeats`` calls after one warm-up, tokens of one call)."""
    tokens = fn()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best, tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CPU-sized: batch 8, 32 new tokens")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="tiny", help="tiny, random:qwen2.5-0.5b, or a model directory")
    ap.add_argument("--prompts", type=int, default=8, help="P: distinct prompts")
    ap.add_argument("--samples", type=int, default=8, help="n: answers per prompt (batch = P x n)")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--ways", default="runtime,best,policy_fp32,per_prompt",
                    help="which ways to time, in this order (runtime and best are needed for gen_over_best)")
    ap.add_argument("--no-compile", action="store_true", help="best without transformers' compiled decoding step")
    a = ap.parse_args()
    if a.quick:
        a.prompts, a.samples, a.new_tokens, a.repeats = 2, 4, 32, 2
    if os.environ.get("PZSTREAM_BENCH_SMOKE") == "1":
        a.prompts, a.samples, a.new_tokens = 2, 2, 8
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device(a.device)
    path = resolve_model(a.model)
    tok = AutoTokenizer.from_pretrained(path)
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()  # as PolicyModel holds it
    prompts = prompts_of(tok, a.prompts, a.prompt_len)
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    n, new = a.samples, a.new_tokens

    generator = GenerationCopy(policy) if device.type == "cuda" else None

    def runtime() -> int:
        if generator is not None:
            out = transformers_sample(generator.model, tok, prompts, n, new, 1.0, 0, min_tokens=new, static_cache=True)
        else:
            out = transformers_sample(policy, tok, prompts, n, new, 1.0, 0, min_tokens=new)
        return sum(len(x) for row in out for x in row)

    def policy_fp32() -> int:
        out = transformers_sample(policy, tok, prompts, n, new, 1.0, 0, min_tokens=new)
        return sum(len(x) for row in out for x in row)

    def per_prompt() -> int:
        total = 0
        for p in prompts:
            ids = torch.tensor([p], device=device)
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                g = policy.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
                                    top_k=0, top_p=1.0, num_return_sequences=n, max_new_tokens=new, min_new_tokens=new,
                                    pad_token_id=pad, eos_token_id=eos)
            total += g[:, len(p):].numel()
        return total

    fast = copy.deepcopy(policy).to(torch.bfloat16 if device.type == "cuda" else torch.float32)
    compiled = device.type == "cuda" and not a.no_compile
    if not compiled:
        fast.generation_config.disable_compile = True
    ids, mask = left_padded([p for p in prompts for _ in range(n)], pad)
    ids, mask = ids.to(device), mask.to(device)

    def best() -> int:
        with torch.no_grad():
            g = fast.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                              max_new_tokens=new, min_new_tokens=new, pad_token_id=pad, eos_token_id=eos,
                              cache_implementation="static")
        return g[:, ids.shape[1]:].numel()

    results = {}
    ways = {"runtime": runtime, "best": best, "policy_fp32": policy_fp32, "per_prompt": per_prompt}
    for name in a.ways.split(","):
        fn = ways[name]
        secs, tokens = timed(fn, device, a.repeats)
        results[name] = {"seconds": round(secs, 4), "tokens": tokens, "tokens_per_s": round(tokens / secs, 1)}
        print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{a.model} on {card}: batch {a.prompts} prompts x {n} answers, {new} new tokens, prompts <= {a.prompt_len}")
    print(f"{'way':<20}{'seconds':>10}{'tokens':>9}{'tokens/s':>11}{'vs runtime':>12}")
    for name, r in results.items():
        print(f"{name:<20}{r['seconds']:10.3f}{r['tokens']:9d}{r['tokens_per_s']:11.1f}"
              f"{r['tokens_per_s'] / results['runtime']['tokens_per_s']:11.2f}x")
    print(json.dumps({"device": card, "model": a.model, "batch": a.prompts * n, "new_tokens": new,
                      "runtime_tokens_per_s": results["runtime"]["tokens_per_s"],
                      "per_prompt_tokens_per_s": results.get("per_prompt", {}).get("tokens_per_s"),
                      "policy_fp32_tokens_per_s": results.get("policy_fp32", {}).get("tokens_per_s"),
                      "best_tokens_per_s": results["best"]["tokens_per_s"], "best_compiled": compiled,
                      "gen_over_best": round(results["best"]["tokens_per_s"] / results["runtime"]["tokens_per_s"], 3),
                      "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
