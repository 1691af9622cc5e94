"""What the hub counts, and the typed snapshot of it that tests, the report and the summary read."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class HubCounters:
    """Ingest's running totals. lag_*: histogram of (published version - version played with)."""

    accepted: int = 0
    accepted_steps: int = 0
    accepted_bytes: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    connections_rejected: Counter[str] = field(default_factory=Counter)
    per_game: dict[str, Counter[str]] = field(default_factory=dict)
    lag_wm: Counter[int] = field(default_factory=Counter)
    lag_llm: Counter[int] = field(default_factory=Counter)
    collectors_lost: int = 0
    # every memory cap that bit, by name (``CAPS`` below says what each one counts)
    caps: Counter[str] = field(default_factory=Counter)

    def count_accepted(self, game: str, steps: int, episodes_ended: int, nbytes: int, max_games: int,
                       wm_lag: int, llm_lag: int) -> None:
        """One accepted segment: totals, its game's counts (games past ``max_games`` under ``OTHER_GAMES``:
        a game name is the peer's own text, so how many are kept is bounded) and the version lags."""
        self.accepted += 1
        self.accepted_steps += steps
        self.accepted_bytes += nbytes
        counts = self.per_game.get(game)
        if counts is None:
            if len(self.per_game) >= max_games:
                self.caps["games_folded"] += 1
                game = OTHER_GAMES
            counts = self.per_game.setdefault(game, Counter())
        counts["segments"] += 1
        counts["steps"] += steps
        counts["episodes_ended"] += episodes_ended
        self.lag_wm[wm_lag] += 1
        self.lag_llm[llm_lag] += 1


OTHER_GAMES = "(other)"  # per_game's key for segments of games past hub.max_games


#: The names under which the hub counts a memory cap biting (``HubCounters.caps``, the summary's ``caps``).
CAPS = {
    "peers_pruned": "gone peers forgotten (hub.peer_ttl_s, or to make room under hub.max_peers)",
    "peers_refused": "hellos refused because hub.max_peers live peers are connected",
    "hellos_too_large": "hello frames over hub.max_hello_bytes, refused",
    "stats_trimmed": "heartbeat stats keys dropped (hub.max_stat_bytes, or a key over 64 characters)",
    "games_folded": "segments counted under per_game '(other)' (hub.max_games)",
    "returns_dropped": "episode returns or partial episodes forgotten (bounded per collector and in total)",
    "recv_batches_cut": "receive batches cut short at hub.recv_queue_bytes",
    "sends_dropped": "messages to a peer not reading them dropped at hub.max_pending_fetches",
    "fetch_replies_dropped": "of those, weights chunks",
    "log_records_too_large": "log records over hub.max_log_bytes, dropped",
    "log_records_malformed": "log intake frames that are no log record, dropped",
    "log_records_spoofed": "log records from a peer claiming the hub's own role, dropped",
    "handover_leftovers": "segments still on a collector's earlier connection when a newer one took its routing id "
                          "over: answered hello_required (nowhere) but not counted as rejections, since the "
                          "collector resends them on the newer one (peers.handover_leftover)",
}


@dataclass(frozen=True)
class CollectorStatus:
    """One collector id. lost: went silent past the timeout; closed: said goodbye (not a loss)."""

    collector_id: str
    game: str
    policy: str
    accepted: int
    rejected: int
    steps: int
    lost: bool
    closed: bool
    stats: dict[str, float]  # its last heartbeat's numbers

    def summary(self) -> dict[str, object]:
        return {"game": self.game, "accepted": self.accepted, "rejected": self.rejected, "steps": self.steps,
                "lost": self.lost, "closed": self.closed}


@dataclass(frozen=True)
class HubStatus:
    """A snapshot of the hub, taken on its event loop (``LearnerHub.status()``)."""

    segments_accepted: int
    env_steps: int
    accepted_bytes: int
    rejected_by_reason: dict[str, int]
    connections_rejected: dict[str, int]
    collectors: dict[str, CollectorStatus]
    readers: dict[str, CollectorStatus]  # prior/search servers that follow weights and send no segments
    collectors_lost: int
    per_game: dict[str, dict[str, int]]
    lag_wm: dict[str, float]
    lag_llm: dict[str, float]
    wm_version: int  # newest published
    llm_version: int
    elapsed_s: float
    caps: dict[str, int] = field(default_factory=dict)  # memory caps that bit (HubCounters.caps)

    @property
    def segments_rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    @property
    def live_collectors(self) -> int:
        return sum(not (c.lost or c.closed) for c in self.collectors.values())

    def cache_hit_rate(self) -> float:
        hits = sum(c.stats.get("cache_hits", 0.0) for c in self.collectors.values())
        misses = sum(c.stats.get("cache_misses", 0.0) for c in self.collectors.values())
        return hits / (hits + misses) if hits + misses else 0.0

    def min_collector_version(self, model: str) -> int | None:
        """Lowest weights version any collector reported playing with (its last heartbeat)."""
        key = f"{model}_version"
        versions = [int(c.stats[key]) for c in self.collectors.values() if key in c.stats]
        return min(versions) if versions else None


def lag_summary(hist: Counter[int]) -> dict[str, float]:
    """n, mean, p50, p90, max of a histogram of version lags."""
    n = sum(hist.values())
    if not n:
        return {"n": 0}
    lags = sorted(hist.elements())
    return {"n": n, "mean": sum(lags) / n, "p50": lags[n // 2], "p90": lags[min(n - 1, int(n * 0.9))], "max": lags[-1]}
