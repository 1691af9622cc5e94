"""The hub's ingest core: collector connections, validation, credits, counters.

Inbox: the ROUTER (hello, segment, heartbeat, fetch from collectors). Outbox: welcome, credit,
heartbeat and reject to collectors, and every accepted segment to the hub's parts.

Every segment a peer had credit for is answered and its credit freed, accepted or not: the
reply is a Credit acknowledging its seq (a Reject, naming that seq, comes first when refused).
Only segments sent beyond the window or before a hello are refused without new credit.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence

import anyio
import anyio.lowlevel
import msgpack
import zmq

from pzstream.config import HubConfig
from pzstream.hub.parts import AcceptedSegment, SegmentPart
from pzstream.hub.peers import Peer, credit_refusal, excuse_stall, handover_leftover, printable, prune_table, trim_stats
from pzstream.hub.publisher import PublishedVersions
from pzstream.hub.status import CollectorStatus, HubCounters
from pzstream.stream import wire
from pzstream.stream.liveness import LoopClock
from pzstream.stream.transport import HubRouter
from pzstream.stream.weights import WeightsStore
from pzstream.stream.wire import (
    Credit,
    Fetch,
    Heartbeat,
    Hello,
    Reject,
    Segment,
    Welcome,
    WireError,
    WireLimits,
)

log = logging.getLogger("pzstream.learner")

Buffer = bytes | zmq.Frame  # a received frame, copied or not


def peek_segment_seq(data: Buffer) -> int | None:
    """The seq in the header of a segment frame that failed validation, read without decoding
    its columns (the header precedes them); None if the frame is no segment or has none."""
    try:
        up = msgpack.Unpacker(raw=False, max_buffer_size=len(data), max_str_len=1024, max_bin_len=0,
                              max_array_len=0, max_map_len=64, max_ext_len=0)
        up.feed(data)
        kind = None
        for _ in range(min(up.read_map_header(), 8)):
            key = up.unpack()
            if key == "header" and kind == "segment":
                header = up.unpack()
                seq = header.get("seq") if type(header) is dict else None
                return seq if type(seq) is int else None
            if key == "kind":
                kind = up.unpack()
            else:
                up.skip()
    except Exception:  # noqa: BLE001 - anything unreadable simply has no seq
        return None
    return None


class Ingest:
    """Collector connections of one hub, from hello to goodbye or loss."""

    def __init__(self, cfg: HubConfig, limits: WireLimits, hub_id: str, versions: PublishedVersions,
                 store: WeightsStore, max_wm_lag: int | None, parts: Sequence[SegmentPart]):
        self.cfg, self.limits, self.hub_id = cfg, limits, hub_id
        self.versions, self.store, self.max_wm_lag = versions, store, max_wm_lag
        self.parts = list(parts)
        self.counters = HubCounters()
        self.peers: dict[bytes, Peer] = {}
        self.by_collector: dict[str, bytes] = {}
        self.collector_stats: dict[str, dict[str, float]] = {}
        self._logged_reasons: set[str] = set()
        self.loop_clock = LoopClock(cfg.heartbeat_s)  # housekeeping's ticks: when the hub's loop stood still
        self.window = lambda: cfg.credit_window  # the credit window now (a schedule closes it to pause collectors)
        self._router: HubRouter | None = None

    # ------------------------------------------------------------------ serving

    async def serve(self, router: HubRouter) -> None:
        self._router = router
        while True:
            # zmq.Frames, not bytes: a 60 KB copy in and another out to the trainer saved per segment
            batch = await router.recv_batch(copy=False)
            acks: dict[bytes, int] = {}
            for frames in batch:
                if len(frames) != 2:  # a message is one frame (docs/wire.md, Framing): answered, not read
                    identity = frames[0].bytes
                    await self._reject(router, identity, self.peers.get(identity), "bad_framing",
                                       f"a message of {len(frames) - 1} frames; send each message as one frame")
                    continue
                await self._handle(router, frames[0].bytes, frames[1], acks)
            window = self.window()
            for identity, seq in acks.items():
                if (peer := self.peers.get(identity)) is not None:
                    peer.granted = max(peer.granted, seq + window)
                await router.send(identity, wire.encode(Credit(n=window, ack=seq)))
            # a socket that always has data ready never suspends this task: let heartbeats, loss
            # detection, helpers and reports run between batches
            await anyio.lowlevel.checkpoint()

    async def _handle(self, router: HubRouter, identity: bytes, data: Buffer, acks: dict[bytes, int]) -> None:
        peer = self.peers.get(identity)
        if peer is not None:
            peer.last_heard = time.monotonic()
        try:
            msg = wire.decode(data, self.limits)
        except WireError as e:
            await self._refuse_undecodable(router, identity, peer, data, e, acks)
            return
        if peer is not None and peer.closed and not isinstance(msg, Hello):
            return
        if isinstance(msg, Segment):
            await self._on_segment(router, identity, peer, msg, acks, data)
        elif isinstance(msg, Heartbeat):
            if peer is not None and not peer.gone:
                peer.stats, dropped = trim_stats(msg.stats, self.cfg.max_stat_bytes)
                if dropped:
                    self.counters.caps["stats_trimmed"] += dropped
                self.collector_stats[peer.collector_id] = peer.stats
                if msg.stats.get("closing"):  # a clean goodbye: free the id now, it is not a loss
                    peer.closed = True
                    log.info("collector %s left after %d segments", peer.name, peer.accepted)
        elif isinstance(msg, Hello):
            if len(data) > self.cfg.max_hello_bytes:  # a hello is kept as long as its peer: bound it
                self.counters.caps["hellos_too_large"] += 1
                await self._reject(router, identity, peer, "hello_too_large",
                                   f"hello of {len(data)} bytes > hub.max_hello_bytes {self.cfg.max_hello_bytes}")
                return
            await self._on_hello(router, identity, peer, msg)
        elif isinstance(msg, Fetch):
            if peer is None or peer.gone:
                await self._reject(router, identity, peer, "hello_required", "fetch from a connection that has not said hello")
            elif not await router.send(identity, wire.encode(self.store.chunk(msg))):
                self.counters.caps["fetch_replies_dropped"] += 1  # it is not reading what it asked for
        else:
            await self._reject(router, identity, peer, "unexpected_kind", f"collectors do not send {type(msg).__name__}")

    async def _on_hello(self, router: HubRouter, identity: bytes, peer: Peer | None, hello: Hello) -> None:
        owner = self.by_collector.get(hello.collector_id)
        # the same process on a new connection proves itself by its hello's secret session, never by
        # host and pid (every monitor line shows those: copying them took an id over, issue 14)
        same_process = owner is not None and hello.session is not None and self.peers[owner].hello.session == hello.session
        if owner is not None and owner != identity and not self.peers[owner].gone and not same_process:
            await self._reject(router, identity, None, "collector_id_in_use",
                               f"collector id {printable(hello.collector_id)!r} is live on another connection")
            return
        if owner is not None and owner != identity:
            old = self.peers.pop(owner)
            last_seq = old.last_seq if same_process else -1
        else:
            old, last_seq = peer, (peer.last_seq if peer is not None else -1)
        if identity not in self.peers and not self.prune(incoming=1):
            self.counters.caps["peers_refused"] += 1
            await self._reject(router, identity, None, "too_many_peers",
                               f"{len(self.peers)} live peers connected (hub.max_peers)")
            return
        window = self.window()
        fresh = Peer(identity=identity, hello=hello, last_heard=time.monotonic(), last_seq=last_seq, granted=last_seq + window)
        if old is not None and old.collector_id == hello.collector_id:  # an id's counts outlive its losses
            fresh.accepted, fresh.rejected, fresh.steps = old.accepted, old.rejected, old.steps
        self.peers[identity] = fresh
        if peer is not None and peer.collector_id != hello.collector_id and self.by_collector.get(peer.collector_id) == identity:
            del self.by_collector[peer.collector_id]  # a connection that renames itself frees its old id
        self.by_collector[hello.collector_id] = identity
        if fresh.is_reader:
            log.info("reader %s joined (host %s, pid %d): follows weights", fresh.name, printable(hello.host), hello.pid)
        else:
            log.info("collector %s joined (game %s, host %s, pid %d)", fresh.name, printable(hello.game),
                     printable(hello.host), hello.pid)
        # Credit first: the window is relative to the last seq this hub answered from that
        # collector, so a re-hello after a false alarm does not resend what already arrived.
        await router.send(identity, wire.encode(Credit(n=window, ack=last_seq)))
        await router.send(identity, wire.encode(Welcome(hub_id=self.hub_id, window=window, wm_version=self.versions.wm,
                                                        llm_version=self.versions.llm, heartbeat_s=self.cfg.heartbeat_s)))

    def prune(self, incoming: int = 0) -> bool:
        """Forget gone peers past hub.peer_ttl_s (and more, to make room for ``incoming``);
        whether ``incoming`` more fit under hub.max_peers now."""
        self.counters.caps["peers_pruned"] += prune_table(self.peers, self.by_collector, self.collector_stats,
                                                          time.monotonic(), self.cfg.peer_ttl_s, self.cfg.max_peers,
                                                          incoming)
        return len(self.peers) + incoming <= self.cfg.max_peers

    async def announce_window(self) -> None:
        """Every live collector is told the current window past what it has had answered (0: a pause)."""
        if self._router is None:
            return
        window = self.window()
        for peer in list(self.peers.values()):
            if not peer.gone and not peer.is_reader:
                peer.granted = max(peer.granted, peer.last_seq + window)
                await self._router.send(peer.identity, wire.encode(Credit(n=window, ack=peer.last_seq)))

    def _content_check(self, peer: Peer, seg: Segment) -> tuple[str, str] | None:
        """Why a segment the peer had credit for is refused, else None."""
        h = seg.header
        if h.collector_id != peer.collector_id:
            return "collector_id_mismatch", f"segment says {printable(h.collector_id)!r}, connection is {peer.name!r}"
        for model, played in (("wm", h.wm_version), ("llm", h.llm_version)):
            published = self.versions.published(model)
            if not 0 <= played <= published:  # self-reported: a version the hub never published is a lie or a bug
                return "version_out_of_range", f"played with {model} v{played}, hub has published v0..v{published}"
        lag = self.versions.wm - h.wm_version
        if self.max_wm_lag is not None and lag > self.max_wm_lag:
            self.counters.lag_wm[lag] += 1
            return "stale", f"played with wm v{h.wm_version}, hub has v{self.versions.wm} (bound {self.max_wm_lag})"
        return None

    async def _on_segment(self, router: HubRouter, identity: bytes, peer: Peer | None, seg: Segment,
                          acks: dict[bytes, int], data: Buffer) -> None:
        h = seg.header
        if peer is None and handover_leftover(self.peers, self.by_collector, identity, h.collector_id):
            self.counters.caps["handover_leftovers"] += 1  # a reconnect's, not a rejection: resent on the live one
            await router.send(identity, wire.encode(Reject(reason="hello_required", detail="say hello on this connection")))
            return
        if peer is None or peer.gone:
            await self._reject(router, identity, peer, "hello_required", "segment from a connection that has not said hello", h.seq)
            return
        if peer.is_reader:
            await self._reject(router, identity, peer, "unexpected_kind", "a reader (hello role 'reader') sends no segments", h.seq)
            return
        refused = credit_refusal(peer, h.seq, self.cfg.credit_window)
        if refused is not None:
            if refused[0] == "duplicate_seq":
                acks[identity] = max(acks.get(identity, -1), peer.last_seq)
            await self._reject(router, identity, peer, *refused, h.seq)
            return
        peer.last_seq = acks[identity] = h.seq  # answered either way: its credit is free
        refused = self._content_check(peer, seg)
        if refused is not None:
            await self._reject(router, identity, peer, *refused, h.seq)
            return
        if self.cfg.stall_s:
            await anyio.sleep(self.cfg.stall_s)
        peer.accepted += 1
        peer.steps += seg.n_steps
        self.counters.count_accepted(h.game, seg.n_steps, int(seg.done.sum()), len(data), self.cfg.max_games,
                                     self.versions.wm - h.wm_version, self.versions.llm - h.llm_version)
        accepted = AcceptedSegment(seg, data, peer.seed, peer.policy)
        for part in self.parts:
            part.on_segment(accepted)

    async def _refuse_undecodable(self, router: HubRouter, identity: bytes, peer: Peer | None, data: Buffer,
                                  e: WireError, acks: dict[bytes, int]) -> None:
        """A frame that failed validation; if it is a segment whose seq can be read, that seq is
        answered like any other (its credit freed when the peer had credit for it)."""
        seq = peek_segment_seq(data) if peer is not None and not peer.gone else None
        if seq is not None and seq < 0:  # a reject's seq is >= 0 on the wire: a negative one is not echoed
            seq = None
        if seq is not None and peer is not None:
            if credit_refusal(peer, seq, self.cfg.credit_window) is None:
                peer.last_seq = acks[identity] = seq
            elif seq <= peer.last_seq:
                acks[identity] = max(acks.get(identity, -1), peer.last_seq)
        await self._reject(router, identity, peer, e.reason, e.detail, seq)

    async def _reject(self, router: HubRouter, identity: bytes, peer: Peer | None, reason: str, detail: str,
                      seq: int | None = None) -> None:
        who = peer.name if peer is not None else identity.hex()[:16]
        if peer is not None:
            peer.rejected += 1
        self.count_reject(reason, f"from {who}: {detail}")
        if peer is None or "reject_seq" not in peer.hello.capabilities:
            seq = None  # a collector written before `seq` existed may refuse a reject that carries it
        await router.send(identity, wire.encode(Reject(reason=reason, detail=detail[:500], seq=seq)))

    def count_reject(self, reason: str, detail: str, counter: Counter[str] | None = None) -> None:
        """Count a rejection (a message by default, or a connection) and log its kind once."""
        (self.counters.rejected if counter is None else counter)[reason] += 1
        if reason not in self._logged_reasons:  # once per kind; the counters carry the rest
            self._logged_reasons.add(reason)
            log.warning("rejected (%s) %s; further rejections of this kind are only counted", reason, printable(detail, 500))

    # ------------------------------------------------------------------ background

    async def watch_handshakes(self, router: HubRouter) -> None:
        while True:
            reason = await router.handshake_failures()
            self.count_reject(reason, "a peer without the CURVE key", self.counters.connections_rejected)

    async def housekeeping(self, router: HubRouter) -> None:
        """Heartbeats, loss detection on the hub's running clock (``excuse_stall``), forgetting gone peers."""
        timeout = self.cfg.heartbeat_s * self.cfg.peer_timeout_heartbeats
        while True:
            now = time.monotonic()
            excuse_stall(self.peers, self.loop_clock.tick(now), now, timeout)
            beat = wire.encode(Heartbeat(sender=self.hub_id, time=time.time(), stats={"accepted": float(self.counters.accepted)}))
            for peer in list(self.peers.values()):
                if peer.gone:
                    continue
                if now - peer.last_heard > timeout:
                    peer.lost = True
                    self.counters.collectors_lost += not peer.is_reader
                    log.warning("%s %s lost (silent %.1fs); its id is free again", "reader" if peer.is_reader else "collector",
                                peer.name, now - peer.last_heard)
                    continue
                await router.send(peer.identity, beat)
            self.prune()
            await anyio.sleep(self.cfg.heartbeat_s)

    def collectors(self, readers: bool = False) -> dict[str, CollectorStatus]:
        """The collectors' status (or, with ``readers``, that of the peers that only follow weights)."""
        return {p.collector_id: CollectorStatus(
                    collector_id=p.collector_id, game=p.hello.game, policy=p.policy, accepted=p.accepted,
                    rejected=p.rejected, steps=p.steps, lost=p.lost, closed=p.closed,
                    stats=dict(self.collector_stats.get(p.collector_id, {})))
                for p in self.peers.values() if p.is_reader == readers}
