"""The learner hub: receives segments, validates, counts, stores, reports.

Inbox: the ROUTER (hello, segment, heartbeat from collectors). Outbox: welcome/credit/
heartbeat/reject to collectors, weights notices on PUB, log records, a summary at the end.
"""
from __future__ import annotations

import logging
import os
import random
import socket
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import zmq
import zmq.asyncio

from pzstream.stream import wire
from pzstream.config import Config
from pzstream.hub.prompt_queue import PromptQueue, ReplayBuffer
from pzstream.stream.transport import CurveKeys, HubRouter, LogRelay, NoticePublisher, check_bind_security, endpoints_for
from pzstream.stream.weights import HUB_URI, WeightsStore
from pzstream.stream.wire import Credit, Fetch, Heartbeat, Hello, Reject, Segment, Welcome, WireError, WireLimits

log = logging.getLogger("pzstream.learner")


@dataclass
class Peer:
    """One collector connection as the hub sees it."""

    identity: bytes
    hello: Hello
    last_heard: float
    last_seq: int = -1
    granted: int = -1  # highest seq this peer may send: last ack + window
    accepted: int = 0
    rejected: int = 0
    steps: int = 0
    stats: dict[str, float] = field(default_factory=dict)
    lost: bool = False
    closed: bool = False  # said goodbye: what it still sends while shutting down is ignored


@dataclass
class HubCounters:
    accepted: int = 0
    accepted_steps: int = 0
    accepted_bytes: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    connections_rejected: Counter[str] = field(default_factory=Counter)
    per_game: dict[str, Counter[str]] = field(default_factory=dict)
    lag_wm: Counter[int] = field(default_factory=Counter)
    lag_llm: Counter[int] = field(default_factory=Counter)
    collectors_lost: int = 0
    trainer_dropped: int = 0


@dataclass
class PPOState:
    """The hub's side of PPO episodes: counters and the one episode in flight."""

    fired: int = 0
    ok: int = 0
    failed: int = 0
    worker_restarts: int = 0
    unsearched_steps: int = 0  # steps of random play: no search decision to learn, not queued
    running: int | None = None  # episode number in flight
    started: float = 0.0
    runtime: str | None = None
    ready: bool = False
    worker_pid: int | None = None
    last: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _local_channel(ctx: zmq.asyncio.Context, prefix: str, hwm: int):
    """A hub <-> helper-process pair of ipc sockets in a fresh directory: the hub PUSHes to
    ``inbox`` (never blocking: ``hwm`` bounds what waits) and PULLs from ``outbox``.
    Returns (directory, inbox, outbox, push, pull)."""
    sock_dir = tempfile.mkdtemp(prefix=prefix)
    inbox, outbox = f"ipc://{sock_dir}/in", f"ipc://{sock_dir}/out"
    push = zmq.Context.shadow(ctx.underlying).socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, hwm)
    push.setsockopt(zmq.LINGER, 0)
    push.bind(inbox)
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.bind(outbox)
    return sock_dir, inbox, outbox, push, pull


