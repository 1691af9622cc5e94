"""Part: how busy the search servers are, from their heartbeat stats (issue 22, item 5).

A search server (``--role search``) reports cumulative counters in each heartbeat: roots answered,
batches searched, seconds searching (``search_s``, both stages), seconds of them in the LLM prior
(``prior_s``) and, on a GPU, its card's utilisation (``gpu_util``, a percent sampled by NVML).
The hub's report differences two such totals to tell, over the last interval, the roots a second,
the mean batch, the milliseconds a batch, the prior's share of the search time and the GPU's
utilisation: where a run's time goes while it runs. Pure functions; the hub's report calls them.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from pzstream.stream.report_record import SearchLoad

COUNTERS = ("roots", "batches", "search_s", "prior_s")


@dataclass(frozen=True)
class SearchTotals:
    """The search servers' counters summed (servers: how many reported a ``search_s`` counter; a
    prior server's stats have roots and batches too, but no search)."""

    servers: int = 0
    roots: float = 0.0
    batches: float = 0.0
    search_s: float = 0.0
    prior_s: float = 0.0
    gpu_util: float | None = None  # the mean of the servers' last samples; None: none sampled


def _number(x: object) -> float:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) and x >= 0 else 0.0


def search_totals(peer_stats: Iterable[dict[str, float]]) -> SearchTotals:
    """Sum the counters of every peer whose stats carry ``search_s`` (a search server); a peer's stats
    may say anything (NaN, negative, missing keys): such a value counts as 0."""
    sums = dict.fromkeys(COUNTERS, 0.0)
    servers, utils = 0, []
    for st in peer_stats:
        if "search_s" not in st:
            continue
        servers += 1
        for k in COUNTERS:
            sums[k] += _number(st.get(k))
        u = st.get("gpu_util")
        if isinstance(u, (int, float)) and math.isfinite(u) and 0 <= u <= 100:
            utils.append(float(u))
    return SearchTotals(servers, **sums, gpu_util=sum(utils) / len(utils) if utils else None)


def search_load(now: SearchTotals, before: SearchTotals, interval_s: float) -> SearchLoad | None:
    """The load between two totals ``interval_s`` apart; None where no search server reports. A server
    that restarted (its counters fell) counts from zero."""
    if now.servers == 0:
        return None
    d = {k: getattr(now, k) - getattr(before, k) for k in COUNTERS}
    if any(v < 0 for v in d.values()):
        d = {k: getattr(now, k) for k in COUNTERS}
    dt = max(interval_s, 1e-9)
    return SearchLoad(servers=now.servers, roots_per_s=round(d["roots"] / dt, 2),
                      mean_batch=round(d["roots"] / d["batches"], 2) if d["batches"] else None,
                      ms_per_batch=round(1000 * d["search_s"] / d["batches"], 1) if d["batches"] else None,
                      prior_share=round(min(1.0, d["prior_s"] / d["search_s"]), 3) if d["search_s"] > 0 else None,
                      gpu_util=None if now.gpu_util is None else round(now.gpu_util, 1))
