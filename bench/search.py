"""Search throughput: the project's numpy tree against LightZero's C++ tree.

    python bench/search.py [--quick]

Each search runs 25 simulations over K=20 candidates per root, for B in {1, 8, 32}
roots, with a tiny torch world model on CPU as recurrent_fn: latent 64 + action
embedding -> MLP -> next latent; reward, value and logits heads. Handles are rows of a
latent table that grows as children are expanded (reset per search). Time inside
recurrent_fn is "network"; the rest of run_search (selection, expansion bookkeeping,
backup, root preparation, action choice) is "tree". Rates count B * 25 simulations per
search. Both backends run in the same process on the same inputs. The last stdout
line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pzstream.search import (  # noqa: E402
    RecurrentFnOutput,
    RootFnOutput,
    SearchConfig,
    lightzero_available,
    run_search,
)

K = 20
LATENT = 64
SIMS = 25
BATCHES = (1, 8, 32)


class TinyWorldModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(K, LATENT)
        self.dynamics = torch.nn.Sequential(
            torch.nn.Linear(2 * LATENT, 128), torch.nn.ReLU(), torch.nn.Linear(128, LATENT), torch.nn.Tanh())
        self.trunk = torch.nn.Sequential(torch.nn.Linear(LATENT, 64), torch.nn.ReLU())
        self.reward = torch.nn.Linear(LATENT, 1)
        self.value = torch.nn.Linear(64, 1)
        self.policy = torch.nn.Linear(64, K)

    def predict(self, latent: torch.Tensor):
        h = self.trunk(latent)
        return self.value(h).squeeze(-1), self.policy(h)

    def step(self, latent: torch.Tensor, action: torch.Tensor):
        nxt = self.dynamics(torch.cat([latent, self.embed(action)], dim=-1))
        value, logits = self.predict(nxt)
        return nxt, self.reward(nxt).squeeze(-1), value, logits


class LatentTableAdapter:
    """Handles are rows of a latent table; recurrent_fn appends the new children."""

    def __init__(self, net: TinyWorldModel, capacity: int) -> None:
        self.net = net
        self.table = torch.zeros(capacity, LATENT)
        self.size = 0
        self.net_seconds = 0.0

    def root(self, latents: torch.Tensor) -> RootFnOutput:
        n = latents.shape[0]
        self.size = 0
        with torch.inference_mode():
            value, logits = self.net.predict(latents)
        self.table[:n] = latents
        self.size = n
        return RootFnOutput(prior_logits=logits.numpy(), value=value.numpy(), handle=np.arange(n, dtype=np.int64))

    def recurrent_fn(self, parents: np.ndarray, actions: np.ndarray) -> RecurrentFnOutput:
        t0 = time.perf_counter()
        with torch.inference_mode():
            latent = self.table[torch.from_numpy(parents)]
            nxt, reward, value, logits = self.net.step(latent, torch.from_numpy(actions))
        n = nxt.shape[0]
        self.table[self.size:self.size + n] = nxt
        handles = np.arange(self.size, self.size + n, dtype=np.int64)
        self.size += n
        out = RecurrentFnOutput(reward=reward.numpy(), value=value.numpy(), prior_logits=logits.numpy(), handle=handles)
        self.net_seconds += time.perf_counter() - t0
        return out


def measure(backend: str, batch: int, seconds: float, net: TinyWorldModel) -> dict:
    rng = np.random.default_rng(0)
    adapter = LatentTableAdapter(net, capacity=batch * (SIMS + 1))
    latents = torch.from_numpy(rng.normal(size=(batch, LATENT)).astype(np.float32))
    legal = np.ones((batch, K), dtype=bool)
    legal[:, K - 4:] = rng.random((batch, 4)) < 0.5  # some roots have fewer candidates
    cfg = SearchConfig(num_simulations=SIMS, backend=backend)

    def one_search() -> None:
        root = adapter.root(latents)
        run_search(root, adapter.recurrent_fn, legal, cfg, rng)

    one_search()  # warm-up (first torch calls, lazy loading)
    adapter.net_seconds = 0.0
    searches, t0 = 0, time.perf_counter()
    while True:
        one_search()
        searches += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and searches >= 3:
            break
    net_share = adapter.net_seconds / elapsed
    return {
        "sims_per_s": batch * SIMS * searches / elapsed,
        "ms_per_search": 1000 * elapsed / searches,
        "tree_time_share": 1.0 - net_share,
        "searches": searches,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="about 1.5 s per cell instead of 5 s")
    args = parser.parse_args()
    # PZSTREAM_BENCH_SMOKE=1 (tests/test_benches.py): does it run at all, not how fast
    seconds = 0.2 if os.environ.get("PZSTREAM_BENCH_SMOKE") == "1" else 1.5 if args.quick else 5.0
    # Small matmuls: intra-op threads only add overhead (and the box has 2 cores).
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = TinyWorldModel().eval()

    backends = ["numpy"] + (["lightzero"] if lightzero_available() else [])
    rows = {(b, n): measure(b, n, seconds, net) for b in backends for n in BATCHES}

    print(f"search: {SIMS} simulations/search, K={K}, tiny torch MLP world model, torch threads=1")
    print(f"{'backend':<10} {'B':>3} {'sims/s':>10} {'ms/search':>10} {'tree share':>11} {'searches':>9}")
    for (b, n), r in rows.items():
        print(f"{b:<10} {n:>3} {r['sims_per_s']:>10.0f} {r['ms_per_search']:>10.2f} "
              f"{r['tree_time_share']:>11.2f} {r['searches']:>9}")

    def by_batch(backend: str, key: str):
        if backend not in backends:
            return None
        return {str(n): round(rows[(backend, n)][key], 3) for n in BATCHES}

    lz_version = None
    if "lightzero" in backends:
        from importlib.metadata import version
        lz_version = version("LightZero")
    print(json.dumps({
        "bench": "search",
        "quick": args.quick,
        "num_simulations": SIMS,
        "num_candidates": K,
        "sims_per_s": by_batch("numpy", "sims_per_s"),
        "lightzero_sims_per_s": by_batch("lightzero", "sims_per_s"),
        "tree_time_share": by_batch("numpy", "tree_time_share"),
        "lightzero_tree_time_share": by_batch("lightzero", "tree_time_share"),
        "ms_per_search": by_batch("numpy", "ms_per_search"),
        "lightzero_ms_per_search": by_batch("lightzero", "ms_per_search"),
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
                     "lightzero": lz_version},
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