def _lag_summary(hist: Counter[int]) -> dict[str, float]:
    n = sum(hist.values())
    if not n:
        return {"n": 0}
    lags = sorted(hist.elements())
    return {"n": n, "mean": sum(lags) / n, "p50": lags[n // 2], "p90": lags[min(n - 1, int(n * 0.9))], "max": lags[-1]}


class LearnerHub:
    """Serve collectors until ``stop`` is set; :meth:`summary` reports what happened."""

    def __init__(self, cfg: Config, curve: CurveKeys | None = None, run_dir: Path | None = None):
        self.cfg = cfg
        self.run_dir = run_dir or Path(cfg.run.out_dir) / cfg.run.name
        self.curve = curve
        self.endpoints = endpoints_for(cfg.hub.address)
        self.limits = WireLimits(max_message_bytes=cfg.wire.max_message_bytes,
                                 max_array_elements=cfg.wire.max_array_elements,
                                 max_steps=cfg.wire.max_steps,
                                 max_candidates_per_step=cfg.wire.max_candidates_per_step)
        self.hub_id = f"{socket.gethostname()}-{os.getpid()}"
        self.replay = ReplayBuffer(cfg.hub.replay_capacity_steps)
        self.counters = HubCounters()
        self.peers: dict[bytes, Peer] = {}
        self.by_collector: dict[str, bytes] = {}
        self.collector_stats: dict[str, dict[str, float]] = {}
        self.weights = WeightsStore(keep=3, directory=self.run_dir / "weights")
        self.wm_version = 0
        self.llm_version = 0
        self._logged_reasons: set[str] = set()
        self.trainer_stats: dict[str, float] = {}
        self._train_push: zmq.Socket | None = None
        pc = cfg.ppo
        self.prompts = PromptQueue(pc.queue_capacity, pc.fire_threshold) if pc.enabled else None
        self.ppo = PPOState()
        self._ppo_push: zmq.Socket | None = None
        self._ppo_rng = random.Random(pc.seed)
        self._tracker = None
        if pc.enabled:
            from pzstream.orz.samples import EpisodeTracker

            self._tracker = EpisodeTracker(cfg.llm.history_len)
        self._episode_sums: dict[tuple[str, int], float] = {}
        self.episode_returns: dict[str, list[tuple[float, float]]] = {}
        self._t0 = time.monotonic()
        self._t_end: float | None = None
        self.ready = anyio.Event()

    # ------------------------------------------------------------------ serving

    async def serve(self, stop: anyio.Event) -> dict[str, object]:
        check_bind_security(self.cfg.hub.address, self.curve, self.cfg.security.allow_insecure)
        ctx = zmq.asyncio.Context()
        sync_ctx = zmq.Context.shadow(ctx.underlying)
        auth = self.curve.start_authenticator(sync_ctx) if self.curve else None
        router = HubRouter(ctx, self.endpoints.segments, self.curve, self.cfg.wire.max_message_bytes)
        notices = NoticePublisher(ctx, self.endpoints.weights, self.curve)
        relay = LogRelay(sync_ctx, self.endpoints.logs_in, self.endpoints.logs_out, self.curve)
        trainer_proc = None
        if self.cfg.trainer.enabled:
            trainer_proc, train_pull, sock_dir = self._start_trainer(ctx)
        self._t0 = time.monotonic()
        log.info("hub %s listening: segments %s, weights %s, logs in %s, monitor %s%s", self.hub_id,
                 self.endpoints.segments, self.endpoints.weights, self.endpoints.logs_in, self.endpoints.logs_out,
                 " (CURVE)" if self.curve else "")
        self.ready.set()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._ingest, router)
                tg.start_soon(self._housekeeping, router, notices)
                tg.start_soon(self._report)
                tg.start_soon(self._watch_handshakes, router)
                if trainer_proc is not None:
                    tg.start_soon(self._trainer_inbox, train_pull, notices)
                if self.prompts is not None:
                    tg.start_soon(self._ppo_loop, ctx, notices)
                await stop.wait()
                tg.cancel_scope.cancel()
        finally:
            self._t_end = time.monotonic()
            if trainer_proc is not None:
                self._stop_trainer(trainer_proc, train_pull, sock_dir)
            router.close()
            notices.close()
            relay.close()
            if auth is not None:
                auth.stop()
            ctx.destroy(linger=0)
        return self.summary()

    def _start_trainer(self, ctx: zmq.asyncio.Context):
        from pzstream.stream.logstream import local_address
        from pzstream.roles.trainer import start_trainer

        sock_dir, inbox, outbox, push, pull = _local_channel(ctx, "pzstream-hub-", hwm=2000)
        self._train_push = push
        logs_in = None if self.curve else local_address(self.endpoints.logs_in)
        proc = start_trainer(self.cfg, inbox, outbox, self.run_dir, logs_in)
        log.info("world-model trainer started (pid %d)", proc.pid)
        return proc, pull, sock_dir

    def _stop_trainer(self, proc, pull: zmq.asyncio.Socket, sock_dir: str) -> None:
        import shutil

        from pzstream.roles.trainer import STOP

        if self._train_push is not None:
            try:
                self._train_push.send(STOP, flags=zmq.NOBLOCK)
            except zmq.Again:
                pass
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
        if self._train_push is not None:
            self._train_push.close(0)
            self._train_push = None
        pull.close(0)
        shutil.rmtree(sock_dir, ignore_errors=True)

    async def _trainer_inbox(self, pull: zmq.asyncio.Socket, notices: NoticePublisher) -> None:
        """New weights and metrics from the trainer process."""
        while True:
            frames = await pull.recv_multipart()
            msg = wire.decode(frames[0])
            if isinstance(msg, wire.Weights) and len(frames) == 2:
                notice = self.weights.put(msg.model, msg.version, frames[1])
                if msg.model == "wm":
                    self.wm_version = msg.version
                elif msg.model == "llm":
                    self.llm_version = msg.version
                await notices.publish(notice)
                log.info("published %s v%d (%d bytes, sha256 %s)", notice.model, notice.version, notice.nbytes, notice.sha256[:12])
            elif isinstance(msg, wire.Heartbeat):
                self.trainer_stats = dict(msg.stats)

    async def _ingest(self, router: HubRouter) -> None:
        while True:
            batch = await router.recv_batch()
            acks: dict[bytes, int] = {}
            for frames in batch:
                if len(frames) != 2:
                    self._count_reject("bad_framing", f"{len(frames)} frames")
                    continue
                identity, data = frames
                await self._handle(router, identity, data, acks)
            window = self.cfg.hub.credit_window
            for identity, seq in acks.items():
                if (peer := self.peers.get(identity)) is not None:
                    peer.granted = max(peer.granted, seq + window)
                await router.send(identity, wire.encode(Credit(n=window, ack=seq)))

    async def _handle(self, router: HubRouter, identity: bytes, data: bytes, acks: dict[bytes, int]) -> None:
        peer = self.peers.get(identity)
        if peer is not None:
            peer.last_heard = time.monotonic()
        try:
            msg = wire.decode(data, self.limits)
        except WireError as e:
            await self._reject(router, identity, peer, e.reason, e.detail)
            return
        if peer is not None and peer.closed and not isinstance(msg, Hello):
            return
        if isinstance(msg, Segment):
            await self._on_segment(router, identity, peer, msg, acks, data)
        elif isinstance(msg, Heartbeat):
            if peer is not None and not peer.lost:
                peer.stats = dict(msg.stats)
                self.collector_stats[peer.hello.collector_id] = peer.stats
                if msg.stats.get("closing"):  # a clean goodbye: free the id now, it is not a loss
                    peer.lost = peer.closed = True
                    log.info("collector %s left after %d segments", peer.hello.collector_id, peer.accepted)
        elif isinstance(msg, Hello):
            await self._on_hello(router, identity, peer, msg)
        elif isinstance(msg, Fetch):
            if peer is None or peer.lost:
                await self._reject(router, identity, peer, "hello_required", "fetch from a connection that has not said hello")
            else:
                await router.send(identity, wire.encode(self.weights.chunk(msg)))
        else:
            await self._reject(router, identity, peer, "unexpected_kind", f"collectors do not send {type(msg).__name__}")

    async def _on_hello(self, router: HubRouter, identity: bytes, peer: Peer | None, hello: Hello) -> None:
        owner = self.by_collector.get(hello.collector_id)
        same_process = owner is not None and (self.peers[owner].hello.host, self.peers[owner].hello.pid) == (hello.host, hello.pid)
        if owner is not None and owner != identity and not self.peers[owner].lost and not same_process:
            await self._reject(router, identity, None, "collector_id_in_use",
                               f"collector id {hello.collector_id!r} is live on another connection")
            return
        if owner is not None and owner != identity:
            old = self.peers.pop(owner)
            last_seq = old.last_seq if old.hello.pid == hello.pid and old.hello.host == hello.host else -1
        else:
            last_seq = peer.last_seq if peer is not None else -1
        fresh = Peer(identity=identity, hello=hello, last_heard=time.monotonic(), last_seq=last_seq,
                     granted=last_seq + self.cfg.hub.credit_window)
        if peer is not None and not peer.lost:
            fresh.accepted, fresh.rejected, fresh.steps = peer.accepted, peer.rejected, peer.steps
        self.peers[identity] = fresh
        self.by_collector[hello.collector_id] = identity
        log.info("collector %s joined (game %s, host %s, pid %d)", hello.collector_id, hello.game, hello.host, hello.pid)
        # Credit first: the window is relative to the last seq this hub accepted from that
        # collector, so a re-hello after a false alarm does not resend what already arrived.
        await router.send(identity, wire.encode(Credit(n=self.cfg.hub.credit_window, ack=last_seq)))
        await router.send(identity, wire.encode(Welcome(hub_id=self.hub_id, window=self.cfg.hub.credit_window,
                                                        wm_version=self.wm_version, llm_version=self.llm_version,
                                                        heartbeat_s=self.cfg.hub.heartbeat_s)))

    async def _on_segment(self, router: HubRouter, identity: bytes, peer: Peer | None, seg: Segment,
                          acks: dict[bytes, int], data: bytes) -> None:
        h = seg.header
        if peer is None or peer.lost:
            await self._reject(router, identity, peer, "hello_required", "segment from a connection that has not said hello")
            return
        if h.collector_id != peer.hello.collector_id:
            await self._reject(router, identity, peer, "collector_id_mismatch",
                               f"segment says {h.collector_id!r}, connection is {peer.hello.collector_id!r}")
            acks[identity] = max(acks.get(identity, -1), peer.last_seq)
            return
        if h.seq <= peer.last_seq:
            await self._reject(router, identity, peer, "duplicate_seq", f"seq {h.seq} <= last accepted {peer.last_seq}")
            acks[identity] = max(acks.get(identity, -1), peer.last_seq)
            return
        if peer.last_seq == -1 and peer.accepted == 0:
            # A hub meeting a collector mid-stream (after a hub restart) learns its base from the
            # first segment: the collector's window then ends at that seq - 1 + window.
            peer.granted = max(peer.granted, h.seq - 1 + self.cfg.hub.credit_window)
        if h.seq > peer.granted:  # a collector that ignores its window cannot flood the hub
            await self._reject(router, identity, peer, "no_credit", f"seq {h.seq} beyond granted {peer.granted}")
            return
        lag = self.wm_version - h.wm_version
        bound = self.cfg.trainer.max_wm_lag
        if bound is not None and lag > bound:
            peer.last_seq = h.seq
            acks[identity] = h.seq
            self.counters.lag_wm[lag] += 1
            await self._reject(router, identity, peer, "stale", f"played with wm v{h.wm_version}, hub has v{self.wm_version} (bound {bound})")
            return
        if self.cfg.hub.stall_s:
            await anyio.sleep(self.cfg.hub.stall_s)
        peer.last_seq = h.seq
        peer.accepted += 1
        peer.steps += seg.n_steps
        c = self.counters
        c.accepted += 1
        c.accepted_steps += seg.n_steps
        c.accepted_bytes += len(data)
        game = c.per_game.setdefault(h.game, Counter())
        game["segments"] += 1
        game["steps"] += seg.n_steps
        game["episodes_ended"] += int(seg.done.sum())
        c.lag_wm[lag] += 1
        c.lag_llm[self.llm_version - h.llm_version] += 1
        self.replay.add(seg)
        self._track_returns(seg)
        if self._train_push is not None:
            try:
                self._train_push.send(data, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:  # the trainer is behind: it samples anyway, but say how much it missed
                c.trainer_dropped += 1
        if self.prompts is not None:
            self._queue_prompts(seg, peer)
        acks[identity] = h.seq

    # ------------------------------------------------------------------ PPO episodes

    def _queue_prompts(self, seg: Segment, peer: Peer) -> None:
        """Every searched step becomes a prompt sample; a full queue fires an episode (never waits)."""
        from pzstream.orz.samples import searched

        seed = next((int(c.split(":", 1)[1]) for c in peer.hello.capabilities
                     if c.startswith("seed:") and c.split(":", 1)[1].lstrip("-").isdigit()), None)
        samples = self._tracker.add(seg, seed_base=seed)
        if not searched(seg):
            self.ppo.unsearched_steps += len(samples)
            return
        for s in samples:
            self.prompts.add(s)
        self._maybe_fire()

    def _maybe_fire(self) -> None:
        import msgpack

        st = self.ppo
        if self._ppo_push is None or not st.ready or st.running is not None or not self.prompts.ready():
            return
        samples = self.prompts.take(self.cfg.ppo.rollout_batch_size, self._ppo_rng)
        k = st.fired + 1
        try:
            self._ppo_push.send(msgpack.packb({"kind": "episode", "episode": k, "samples": [s.to_dict() for s in samples]}),
                                flags=zmq.NOBLOCK)
        except zmq.Again:
            log.warning("PPO worker is not taking requests; episode %d not fired", k)
            return
        st.fired, st.running, st.started = k, k, time.monotonic()
        games = Counter(s.game for s in samples)
        log.info("PPO episode %d fired: %d prompts (%s), queue %s", k, len(samples),
                 ", ".join(f"{g} {100 * n / len(samples):.0f}%" for g, n in sorted(games.items())), self.prompts.summary())

    async def _ppo_loop(self, ctx: zmq.asyncio.Context, notices: NoticePublisher) -> None:
        """Start the PPO worker, take its results, restart it when it dies or hangs."""
        import msgpack

        from pzstream.stream.logstream import local_address
        from pzstream.roles.ppo_worker import STOP, start_worker

        sock_dir, inbox, outbox, push, pull = _local_channel(ctx, "pzstream-ppo-", hwm=4)
        self._ppo_push = push
        logs_in = None if self.curve else local_address(self.endpoints.logs_in)
        st = self.ppo
        writer = None
        if self.cfg.trainer.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tb" / "orz"))
        proc = None
        try:
            while True:
                if proc is None:
                    proc = start_worker(self.cfg, inbox, outbox, self.run_dir, logs_in)
                    st.ready, st.worker_pid = False, proc.pid
                    log.info("PPO worker started (pid %d); runtime %s", proc.pid, self.cfg.ppo.runtime)
                frames = None
                with anyio.move_on_after(1.0):
                    frames = await pull.recv_multipart()
                if frames is not None:
                    msg = msgpack.unpackb(frames[0])
                    if msg["kind"] == "ready":
                        st.ready, st.runtime = True, msg["runtime"]
                        log.info("PPO runtime %s: %s", msg["runtime"], msg["describe"])
                    elif msg["kind"] == "fatal":
                        self._ppo_failed(f"runtime did not start: {msg['error']}")
                        proc = self._stop_worker(proc, push, STOP)
                        await anyio.sleep(5.0)  # a broken setup: retry, slowly
                    elif msg["kind"] == "result":
                        await self._ppo_result(msg, frames[1] if len(frames) > 1 else None, notices, writer)
                    self._maybe_fire()
                    continue
                # nothing arrived for a second: check on the worker
                if not proc.is_alive():
                    st.worker_restarts += 1
                    log.error("PPO worker died (exit code %s)%s; restarting it", proc.exitcode,
                              f" during episode {st.running}" if st.running is not None else "")
                    if st.running is not None:
                        self._ppo_failed(f"worker died (exit code {proc.exitcode})")
                    proc = None
                elif st.running is not None and time.monotonic() - st.started > self.cfg.ppo.episode_timeout_s:
                    log.error("PPO episode %d ran past ppo.episode_timeout_s=%.0f; restarting the worker",
                              st.running, self.cfg.ppo.episode_timeout_s)
                    self._ppo_failed("timeout")
                    st.worker_restarts += 1
                    proc = self._stop_worker(proc, push, STOP)
                else:
                    self._maybe_fire()
        finally:
            self._ppo_push = None
            if proc is not None:
                self._stop_worker(proc, push, STOP, grace=20.0)
            push.close(0)
            pull.close(0)
            if writer is not None:
                writer.close()
            import shutil

            shutil.rmtree(sock_dir, ignore_errors=True)

    def _stop_worker(self, proc, push: zmq.Socket, stop: bytes, grace: float = 5.0) -> None:
        try:
            push.send(stop, flags=zmq.NOBLOCK)
        except zmq.Again:
            pass
        proc.join(timeout=grace)
        if proc.is_alive():  # busy (starting up, or in an episode): SIGTERM still shuts Ray down
            proc.terminate()
            proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
        self.ppo.ready = False
        return None

    def _ppo_failed(self, why: str) -> None:
        st = self.ppo
        st.failed += 1
        st.errors = (st.errors + [why])[-5:]
        log.error("PPO episode %s failed (%d failed so far): %s; ingestion and world-model training go on",
                  st.running if st.running is not None else "-", st.failed, why.splitlines()[0] if why else "")
        st.running = None

    async def _ppo_result(self, msg: dict, weights: bytes | None, notices: NoticePublisher, writer) -> None:
        st = self.ppo
        if not msg.get("ok"):
            self._ppo_failed(msg.get("error", "unknown error"))
            return
        if weights is None:
            self._ppo_failed("result without weights")
            return
        st.ok += 1
        st.running = None
        m = {k: float(v) for k, v in msg["metrics"].items()}
        st.last = m
        version = self.llm_version + 1
        notice = self.weights.put("llm", version, weights)
        self.llm_version = version
        await notices.publish(notice)
        log.info("PPO episode %d done: reward %.3f (std %.3f, >0 %.0f%%), response %.1f tokens, policy loss %.4f, "
                 "value loss %.4f, kl %.4f; time generate %.2fs reward %.2fs forward %.2fs train %.2fs sync %.2fs; "
                 "games %s; published llm v%d", msg["episode"], m["reward_mean"], m["reward_std"],
                 100 * m["reward_frac_positive"], m["response_length"], m.get("policy_loss", 0.0), m.get("value_loss", 0.0),
                 m.get("kl", 0.0), m["time_generate"], m["time_reward"], m["time_forward"], m["time_train"], m["time_sync"],
                 msg.get("games", {}), version)
        if writer is not None:
            for k, v in m.items():
                writer.add_scalar(f"orz/{k}", v, st.ok)
            if msg.get("rewards"):
                import numpy as np

                writer.add_histogram("orz/rewards", np.asarray(msg["rewards"], dtype=np.float32), st.ok)
            writer.flush()

    def _track_returns(self, seg: Segment) -> None:
        h = seg.header
        key = (h.collector_id, h.episode_id)
        total = self._episode_sums.pop(key, 0.0) + float(seg.reward.sum(dtype="float64"))
        if bool(seg.done[-1]):
            self.episode_returns.setdefault(h.collector_id, []).append((round(time.monotonic() - self._t0, 2), total))
        else:
            self._episode_sums[key] = total

    async def _reject(self, router: HubRouter, identity: bytes, peer: Peer | None, reason: str, detail: str) -> None:
        who = peer.hello.collector_id if peer is not None else identity.hex()[:16]
        if peer is not None:
            peer.rejected += 1
        self._count_reject(reason, f"from {who}: {detail}")
        await router.send(identity, wire.encode(Reject(reason=reason, detail=detail[:500])))

    def _count_reject(self, reason: str, detail: str, counter: Counter[str] | None = None) -> None:
        """Count a rejection (a message by default, or a connection) and log its kind once."""
        (self.counters.rejected if counter is None else counter)[reason] += 1
        if reason not in self._logged_reasons:  # once per kind; the counters carry the rest
            self._logged_reasons.add(reason)
            log.warning("rejected (%s) %s; further rejections of this kind are only counted", reason, detail)

    async def _watch_handshakes(self, router: HubRouter) -> None:
        while True:
            reason = await router.handshake_failures()
            self._count_reject(reason, "a peer without the CURVE key", self.counters.connections_rejected)

    async def _housekeeping(self, router: HubRouter, notices: NoticePublisher) -> None:
        """Heartbeats to live peers, loss detection, periodic weights notices."""
        timeout = self.cfg.hub.heartbeat_s * self.cfg.hub.peer_timeout_heartbeats
        while True:
            now = time.monotonic()
            beat = wire.encode(Heartbeat(sender=self.hub_id, time=time.time(), stats={"accepted": float(self.counters.accepted)}))
            for peer in list(self.peers.values()):
                if peer.lost:
                    continue
                if now - peer.last_heard > timeout:
                    peer.lost = True
                    self.counters.collectors_lost += 1
                    log.warning("collector %s lost (silent %.1fs); its id is free again", peer.hello.collector_id, now - peer.last_heard)
                    continue
                await router.send(peer.identity, beat)
            # repeated so late joiners learn the newest versions; bytes are fetched, never published
            for model, version in (("wm", self.wm_version), ("llm", self.llm_version)):
                stored = self.weights.latest(model)
                if stored is not None:
                    await notices.publish(wire.Weights(model=model, version=stored.version, uri=HUB_URI,
                                                       sha256=stored.sha256, nbytes=len(stored.data)))
                else:
                    await notices.publish(wire.Weights(model=model, version=version, uri="", sha256="", nbytes=0))
            await anyio.sleep(self.cfg.hub.heartbeat_s)

    async def _report(self) -> None:
        writer = None
        if self.cfg.trainer.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tb" / "hub"))
        last, last_t, last_steps = 0, time.monotonic(), 0
        try:
            while True:
                await anyio.sleep(self.cfg.hub.report_every_s)
                now = time.monotonic()
                c = self.counters
                rate = (c.accepted - last) / max(now - last_t, 1e-9)
                step_rate = (c.accepted_steps - last_steps) / max(now - last_t, 1e-9)
                last, last_t, last_steps = c.accepted, now, c.accepted_steps
                live = sum(not p.lost for p in self.peers.values())
                lag = _lag_summary(c.lag_wm)
                log.info("segments %d (%.1f/s), steps %d, rejected %s, collectors live %d, cache hit %.1f%%, "
                         "replay %d steps, wm v%d (updates %d, lag mean %.1f)",
                         c.accepted, rate, c.accepted_steps, dict(c.rejected) or 0, live, 100 * self.cache_hit_rate(),
                         self.replay.steps, self.wm_version, int(self.trainer_stats.get("updates", 0)), lag.get("mean", 0.0))
                for cid, series in self.episode_returns.items():
                    recent = [r for _, r in series[-10:]]
                    log.info("returns %s (%s): last %d episodes mean %.2f", cid, self._policy_of(cid), len(recent),
                             sum(recent) / len(recent))
                if writer is not None:
                    t = round(now - self._t0)
                    writer.add_scalar("ingest/segments_per_s", rate, t)
                    writer.add_scalar("ingest/steps_per_s", step_rate, t)
                    writer.add_scalar("lag/wm_mean", float(lag.get("mean", 0.0)), t)
                    writer.add_scalar("weights/wm_version", self.wm_version, t)
                    for cid, series in self.episode_returns.items():
                        recent = [r for _, r in series[-10:]]
                        writer.add_scalar(f"returns/{cid}", sum(recent) / len(recent), t)
                    writer.flush()
        finally:
            if writer is not None:
                writer.close()

    # ------------------------------------------------------------------ results

    def cache_hit_rate(self) -> float:
        hits = sum(s.get("cache_hits", 0.0) for s in self.collector_stats.values())
        misses = sum(s.get("cache_misses", 0.0) for s in self.collector_stats.values())
        return hits / (hits + misses) if hits + misses else 0.0

    def summary(self) -> dict[str, object]:
        c = self.counters
        elapsed = (self._t_end or time.monotonic()) - self._t0
        per_collector = {}
        for p in self.peers.values():
            per_collector[p.hello.collector_id] = {"game": p.hello.game, "accepted": p.accepted, "rejected": p.rejected,
                                                   "steps": p.steps, "lost": p.lost}
        return {
            "segments_accepted": c.accepted,
            "segments_rejected": sum(c.rejected.values()),
            "rejected_by_reason": dict(c.rejected),
            "connections_rejected": dict(c.connections_rejected),
            "env_steps": c.accepted_steps,
            "segments_per_s": round(c.accepted / elapsed, 3) if elapsed > 0 else 0.0,
            "steps_per_s": round(c.accepted_steps / elapsed, 3) if elapsed > 0 else 0.0,
            "valid_action_cache_hit_rate": round(self.cache_hit_rate(), 4),
            "elapsed_s": round(elapsed, 2),
            "collectors_seen": len(per_collector),
            "collectors_lost": c.collectors_lost,
            "per_game": {g: dict(v) for g, v in sorted(c.per_game.items())},
            "per_collector": per_collector,
            "collector_stats": self.collector_stats,
            "lag": {"wm": _lag_summary(c.lag_wm), "llm": _lag_summary(c.lag_llm)},
            "replay": self.replay.summary(),
            "megabytes": round(c.accepted_bytes / 1e6, 3),
            "wm_updates": int(self.trainer_stats.get("updates", 0)),
            "wm_version_published": self.wm_version,
            "min_collector_wm_version": self.min_collector_version("wm"),
            "llm_version_published": self.llm_version,
            "min_collector_llm_version": self.min_collector_version("llm"),
            "trainer": self.trainer_stats,
            "trainer_dropped": c.trainer_dropped,
            "episode_returns": self.returns_summary(),
            "ppo_episodes_fired": self.ppo.fired,
            "ppo_episodes_failed": self.ppo.failed,
            "ppo_episodes_ok": self.ppo.ok,
            "prompt_queue_size": len(self.prompts) if self.prompts is not None else 0,
            "ppo": {"runtime": self.ppo.runtime, "worker_restarts": self.ppo.worker_restarts,
                    "unsearched_steps": self.ppo.unsearched_steps, "last": self.ppo.last, "errors": self.ppo.errors,
                    "queue": self.prompts.summary() if self.prompts is not None else None},
        }

    def min_collector_version(self, model: str) -> int | None:
        """Lowest weights version any collector reported playing with (its last heartbeat)."""
        versions = [int(s[f"{model}_version"]) for s in self.collector_stats.values() if f"{model}_version" in s]
        return min(versions) if versions else None

    def returns_summary(self) -> dict[str, dict[str, object]]:
        out = {}
        for cid, series in sorted(self.episode_returns.items()):
            rets = [r for _, r in series]
            half = len(rets) // 2
            out[cid] = {"policy": self._policy_of(cid), "episodes": len(rets), "mean": round(sum(rets) / len(rets), 3),
                        "first_half_mean": round(sum(rets[:half]) / half, 3) if half else None,
                        "second_half_mean": round(sum(rets[half:]) / (len(rets) - half), 3),
                        "series": series[-200:]}
        return out

    def _policy_of(self, cid: str) -> str:
        ident = self.by_collector.get(cid)
        caps = self.peers[ident].hello.capabilities if ident in self.peers else ()
        return next((c.split(":", 1)[1] for c in caps if c.startswith("policy:")), "unknown")
