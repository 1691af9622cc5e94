"""What the hub tells people: episode returns per collector, periodic log lines and TensorBoard
scalars while it runs, and the summary dict when it stops."""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio

from pzstream.hub.parts import AcceptedSegment
from pzstream.hub.peers import printable
from pzstream.hub.status import HubStatus

log = logging.getLogger("pzstream.learner")

SERIES_KEPT = 200  # (time, return) pairs per collector in the summary: the newest ones
RETURNS_KEPT = 10_000  # returns kept per collector (the summary's means are over these)


class ReturnTracker:
    """Part: the return of every finished episode, per collector, summed across its segments.

    Bounded whatever collectors send: the newest ``RETURNS_KEPT`` returns of at most
    ``max_collectors`` collectors (the longest known go first) and at most ``4 x max_collectors``
    unfinished episodes (the oldest go first); what goes is counted in ``caps["returns_dropped"]``.
    """

    def __init__(self, max_collectors: int = 1024) -> None:
        self._t0 = time.monotonic()
        self.max_collectors = max_collectors
        self._partial: dict[tuple[str, int], float] = {}
        self.returns: dict[str, list[tuple[float, float]]] = {}  # collector -> [(seconds since start, return)]
        self._cut: dict[str, int] = {}  # collector -> its returns no longer kept (past RETURNS_KEPT)
        self.policies: dict[str, str] = {}
        self.caps: Counter[str] = Counter()

    def on_segment(self, accepted: AcceptedSegment) -> None:
        seg = accepted.segment
        h = seg.header
        key = (h.collector_id, h.episode_id)
        total = self._partial.pop(key, 0.0) + float(seg.reward.sum(dtype="float64"))
        if bool(seg.done[-1]):
            cid = h.collector_id
            if cid not in self.returns:
                while len(self.returns) >= self.max_collectors:
                    gone = next(iter(self.returns))
                    self.caps["returns_dropped"] += len(self.returns.pop(gone))
                    self._cut.pop(gone, None)
                    self.policies.pop(gone, None)
                self.returns[cid] = []
            series = self.returns[cid]
            series.append((round(time.monotonic() - self._t0, 2), total))
            if len(series) > RETURNS_KEPT:
                del series[0]
                self._cut[cid] = self._cut.get(cid, 0) + 1
                self.caps["returns_dropped"] += 1
            self.policies[cid] = accepted.policy
        else:
            self._partial[key] = total
            while len(self._partial) > 4 * self.max_collectors:
                del self._partial[next(iter(self._partial))]
                self.caps["returns_dropped"] += 1

    def recent_means(self, last: int = 10) -> dict[str, float]:
        return {cid: sum(r for _, r in s[-last:]) / len(s[-last:]) for cid, s in self.returns.items()}

    def summary(self) -> dict[str, dict[str, object]]:
        out = {}
        for cid, series in sorted(self.returns.items()):
            rets = [r for _, r in series]
            half = len(rets) // 2
            out[cid] = {"policy": self.policies.get(cid, "unknown"), "episodes": len(rets) + self._cut.get(cid, 0),
                        "mean": round(sum(rets) / len(rets), 3),
                        "first_half_mean": round(sum(rets[:half]) / half, 3) if half else None,
                        "second_half_mean": round(sum(rets[half:]) / (len(rets) - half), 3),
                        "series": series[-SERIES_KEPT:],
                        "series_truncated_to": SERIES_KEPT if len(series) > SERIES_KEPT else None}
        return out


