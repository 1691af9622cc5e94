"""Collectors as the hub sees them, and what of their self-chosen names may reach a log."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from pzstream.stream.liveness import excused
from pzstream.stream.text import LOGGED_ID_CHARS, printable  # noqa: F401  (re-exported: the hub's modules read them here)
from pzstream.stream.wire import Hello

log = logging.getLogger("pzstream.learner")

MAX_STAT_KEY_CHARS = 64  # a heartbeat stats key longer than this is dropped
STAT_VALUE_BYTES = 8  # what one number of a heartbeat's stats counts toward hub.max_stat_bytes


def seed_of(hello: Hello) -> int | None:
    """The reset seed a collector plays with (its episode k resets with seed + k), if it said one."""
    if hello.seed is not None:
        return hello.seed
    # collectors from before Hello.seed said it as a capability
    for cap in hello.capabilities:
        if cap.startswith("seed:") and cap[5:].lstrip("-").isdigit():
            return int(cap[5:])
    return None


def policy_of(hello: Hello) -> str:
    return next((c.split(":", 1)[1] for c in hello.capabilities if c.startswith("policy:")), "unknown")


@dataclass
class Peer:
    """One collector connection.

    ``last_seq``: the highest seq this hub has answered (accepted, or rejected after the
    segment's credit was checked); ``granted``: the highest seq the peer may send (last
    acknowledgement + window).
    """

    identity: bytes
    hello: Hello
    last_heard: float  # monotonic seconds, moved on by the time the hub's own loop stood still (``excuse_stall``)
    last_seq: int = -1
    granted: int = -1
    accepted: int = 0
    rejected: int = 0
    steps: int = 0
    stats: dict[str, float] = field(default_factory=dict)
    lost: bool = False  # went silent past the timeout
    closed: bool = False  # said goodbye: what it still sends while shutting down is ignored

    @property
    def collector_id(self) -> str:
        return self.hello.collector_id

    @property
    def name(self) -> str:
        """The collector id as a log line may show it."""
        return printable(self.hello.collector_id)

    @cached_property
    def seed(self) -> int | None:
        return seed_of(self.hello)

    @cached_property
    def policy(self) -> str:
        return policy_of(self.hello)

    @property
    def is_reader(self) -> bool:
        """A prior or search server: follows weights, sends no segments, is not a collector."""
        return self.hello.role == "reader"

    @property
    def gone(self) -> bool:
        return self.lost or self.closed


def trim_stats(stats: Mapping[str, float], max_bytes: int) -> tuple[dict[str, float], int]:
    """The heartbeat stats a hub keeps, and how many keys it dropped: keys over
    ``MAX_STAT_KEY_CHARS`` go, the rest are kept in the peer's order while their cost (key
    characters + ``STAT_VALUE_BYTES`` each) stays within ``max_bytes``."""
    kept: dict[str, float] = {}
    used = 0
    for key, value in stats.items():
        cost = len(key) + STAT_VALUE_BYTES
        if len(key) > MAX_STAT_KEY_CHARS or used + cost > max_bytes:
            continue
        kept[key] = value
        used += cost
    return kept, len(stats) - len(kept)


def peers_to_prune(peers: Mapping[bytes, Peer], now: float, ttl_s: float, max_peers: int, incoming: int = 0) -> list[bytes]:
    """Identities to forget: gone peers silent for more than ``ttl_s`` (monotonic seconds ``now``),
    then, while the table would still hold more than ``max_peers`` with ``incoming`` new ones, the
    longest-silent gone peers. Live peers are never chosen: the caller refuses newcomers instead."""
    gone = sorted((p.last_heard, ident) for ident, p in peers.items() if p.gone)
    out = [ident for heard, ident in gone if now - heard > ttl_s]
    excess = len(peers) - len(out) + incoming - max_peers
    rest = [ident for heard, ident in gone if now - heard <= ttl_s]
    return out + rest[:max(0, excess)]


def made_up(identity: bytes) -> bool:
    """Whether a routing id is one libzmq made up (5 bytes, the first 0), not one the peer set."""
    return len(identity) == 5 and identity[0] == 0


def handover_leftover(peers: Mapping[bytes, Peer], by_collector: Mapping[str, bytes], identity: bytes,
                      collector_id: str) -> bool:
    """Whether a segment from ``identity``, a connection this hub does not know, is what a live collector's
    earlier connection still had on its way when a newer one took its routing id over.

    With ZMQ_ROUTER_HANDOVER libzmq delivers what is left of the old connection under a routing id it
    makes up itself (docs/wire.md, "Routing id"): such a segment names a collector whose live connection
    set its own routing id. The collector resends what is unacknowledged there, so this is a reconnect,
    not a refusal to count (it is still answered hello_required: an id-less client on a new connection,
    which looks the same, learns to say hello; a real leftover's answer goes nowhere)."""
    owner = by_collector.get(collector_id)
    return (made_up(identity) and identity not in peers and owner is not None and owner != identity
            and not made_up(owner) and owner in peers and not peers[owner].gone)


def prune_table(peers: dict[bytes, Peer], by_collector: dict[str, bytes], collector_stats: dict[str, dict[str, float]],
                now: float, ttl_s: float, max_peers: int, incoming: int = 0) -> int:
    """Forget the peers ``peers_to_prune`` picks: their entry, their id's owner and its stats (the
    hub's totals keep what they sent). Returns how many went."""
    gone = peers_to_prune(peers, now, ttl_s, max_peers, incoming)
    for identity in gone:
        peer = peers.pop(identity)
        if by_collector.get(peer.collector_id) == identity:
            del by_collector[peer.collector_id]
            collector_stats.pop(peer.collector_id, None)
    return len(gone)


def excuse_stall(peers: Mapping[bytes, Peer], stall_s: float, now: float, timeout_s: float) -> None:
    """Excuse every live peer the ``stall_s`` seconds the hub's loop stood still (``liveness.excused``):
    a peer is judged by how long the hub listened without hearing it, not by the clock (issue 14)."""
    if stall_s <= 0:
        return
    for peer in peers.values():
        if not peer.gone:
            peer.last_heard = excused(peer.last_heard, stall_s, now)
    # a busy loop runs late often and by little: only a stall that could have cost a peer is worth a line
    log.log(logging.WARNING if stall_s >= timeout_s / 2 else logging.DEBUG, "the hub's loop stood still for %.1fs "
            "(stopped or starved of CPU); peers' silence meanwhile is not counted against them", stall_s)


def credit_refusal(peer: Peer, seq: int, credit_window: int) -> tuple[str, str] | None:
    """Why a segment with this seq gets no answer of its own (a duplicate, or no credit), else None."""
    if seq <= peer.last_seq:
        return "duplicate_seq", f"seq {seq} <= last answered {peer.last_seq}"
    if peer.last_seq == -1 and peer.accepted == 0:
        # A hub meeting a collector mid-stream (after a hub restart) learns its base from the
        # first segment: the collector's window then ends at that seq - 1 + window.
        peer.granted = max(peer.granted, seq - 1 + credit_window)
    if seq > peer.granted:  # a collector that ignores its window cannot flood the hub
        return "no_credit", f"seq {seq} beyond granted {peer.granted}"
    return None
