"""Central search against local search: N collector processes, each searching itself or all served by one server.

    python bench/serve.py [--quick] [--collectors N] [--seconds S] [--rounds R] [--sims 16] [key=value ...]
    python bench/serve.py --sweep 1,2,4,8,16,32,64 search_server.device=cuda llm.device=cuda \
        model.preset=unizero-jericho llm.model=random:qwen2.5-0.5b        # the server's batch step on a GPU

N collector processes (8; 1, without the LLM, in the smoke run) play the default game with the
default models (the world model and, with llm.enabled as in config/debug.yaml, the tiny LLM
prior). Each process loads both policies once, then plays alternating rounds of S seconds:
(a) all N search locally (``MctsPolicy``), (b) all N are served by one ``launch.py --role
search`` process (``ServedPolicy``; no hub, so the weights are version 0 everywhere). The server
idles through (a). Rates are moves per second over all processes, the median over R rounds, so
load from other jobs drifts into both alike. ``p50_ms``/``p99_ms``: a served move's wait as the
collector sees it; ``mean_batch``: roots per batch at the server (over the whole run: the probe
and warm-up moves add a few of batch 1); ``fallbacks``: served moves played locally (none is
expected); ``server_ms_per_batch``, ``server_prior_share`` (of the server's search time, the LLM prior's)
and ``server_memo_hit_rate`` (roots the server answered from its prior memo) say where a served batch goes. The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pzstream.stream.transport import free_base_port

SMOKE = os.environ.get("PZSTREAM_BENCH_SMOKE") == "1"


def worker(seed: int, search: str, overrides: list[str]) -> None:
    """One collector process with both policies loaded: says "ready", then per line "local S" or
    "server S" on stdin plays S seconds with that policy and prints its counts as one JSON line."""
    import torch

    from pzstream.agent import ServedPolicy, mcts_policy
    from pzstream.config import load_config
    from pzstream.env import open_game
    from pzstream.llm.factory import LocalPrior
    from pzstream.roles.search_server import SearchClient

    torch.set_num_threads(1)
    cfg = load_config(None, overrides)
    prior = LocalPrior(cfg.llm) if cfg.llm.enabled else None
    local = mcts_policy(cfg, seed, prior)
    served = ServedPolicy(local, SearchClient(search), f"w{seed}", deadline_s=30.0)
    game = open_game("default", seed=seed)
    history: list = []
    obs = game.reset(seed=seed)
    episodes = 0

    def move(policy) -> float:
        nonlocal obs, history, episodes
        valid = game.valid_actions()
        t = time.perf_counter()
        m = policy.act(history, obs, valid)
        dt = time.perf_counter() - t
        res = game.step(valid[m.index])
        history.append((obs, valid[m.index], float(res.reward)))
        obs = res.observation
        if res.done or len(history) >= cfg.collector.max_episode_steps:
            episodes += 1
            history, obs = [], game.reset(seed=seed + 1000 * episodes)
        return dt

    move(local)  # the first moves warm the models and the connection
    move(served)
    print("ready", flush=True)
    for line in sys.stdin:
        mode, seconds = line.split()
        policy = served if mode == "server" else local
        fallbacks = served.stats.fallbacks
        waits, end = [], time.monotonic() + float(seconds)
        while time.monotonic() < end:
            waits.append(move(policy))
        print(json.dumps({"moves": len(waits), "waits_ms": [1000 * w for w in waits],
                          "fallbacks": served.stats.fallbacks - fallbacks}), flush=True)
    game.close()


def wait_for_server(search: str, timeout_s: float = 300.0) -> None:
    """Until the server answers a search (it loads its models meanwhile)."""
    from pzstream.roles.search_server import SearchClient
    from pzstream.stream import wire

    client = SearchClient(search)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            probe = wire.SearchRequest("probe", 1, 0, True, "You are in a room.", ("look", "wait"), "", 0.0, (), (), ())
            if isinstance(client.ask(probe, timeout_s=5.0), wire.SearchReply):
                return
        raise RuntimeError(f"the search server at {search} did not answer in {timeout_s:.0f} s")
    finally:
        client.close()


def start_workers(n: int, search: str, overrides: list[str]) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--seed", str(i), "--search", search, *overrides],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in range(n)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready", "a collector process failed to start"
    return procs


def phase(procs: list[subprocess.Popen], mode: str, seconds: float) -> tuple[float, list[float], int]:
    """All processes play ``seconds`` in ``mode`` at once: (moves/s in all, every move's wait in ms, fallbacks)."""
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(f"{mode} {seconds}\n")
        p.stdin.flush()
    results = [json.loads(p.stdout.readline()) for p in procs]  # type: ignore[union-attr]
    return (sum(r["moves"] for r in results) / seconds, [w for r in results for w in r["waits_ms"]],
            sum(r["fallbacks"] for r in results))



def sweep(batches: list[int], sims: int, overrides: list[str], repeats: int) -> dict[str, object]:
    """The search server's batch step alone (``MctsPolicy.search_roots``, what one server batch runs)
    at growing batch sizes, on the device and models the overrides name: where moves/s stops
    growing with the batch, the accelerator (not the collectors) limits a server. Roots are
    synthetic text-game states (a room description, 3 steps of history, 20 candidate commands)."""
    import torch

    from pzstream.agent import mcts_policy
    from pzstream.config import load_config
    from pzstream.llm.factory import LocalPrior

    cfg = load_config(None, [f"search.num_simulations={sims}", *overrides])
    device = cfg.search_server.device
    prior = LocalPrior(cfg.llm) if cfg.llm.enabled else None
    policy = mcts_policy(cfg, 0, prior, device=device)
    wm_params = sum(p.numel() for p in policy.adapter.model.parameters())
    llm_params = sum(p.numel() for p in prior.backend.model.parameters()) if prior is not None else 0
    room = ("You are in a dimly lit cellar. Wooden shelves line the north wall, stacked with dusty jars; "
            "a narrow staircase leads up to the kitchen, and a cold draught comes from a crack in the east wall. ")
    verbs = ["north", "south", "east", "west", "up", "down", "look", "inventory", "take jar", "open jar",
             "read label", "climb stairs", "examine shelves", "push shelf", "listen", "wait", "take lamp",
             "light lamp", "drop jar", "search crack"]

    def roots(b: int, salt: int):
        hist = [[(f"{room} Step {k} of game {i}.", verbs[(i + k) % 20], 0.0) for k in range(3)] for i in range(b)]
        obs = [f"{room} Moment {salt}, root {i}." for i in range(b)]
        return hist, obs, [list(verbs) for _ in range(b)]

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    rows = []
    for b in batches:
        policy.search_roots(*roots(b, -1))  # warm-up: kernels, caches
        sync()
        prior_s0 = prior.net_s if prior is not None else 0.0
        t = time.perf_counter()
        for r in range(repeats):
            policy.search_roots(*roots(b, r))
        sync()
        dt = (time.perf_counter() - t) / repeats
        prior_ms = 1000 * ((prior.net_s if prior is not None else 0.0) - prior_s0) / repeats
        rows.append({"batch": b, "ms_per_batch": round(1000 * dt, 2), "moves_per_s": round(b / dt, 1),
                     "prior_ms": round(prior_ms, 2)})
        print(f"{b:>6} {1000 * dt:>14.1f} {b / dt:>12.1f} {prior_ms:>10.1f}", flush=True)
    base = rows[0]["moves_per_s"]
    best = max(rows, key=lambda r: r["moves_per_s"])
    knee = next((r["batch"] for r in rows if r["moves_per_s"] >= 0.9 * best["moves_per_s"]), best["batch"])
    return {"device": device, "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
            "wm_params": wm_params, "llm_params": llm_params, "llm_model": cfg.llm.model, "sims": sims,
            "rows": rows, "speedup_best_over_batch1": round(best["moves_per_s"] / base, 2),
            "saturation_batch": knee}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--collectors", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--sims", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=None, help="alternating local/server rounds (medians reported)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--search", default="", help=argparse.SUPPRESS)
    ap.add_argument("--sweep", default="", help="batch sizes, e.g. 1,2,4,8,16,32,64: time one server batch step at each "
                    "(on search_server.device with the models the overrides name) instead of the collector runs")
    ap.add_argument("--repeats", type=int, default=3, help="--sweep: timed batches per size")
    ap.add_argument("overrides", nargs="*", help="config overrides for every process, such as llm.enabled=false")
    args = ap.parse_args()
    if args.worker:
        worker(args.seed, args.search, args.overrides)
        return
    if args.sweep:
        print(f"{'batch':>6} {'ms per batch':>14} {'moves/s':>12} {'prior ms':>10}")
        result = sweep([int(b) for b in args.sweep.split(",")], args.sims, ["ppo.enabled=false", *args.overrides],
                       args.repeats)
        print(json.dumps(result))
        return
    n = args.collectors or (1 if SMOKE else 8)
    seconds = args.seconds or (2.0 if SMOKE else 8.0 if args.quick else 15.0)
    rounds = args.rounds or (1 if SMOKE else 2 if args.quick else 3)
    # the smoke run checks that the bench works: without the LLM it loads in a fraction of the time
    overrides = [f"search.num_simulations={args.sims}", "ppo.enabled=false", *(["llm.enabled=false"] if SMOKE else []),
                 *args.overrides]
    search = f"tcp://127.0.0.1:{free_base_port()}"

    # the server loads while nothing is measured, then idles through the local phase
    server = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "--role", "search", "--search", search,
                               *overrides, "run.log_level=WARNING"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        wait_for_server(search)
        procs = start_workers(n, search, overrides)
        try:
            local, served = [], []
            waits: list[float] = []
            fallbacks = 0
            # alternating rounds in the same processes: load drift from other jobs hits both alike
            for _ in range(rounds):
                local.append(phase(procs, "local", seconds)[0])
                rate, w, f = phase(procs, "server", seconds)
                served.append(rate)
                waits += w
                fallbacks += f
        finally:
            for p in procs:
                if p.stdin is not None:
                    p.stdin.close()
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=60)
    # mean_batch counts the probe and the workers' warm-up moves too: a few roots of batch 1
    summary = json.loads(out.strip().splitlines()[-1])
    import numpy as np

    p50, p99 = (float(np.percentile(waits, q)) for q in (50, 99))
    local_rate, served_rate = float(np.median(local)), float(np.median(served))
    result = {"collectors": n, "seconds": seconds, "rounds": rounds, "simulations": args.sims,
              "local_rounds": [round(x, 2) for x in local], "server_rounds": [round(x, 2) for x in served],
              "local_moves_per_s": round(local_rate, 2), "server_moves_per_s": round(served_rate, 2),
              "speedup": round(served_rate / local_rate, 2) if local_rate else None,
              "mean_batch": round(summary["mean_batch"], 2), "p50_ms": round(p50, 1), "p99_ms": round(p99, 1),
              "fallbacks": fallbacks, "cpus": os.cpu_count(),
              "server_prior_share": round(summary.get("prior_s", 0.0) / max(1e-9, summary["search_s"]), 3),
              "server_ms_per_batch": round(1000 * summary["search_s"] / max(1.0, summary["batches"]), 1),
              "server_memo_hit_rate": round(summary.get("memo_hits", 0.0) / max(1.0, summary.get("memo_hits", 0.0)
                                                                               + summary.get("memo_misses", 0.0)), 3)}
    print(f"{'collectors':>10} {'local mv/s':>11} {'server mv/s':>12} {'speedup':>8} {'mean batch':>11} "
          f"{'p50 ms':>8} {'p99 ms':>8}")
    print(f"{n:>10} {local_rate:>11.2f} {served_rate:>12.2f} {result['speedup'] or 0:>8.2f} "
          f"{summary['mean_batch']:>11.2f} {p50:>8.1f} {p99:>8.1f}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