class HubReport:
    """A log line (and TensorBoard scalars) every ``every_s`` seconds."""

    def __init__(self, every_s: float, status: Callable[[], HubStatus], returns: ReturnTracker,
                 wm_updates: Callable[[], int], tensorboard_dir: Path | None):
        self.every_s, self.status, self.returns, self.wm_updates = every_s, status, returns, wm_updates
        self.tensorboard_dir = tensorboard_dir

    async def run(self) -> None:
        writer = None
        if self.tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.tensorboard_dir))
        t0 = last_t = time.monotonic()
        last, last_steps = 0, 0
        try:
            while True:
                await anyio.sleep(self.every_s)
                now, s = time.monotonic(), self.status()
                dt = max(now - last_t, 1e-9)
                rate, step_rate = (s.segments_accepted - last) / dt, (s.env_steps - last_steps) / dt
                last, last_t, last_steps = s.segments_accepted, now, s.env_steps
                lag_mean = float(s.lag_wm.get("mean", 0.0))
                log.info("segments %d (%.1f/s), steps %d, rejected %s, collectors live %d, cache hit %.1f%%, "
                         "wm v%d (updates %d, lag mean %.1f)", s.segments_accepted, rate, s.env_steps,
                         s.rejected_by_reason or 0, s.live_collectors, 100 * s.cache_hit_rate(), s.wm_version,
                         self.wm_updates(), lag_mean)
                means = self.returns.recent_means()
                for cid, mean in means.items():
                    log.info("returns %s (%s): last %d episodes mean %.2f", printable(cid),
                             printable(self.returns.policies.get(cid, "unknown")), min(10, len(self.returns.returns[cid])), mean)
                if writer is not None:
                    t = round(now - t0)
                    writer.add_scalar("ingest/segments_per_s", rate, t)
                    writer.add_scalar("ingest/steps_per_s", step_rate, t)
                    writer.add_scalar("lag/wm_mean", lag_mean, t)
                    writer.add_scalar("weights/wm_version", s.wm_version, t)
                    for cid, mean in means.items():
                        writer.add_scalar(f"returns/{cid}", mean, t)
                    writer.flush()
        finally:
            if writer is not None:
                writer.close()


def valid_action_shares(s: HubStatus) -> dict[str, dict[str, float]]:
    """Per game, from the collectors' last heartbeats: the share of play time spent getting valid
    actions (valid_action_share) and the share of moves that waited past the budget."""
    sums: dict[str, list[float]] = {}
    for c in s.collectors.values():
        acc = sums.setdefault(c.game, [0.0, 0.0, 0.0, 0.0])
        for i, key in enumerate(("valid_s", "play_s", "va_over_budget", "env_steps")):
            acc[i] += float(c.stats.get(key, 0.0))
    return {g: {"valid_action_share": round(v / p, 4) if p else 0.0,
                "over_budget_share": round(o / n, 4) if n else 0.0} for g, (v, p, o, n) in sums.items()}


def ingest_summary(s: HubStatus) -> dict[str, object]:
    """The ingest half of the hub's summary (the parts add theirs)."""
    elapsed = s.elapsed_s
    shares = valid_action_shares(s)
    return {
        "segments_accepted": s.segments_accepted,
        "segments_rejected": s.segments_rejected,
        "rejected_by_reason": s.rejected_by_reason,
        "connections_rejected": s.connections_rejected,
        "env_steps": s.env_steps,
        "segments_per_s": round(s.segments_accepted / elapsed, 3) if elapsed > 0 else 0.0,
        "steps_per_s": round(s.env_steps / elapsed, 3) if elapsed > 0 else 0.0,
        "valid_action_cache_hit_rate": round(s.cache_hit_rate(), 4),
        "elapsed_s": round(elapsed, 2),
        "collectors_seen": len(s.collectors),
        "collectors_lost": s.collectors_lost,
        "per_game": {g: {**c, **shares.get(g, {})} for g, c in s.per_game.items()},
        "per_collector": {cid: c.summary() for cid, c in s.collectors.items()},
        "readers": {rid: {"lost": r.lost, "closed": r.closed, **r.stats} for rid, r in s.readers.items()},
        "collector_stats": {cid: c.stats for cid, c in s.collectors.items() if c.stats},
        "lag": {"wm": s.lag_wm, "llm": s.lag_llm},
        "caps": dict(sorted(s.caps.items())),
        "megabytes": round(s.accepted_bytes / 1e6, 3),
        "wm_version_published": s.wm_version,
        "min_collector_wm_version": s.min_collector_version("wm"),
        "llm_version_published": s.llm_version,
        "min_collector_llm_version": s.min_collector_version("llm"),
    }
