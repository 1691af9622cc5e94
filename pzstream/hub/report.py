"""What the hub tells people: episode returns per collector, periodic log lines, a structured
report record on the live log stream (``pzstream.stream.report_record``: what the dashboard reads)
and TensorBoard scalars while it runs, and the summary dict when it stops."""
from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import anyio

from pzstream.hub.parts import AcceptedSegment
from pzstream.hub.peers import printable
from pzstream.hub.search_load import search_load, search_totals
from pzstream.hub.status import CollectorStatus, HubStatus
from pzstream.stream.report_record import (
    MAX_PEER_ROWS,
    GameReturns,
    PeerHealth,
    PPOFigures,
    ReportPublisher,
    ReportRecord,
    SearchLoad,
    describe_search,
    finite,
    process_rss_bytes,
)

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
        # collector -> [(seconds since start, return, env steps of the episode's game so far, all collectors)]:
        # a learning curve against env steps per game
        self.returns: dict[str, list[tuple[float, float, int]]] = {}
        self.game_steps: Counter[str] = Counter()
        self._cut: dict[str, int] = {}  # collector -> its returns no longer kept (past RETURNS_KEPT)
        self.policies: dict[str, str] = {}
        self.caps: Counter[str] = Counter()

    def on_segment(self, accepted: AcceptedSegment) -> None:
        seg = accepted.segment
        h = seg.header
        key = (h.collector_id, h.episode_id)
        if h.game in self.game_steps or len(self.game_steps) < 4 * self.max_collectors:  # games are peers' names
            self.game_steps[h.game] += seg.n_steps
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
            series.append((round(time.monotonic() - self._t0, 2), total, self.game_steps[h.game]))
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

    def episodes(self, cid: str) -> int:
        """Episodes of ``cid`` finished so far, those no longer kept included."""
        return len(self.returns.get(cid, ())) + self._cut.get(cid, 0)

    def recent_means(self, last: int = 10) -> dict[str, float]:
        return {cid: sum(x[1] for x in s[-last:]) / len(s[-last:]) for cid, s in self.returns.items()}

    def summary(self) -> dict[str, dict[str, object]]:
        out = {}
        for cid, series in sorted(self.returns.items()):
            rets = [x[1] for x in series]
            half = len(rets) // 2
            out[cid] = {"policy": self.policies.get(cid, "unknown"), "episodes": self.episodes(cid),
                        "mean": round(sum(rets) / len(rets), 3),
                        "first_half_mean": round(sum(rets[:half]) / half, 3) if half else None,
                        "second_half_mean": round(sum(rets[half:]) / (len(rets) - half), 3),
                        "series": series[-SERIES_KEPT:],
                        "series_truncated_to": SERIES_KEPT if len(series) > SERIES_KEPT else None}
        return out


@dataclass(frozen=True)
class HubExtras:
    """What the report reads beside :class:`HubStatus`, taken on the hub's loop.

    trainer_stats: the trainer's last stats (``loss/*`` among them); last_heard_s: peer id ->
    seconds since the hub last heard from it; pids: helper name -> its process id (None: not running);
    publishes: model -> versions this hub published (``PublishedVersions.publishes``).
    """

    wm_updates: int
    trainer_stats: dict[str, float]
    trainer_dropped: int
    ppo: PPOFigures | None
    last_heard_s: dict[str, float]
    pids: dict[str, int | None]
    publishes: dict[str, int] = field(default_factory=dict)


def returns_by_game(returns: ReturnTracker, games: dict[str, str], last: int = 10) -> dict[str, GameReturns]:
    """Per game (``games``: collector id -> game; others count as ``(unknown)``): episodes finished and
    the mean return of the last ``last`` episodes of each of its collectors."""
    sums: dict[str, tuple[int, list[float], int]] = {}
    for cid, series in returns.returns.items():
        if not series:
            continue
        game = games.get(cid, "(unknown)")
        episodes, recent, collectors = sums.get(game, (0, [], 0))
        sums[game] = (episodes + returns.episodes(cid), recent + [x[1] for x in series[-last:]], collectors + 1)
    return {g: GameReturns(episodes=n, recent_mean=round(sum(r) / len(r), 4), collectors=k)
            for g, (n, r, k) in sorted(sums.items())}


def peer_health(c: CollectorStatus, role: str, last_heard_s: float | None) -> PeerHealth:
    """One health row from a peer's status and its last heartbeat's stats."""
    st = c.stats

    def version(key: str) -> int | None:
        return int(st[key]) if key in st and math.isfinite(st[key]) else None

    return PeerHealth(peer_id=c.collector_id, role=role, game=c.game, policy=c.policy, accepted=c.accepted,
                      rejected=c.rejected, steps=c.steps, lost=c.lost, closed=c.closed,
                      last_heard_s=None if last_heard_s is None else round(last_heard_s, 2),
                      blocked=bool(st.get("blocked", 0.0)), blocked_s=round(finite(st.get("blocked_s", 0.0)) or 0.0, 2),
                      wm_version=version("wm_version"), llm_version=version("llm_version"),
                      return_mean=finite(st.get("return_mean")),
                      rss_bytes=int(st["rss_bytes"]) if finite(st.get("rss_bytes")) is not None else None)


def report_record(s: HubStatus, x: HubExtras, returns: ReturnTracker, interval_s: float,
                  previous: tuple[int, int, int], rss_bytes: dict[str, int],
                  search: SearchLoad | None = None) -> ReportRecord:
    """The structured report: ``s`` and ``x`` now, ``previous`` (segments, env steps, wm updates) at the
    report ``interval_s`` seconds ago (the rates are over that interval), the search servers' ``search``
    load over it."""
    dt = max(interval_s, 1e-9)
    rows = [peer_health(c, "collector", x.last_heard_s.get(cid)) for cid, c in s.collectors.items()]
    rows += [peer_health(c, "reader", x.last_heard_s.get(cid)) for cid, c in s.readers.items()]
    rows.sort(key=lambda r: (r.lost or r.closed, r.role, r.peer_id))  # live ones first
    losses = {k[len("loss/"):]: v for k, v in x.trainer_stats.items() if k.startswith("loss/") and finite(v) is not None}
    return ReportRecord(
        elapsed_s=round(s.elapsed_s, 2), interval_s=round(interval_s, 3),
        segments_accepted=s.segments_accepted, segments_per_s=round((s.segments_accepted - previous[0]) / dt, 3),
        env_steps=s.env_steps, steps_per_s=round((s.env_steps - previous[1]) / dt, 3),
        wm_updates=x.wm_updates, wm_updates_per_s=round((x.wm_updates - previous[2]) / dt, 3),
        wm_version=s.wm_version, llm_version=s.llm_version,
        min_collector_wm_version=s.min_collector_version("wm"), min_collector_llm_version=s.min_collector_version("llm"),
        lag_wm={k: float(v) for k, v in s.lag_wm.items()}, lag_llm={k: float(v) for k, v in s.lag_llm.items()},
        losses=losses, returns=returns_by_game(returns, {cid: c.game for cid, c in s.collectors.items()}),
        ppo=replace(x.ppo, reward_mean=finite(x.ppo.reward_mean)) if x.ppo else None,
        rejected_by_reason=dict(s.rejected_by_reason), connections_rejected=dict(s.connections_rejected),
        caps=dict(sorted(s.caps.items())), peers=tuple(rows[:MAX_PEER_ROWS]), peers_total=len(rows),
        collectors_live=s.live_collectors, collectors_lost=s.collectors_lost, trainer_dropped=x.trainer_dropped,
        rss_bytes=rss_bytes, search=search)


def report_line(s: HubStatus, x: HubExtras, record: ReportRecord, publishes_before: dict[str, int]) -> str:
    """The periodic report's log line: ingest (with the interval's rates from ``record``), collectors,
    per model its newest version with how many versions this hub published (in all, and since the
    report before: ``publishes_before``), and the search servers' load where any reports."""
    def published(model: str) -> str:
        n = x.publishes.get(model, 0)
        return f"published {n}, {n - publishes_before.get(model, 0)} new"

    search = f", {describe_search(record.search)}" if record.search is not None else ""
    return (f"segments {s.segments_accepted} ({record.segments_per_s:.1f}/s), steps {s.env_steps} "
            f"({record.steps_per_s:.1f}/s), rejected "
            f"{s.rejected_by_reason or 0}, collectors live {s.live_collectors}, cache hit {100 * s.cache_hit_rate():.1f}%, "
            f"wm v{s.wm_version} ({published('wm')}; updates {x.wm_updates}, lag mean "
            f"{float(s.lag_wm.get('mean', 0.0)):.1f}), llm v{s.llm_version} ({published('llm')}){search}")


def measure_rss(pids: dict[str, int | None]) -> dict[str, int]:
    """Resident memory of this process (``hub``) and of each named helper that runs."""
    named = {"hub": os.getpid(), **{name: pid for name, pid in pids.items() if pid is not None}}
    return {name: rss for name, pid in named.items() if (rss := process_rss_bytes(pid)) is not None}


class HubReport:
    """Every ``every_s`` seconds: a log line, a structured :class:`ReportRecord` on the live log
    stream, and TensorBoard scalars."""

    def __init__(self, every_s: float, status: Callable[[], HubStatus], returns: ReturnTracker,
                 extras: Callable[[], HubExtras], tensorboard_dir: Path | None):
        self.every_s, self.status, self.returns, self.extras = every_s, status, returns, extras
        self.tensorboard_dir = tensorboard_dir

    async def run(self) -> None:
        writer = None
        if self.tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.tensorboard_dir))
        publisher = ReportPublisher()
        t0 = last_t = time.monotonic()
        s, x = self.status(), self.extras()  # a resumed hub's counters start where they stopped
        previous = (s.segments_accepted, s.env_steps, x.wm_updates)
        searched = search_totals(c.stats for c in s.readers.values())
        publishes_before = dict(x.publishes)
        try:
            while True:
                await anyio.sleep(self.every_s)
                now, s, x = time.monotonic(), self.status(), self.extras()
                totals = search_totals(c.stats for c in s.readers.values())
                record = report_record(s, x, self.returns, now - last_t, previous, measure_rss(x.pids),
                                       search_load(totals, searched, now - last_t))
                previous, last_t, searched = (s.segments_accepted, s.env_steps, x.wm_updates), now, totals
                publisher.publish(record)
                lag_mean = float(s.lag_wm.get("mean", 0.0))
                log.info("%s", report_line(s, x, record, publishes_before))
                publishes_before = dict(x.publishes)
                means = self.returns.recent_means()
                for cid, mean in means.items():
                    log.info("returns %s (%s): last %d episodes mean %.2f", printable(cid),
                             printable(self.returns.policies.get(cid, "unknown")), min(10, len(self.returns.returns[cid])), mean)
                if writer is not None:
                    t = round(now - t0)
                    writer.add_scalar("ingest/segments_per_s", record.segments_per_s, t)
                    writer.add_scalar("ingest/steps_per_s", record.steps_per_s, t)
                    writer.add_scalar("lag/wm_mean", lag_mean, t)
                    writer.add_scalar("weights/wm_version", s.wm_version, t)
                    for cid, mean in means.items():
                        writer.add_scalar(f"returns/{cid}", mean, t)
                    writer.flush()
        finally:
            publisher.close()
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


#: The LLM prior's counters in a peer's heartbeat stats (``pzstream.agent.PriorCounts.as_stats``).
PRIOR_COUNTS = ("prior_moves", "prior_errors", "prior_fallbacks", "prior_ignored")


def llm_prior_summary(peer_stats: list[dict[str, float]]) -> dict[str, float]:
    """The LLM prior over every peer that searched with one (collectors, search servers): moves searched
    with it, errors, fallbacks (moves without it although configured), moves it could not steer
    (ignored), and the mean share of the root prior's mass it moved (weighted by moves)."""
    out = {k[len("prior_"):]: 0.0 for k in PRIOR_COUNTS}
    shift = 0.0
    for st in peer_stats:
        if "prior_moves" not in st:
            continue
        for k in PRIOR_COUNTS:
            out[k[len("prior_"):]] += finite(st.get(k, 0.0)) or 0.0
        shift += (finite(st.get("prior_shift_mean", 0.0)) or 0.0) * (finite(st["prior_moves"]) or 0.0)
    out["shift_mean"] = round(shift / out["moves"], 5) if out["moves"] else 0.0
    return out


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
        "llm_prior": llm_prior_summary([c.stats for c in [*s.collectors.values(), *s.readers.values()]]),
        "lag": {"wm": s.lag_wm, "llm": s.lag_llm},
        "caps": dict(sorted(s.caps.items())),
        "megabytes": round(s.accepted_bytes / 1e6, 3),
        "wm_version_published": s.wm_version,
        "min_collector_wm_version": s.min_collector_version("wm"),
        "llm_version_published": s.llm_version,
        "min_collector_llm_version": s.min_collector_version("llm"),
    }
