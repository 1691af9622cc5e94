"""ZeroMQ sockets under anyio: the segment stream with credits, notices and logs on PUB/SUB, CURVE.

Socket roles (zguide names):
- hub ROUTER  <- collector DEALER   segments up, welcome/credit/heartbeat/reject down
- hub PUB     -> collector SUB      weights notices (small; bulk bytes never ride PUB/SUB)
- hub XSUB    <- any role's PUB     log records in
- hub XPUB    -> monitor SUB        log records out (a proxy thread joins XSUB and XPUB)

One address names the hub: the ROUTER's ``tcp://host:P``; the others are P+1, P+2, P+3.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import anyio
import zmq
import zmq.asyncio
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from pzstream.stream import wire
from pzstream.stream.weights import BlobAssembler
from pzstream.stream.wire import Blob, Credit, Heartbeat, Hello, Log, Reject, Segment, Welcome, WireError

log = logging.getLogger("pzstream.transport")

# Rejections a collector cannot fix by reconnecting.
FATAL_REJECTS = frozenset({"bad_version", "collector_id_in_use", "unknown_kind", "bad_field"})


class SecurityError(RuntimeError):
    """Binding a network-visible address without CURVE, or missing key files."""


class SendAbandoned(RuntimeError):
    """Shutting down while the hub gives no credit: the segment is counted as unsent."""


class FatalReject(RuntimeError):
    """The hub refused this collector for a reason reconnecting cannot fix."""


# ---------------------------------------------------------------------------- addresses


@dataclass(frozen=True)
class Endpoints:
    segments: str
    weights: str
    logs_in: str
    logs_out: str


def endpoints_for(address: str) -> Endpoints:
    """Derive the four hub endpoints from its segment address (tcp port+k or ipc suffix)."""
    if address.startswith("tcp://"):
        host, _, port = address[len("tcp://"):].rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"address {address!r} must look like tcp://host:port")
        p = int(port)
        if not 0 < p <= 65532:
            raise ValueError(f"address {address!r}: port must leave room for +1..+3")
        return Endpoints(*(f"tcp://{host}:{p + k}" for k in range(4)))
    if address.startswith(("ipc://", "inproc://")):
        return Endpoints(address, address + ".weights", address + ".logs-in", address + ".logs-out")
    raise ValueError(f"address {address!r}: use tcp://host:port or ipc://path")


def is_loopback(address: str) -> bool:
    if address.startswith(("ipc://", "inproc://")):
        return True
    host = urlsplit(address).hostname or ""
    if host in ("localhost", "::1"):
        return True
    if host in ("*", "0.0.0.0", "::"):
        return False
    try:
        return socket.gethostbyname(host).startswith("127.")
    except OSError:
        return False


# ---------------------------------------------------------------------------- CURVE


@dataclass(frozen=True)
class CurveKeys:
    """Key files made by :func:`generate_keys`.

    ``hub.key``/``hub.key_secret`` belong to the hub; every client role uses
    ``client.key_secret`` and must find its public key in ``authorized/``.
    """

    directory: Path

    @property
    def authorized_dir(self) -> Path:
        return self.directory / "authorized"

    def _load(self, name: str, secret: bool) -> tuple[bytes, bytes | None]:
        path = self.directory / (name + (".key_secret" if secret else ".key"))
        if not path.exists():
            raise SecurityError(f"CURVE key file missing: {path} (make keys with: python launch.py --role keys --out {self.directory})")
        return zmq.auth.load_certificate(str(path))

    def make_server(self, sock: zmq.Socket) -> None:
        public, secret = self._load("hub", secret=True)
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True

    def make_client(self, sock: zmq.Socket) -> None:
        server_public, _ = self._load("hub", secret=False)
        public, secret = self._load("client", secret=True)
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_serverkey = server_public

    def start_authenticator(self, ctx: zmq.Context) -> ThreadAuthenticator:
        if not self.authorized_dir.is_dir():
            raise SecurityError(f"CURVE: no authorized client keys in {self.authorized_dir}")
        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve(domain="*", location=str(self.authorized_dir))
        return auth


def generate_keys(directory: str | os.PathLike[str], clients: tuple[str, ...] = ("client",)) -> Path:
    """Create hub and client key pairs; each client's public key is authorised on the hub."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / "authorized").mkdir(exist_ok=True)
    zmq.auth.create_certificates(str(out), "hub")
    for name in clients:
        public, _secret = zmq.auth.create_certificates(str(out), name)
        Path(public).replace(out / "authorized" / Path(public).name)
        # a client still needs its own public key next to the secret one
        (out / f"{name}.key").write_bytes((out / "authorized" / f"{name}.key").read_bytes())
    for p in out.glob("*.key_secret"):
        p.chmod(0o600)
    return out


def check_bind_security(address: str, curve: CurveKeys | None, allow_insecure: bool) -> None:
    if curve is None and not allow_insecure and not is_loopback(address):
        raise SecurityError(
            f"refusing to bind {address} without CURVE: set security.curve_dir (keys from "
            f"`python launch.py --role keys --out DIR`) or opt out with security.allow_insecure=true")


# ---------------------------------------------------------------------------- hub side


async def recv_batch(sock: zmq.asyncio.Socket, drain: zmq.Socket, cap: int = 256, copy: bool = True) -> list[list]:
    """Await one multipart message on ``sock``, then take what is already queued through ``drain``
    (a sync shadow of the same socket): far cheaper than awaiting each message. ``copy=False``
    gives ``zmq.Frame``s (no copy of the bytes; they can be forwarded without one either)."""
    batch = [await sock.recv_multipart(copy=copy)]
    while len(batch) < cap:
        try:
            batch.append(drain.recv_multipart(flags=zmq.NOBLOCK, copy=copy))
        except zmq.Again:
            break
    return batch


class HubRouter:
    """The hub's ROUTER: receives ``[identity, frame]`` in batches, answers peers by identity."""

    def __init__(self, ctx: zmq.asyncio.Context, address: str, curve: CurveKeys | None, max_message_bytes: int):
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting collector keeps its identity
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        # libzmq drops bigger frames at the socket and closes that connection; +64 KiB leaves room
        # so the codec sees (and counts) moderately oversized frames itself.
        self.sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes + 65536)
        self.sock.setsockopt(zmq.RCVHWM, 10_000)
        if curve is not None:
            curve.make_server(self.sock)
        self.monitor = self.sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        self.sock.bind(address)
        self._drain = zmq.Socket.shadow(self.sock.underlying)  # sync view for NOBLOCK draining

    async def recv_batch(self, cap: int = 256, copy: bool = True) -> list[list]:
        return await recv_batch(self.sock, self._drain, cap, copy)

    async def send(self, identity: bytes, data: bytes) -> None:
        try:
            await self.sock.send_multipart([identity, data], flags=zmq.NOBLOCK)
        except zmq.Again:  # peer's pipe full: it is not reading, the heartbeat timeout will catch it
            pass

    async def handshake_failures(self) -> str:
        """Await the next failed handshake (a peer without the CURVE key); returns its reason."""
        from zmq.utils.monitor import parse_monitor_message

        while True:
            event = parse_monitor_message(await self.monitor.recv_multipart())
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                return "curve_auth"
            return "handshake_failed"

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(0)
        self.sock.close(0)


class NoticePublisher:
    """PUB for small notices (weights versions). Late joiners catch the next periodic repeat."""

    def __init__(self, ctx: zmq.asyncio.Context, address: str, curve: CurveKeys | None):
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.make_server(self.sock)
        self.sock.bind(address)

    async def publish(self, msg: wire.Weights) -> None:
        await self.sock.send(wire.encode(msg))

    def close(self) -> None:
        self.sock.close(0)


class LogRelay:
    """XSUB (roles publish in) joined to XPUB (monitors subscribe) by a zmq proxy thread."""

    def __init__(self, ctx: zmq.Context, logs_in: str, logs_out: str, curve: CurveKeys | None):
        self.ctx = ctx
        self.xsub = ctx.socket(zmq.XSUB)
        self.xpub = ctx.socket(zmq.XPUB)
        for s in (self.xsub, self.xpub):
            s.setsockopt(zmq.LINGER, 0)
            if curve is not None:
                curve.make_server(s)
        self.xsub.bind(logs_in)
        self.xpub.bind(logs_out)
        self._control_addr = f"inproc://log-relay-{id(self)}"
        self._control = ctx.socket(zmq.PAIR)
        self._control.bind(self._control_addr)
        self._thread = threading.Thread(target=self._run, name="log-relay", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        control = self.ctx.socket(zmq.PAIR)
        control.connect(self._control_addr)
        try:
            zmq.proxy_steerable(self.xsub, self.xpub, None, control)
        except zmq.ContextTerminated:
            pass
        finally:
            control.close(0)

    def close(self) -> None:
        self._control.send(b"TERMINATE")
        self._thread.join(timeout=2)
        for s in (self._control, self.xsub, self.xpub):
            s.close(0)


# ---------------------------------------------------------------------------- log stream


class ZmqLogHandler(logging.Handler):
    """Publishes log records as ``[topic, Log]`` where topic is ``role/sender``.

    A sync PUB of its own (logging calls come from any thread); PUB never blocks:
    at its high-water mark records are dropped, which is acceptable for logs only.
    """

    def __init__(self, address: str, role: str, sender: str, curve: CurveKeys | None = None):
        super().__init__()
        self.role, self.sender = role, sender
        self.topic = f"{role}/{sender}".encode()
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 500)
        self._sock.setsockopt(zmq.SNDHWM, 10_000)
        if curve is not None:
            curve.make_client(self._sock)
        self._sock.connect(address)
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = Log(role=self.role, sender=self.sender, level=record.levelno, time=record.created,
                      logger=record.name, message=self.format(record))
            data = wire.encode(msg)
            with self._lock:
                self._sock.send_multipart([self.topic, data], flags=zmq.NOBLOCK)
        except zmq.Again:
            pass
        except Exception:  # a logging handler must never raise into the caller
            self.handleError(record)

    def close(self) -> None:
        with self._lock:
            self._sock.close()
            self._ctx.term()
        super().close()


class LogSubscriber:
    """SUB on the hub's log feed, filtered by topic prefix (role) on the wire."""

    def __init__(self, ctx: zmq.asyncio.Context, address: str, roles: tuple[str, ...] = (), curve: CurveKeys | None = None):
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.make_client(self.sock)
        for r in roles or ("",):
            self.sock.setsockopt(zmq.SUBSCRIBE, r.encode())
        self.sock.connect(address)

    async def recv(self) -> Log:
        while True:
            frames = await self.sock.recv_multipart()
            if len(frames) != 2:
                continue
            try:
                msg = wire.decode(frames[1])
            except WireError:
                continue
            if isinstance(msg, Log):
                return msg

    def close(self) -> None:
        self.sock.close(0)


class NoticeSubscriber:
    def __init__(self, ctx: zmq.asyncio.Context, address: str, curve: CurveKeys | None = None):
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.make_client(self.sock)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(address)

    async def recv(self) -> wire.Weights:
        while True:
            try:
                msg = wire.decode(await self.sock.recv())
            except WireError as e:
                log.warning("ignoring bad weights notice: %s", e)
                continue
            if isinstance(msg, wire.Weights):
                return msg

    def close(self) -> None:
        self.sock.close(0)


# ---------------------------------------------------------------------------- collector side


@dataclass
class SenderStats:
    sent: int = 0
    resent: int = 0
    acked: int = 0
    reconnects: int = 0
    rejects: int = 0
    blocked_s: float = 0.0
    send_again: int = 0
    welcomes: int = 0


class SegmentSender:
    """Collector end of the segment stream: DEALER with a sliding credit window.

    The hub's ``Credit(n, ack)`` allows segments with ``seq <= ack + n``. Unacknowledged
    segments stay here (at most ``n`` of them) and are resent after a reconnect, so a slow
    hub blocks the collector instead of growing its memory, and a hub restart loses nothing.
    """

    def __init__(self, ctx: zmq.asyncio.Context, address: str, hello: Hello, heartbeat_s: float,
                 timeout_heartbeats: int = 3, curve: CurveKeys | None = None,
                 stats_fn: Callable[[], dict[str, float]] = dict):
        self.ctx, self.address, self.hello, self.curve = ctx, address, hello, curve
        self.heartbeat_s = heartbeat_s
        self.timeout_s = heartbeat_s * timeout_heartbeats
        self.stats_fn = stats_fn
        self.identity = os.urandom(8).hex().encode()
        self.stats = SenderStats()
        self.welcome: Welcome | None = None
        self.window = 0
        self.ack = -1
        self.next_seq = 0
        self.unacked: OrderedDict[int, bytes] = OrderedDict()
        self.fatal: FatalReject | None = None
        self._changed = anyio.Event()
        self._sock: zmq.asyncio.Socket | None = None
        self._last_heard = 0.0
        self._blocked_since: float | None = None
        self._give_up_at: float | None = None
        self._blob: Blob | None = None

    # -- public -------------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        return len(self.unacked)

    async def send(self, segment: Segment) -> int:
        """Send one segment; waits while the window is full or the hub is away. Returns its seq."""
        self._blocked_since = time.monotonic()
        try:
            while not (self.welcome is not None and self.next_seq <= self.ack + self.window):
                if self.fatal:
                    raise self.fatal
                if self._give_up_at is not None and time.monotonic() > self._give_up_at:
                    raise SendAbandoned(f"no credit from the hub at {self.address}; segment not sent")
                await self._wait_changed()
        finally:
            self.stats.blocked_s += time.monotonic() - self._blocked_since
            self._blocked_since = None
        seq = self.next_seq
        self.next_seq += 1
        data = wire.encode(replace(segment, header=replace(segment.header, seq=seq)))
        self.unacked[seq] = data
        await self._send(data)
        self.stats.sent += 1
        return seq

    def give_up(self, after_s: float) -> None:
        """Shutting down: a send still waiting for credit after ``after_s`` raises SendAbandoned."""
        self._give_up_at = time.monotonic() + after_s
        self._notify()

    async def fetch(self, notice: wire.Weights, chunk_timeout_s: float = 10.0) -> bytes:
        """Fetch the bytes a weights notice announces, chunk by chunk; raises WeightsError or TimeoutError."""
        asm = BlobAssembler(notice)
        while not asm.done:
            req = asm.next_request()
            self._blob = None
            await self._send(wire.encode(req))
            with anyio.fail_after(chunk_timeout_s):
                while self._blob is None or self._blob.offset != req.offset:
                    await self._wait_changed()
            asm.add(self._blob)
        return asm.result()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every sent segment is acknowledged (or timeout)."""
        with anyio.move_on_after(timeout_s):
            while self.unacked:
                if self.fatal:
                    raise self.fatal
                await self._wait_changed()
        return not self.unacked

    async def run(self, stop: anyio.Event) -> None:
        """Keep the conversation alive: hello, credits, heartbeats, reconnects."""
        self._connect()
        last_beat = 0.0
        try:
            while not stop.is_set() and self.fatal is None:
                msg_data = None
                with anyio.move_on_after(min(self.heartbeat_s, 0.25)):
                    msg_data = await self._sock.recv()  # type: ignore[union-attr]
                now = time.monotonic()
                if msg_data is not None:
                    self._last_heard = now
                    await self._handle(msg_data)
                elif now - self._last_heard > (self.timeout_s if self.stats.welcomes else max(self.timeout_s, 5.0)):
                    log.warning("hub %s silent for %.1fs; reconnecting", self.address, now - self._last_heard)
                    self.stats.reconnects += 1
                    self._connect()
                if now - last_beat >= self.heartbeat_s:
                    last_beat = now
                    await self.send_heartbeat()
        finally:
            self._notify()

    async def send_heartbeat(self, closing: bool = False) -> None:
        blocked_now = time.monotonic() - self._blocked_since if self._blocked_since is not None else 0.0
        stats = {**self.stats_fn(), "inflight": float(self.inflight), "blocked_s": self.stats.blocked_s + blocked_now,
                 "blocked": float(self._blocked_since is not None),
                 "sent": float(self.stats.sent), "reconnects": float(self.stats.reconnects),
                 **({"closing": 1.0} if closing else {})}
        await self._send(wire.encode(Heartbeat(sender=self.hello.collector_id, time=time.time(), stats=stats)))

    def close(self, linger_ms: int = 0) -> None:
        if self._sock is not None:
            self._sock.close(linger_ms)
            self._sock = None

    # -- internals ----------------------------------------------------------------------

    def _connect(self) -> None:
        self.close()
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, self.identity)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        # Only the credit window bounds what we queue; this HWM is a backstop above it.
        sock.setsockopt(zmq.SNDHWM, 100_000)
        if self.curve is not None:
            self.curve.make_client(sock)
        sock.connect(self.address)
        self._sock = sock
        self.welcome = None
        self._last_heard = time.monotonic()
        sock.send(wire.encode(self.hello))

    async def _send(self, data: bytes) -> None:
        # Never block: a DEALER with no live pipe (hub down, handshake refused) would wait forever.
        # A segment that could not be queued stays in ``unacked`` and is resent after the next welcome.
        if self._sock is not None:
            try:
                await self._sock.send(data, flags=zmq.NOBLOCK)
            except zmq.Again:
                self.stats.send_again += 1

    async def _handle(self, data: bytes) -> None:
        try:
            msg = wire.decode(data)
        except WireError as e:
            log.warning("undecodable message from hub: %s", e)
            return
        if isinstance(msg, Credit):
            self._on_credit(msg)
        elif isinstance(msg, Blob):
            self._blob = msg
        elif isinstance(msg, Welcome):
            first = self.welcome is None and self.stats.reconnects == 0 and self.next_seq == 0
            self.welcome, self.window = msg, msg.window
            self.stats.welcomes += 1
            log.info("hub %s welcomed %s (window %d)%s", msg.hub_id, self.hello.collector_id, msg.window,
                     "" if first else f"; resending {len(self.unacked)} unacknowledged segments")
            for seq, seg_bytes in list(self.unacked.items()):
                await self._send(seg_bytes)
                self.stats.resent += 1
        elif isinstance(msg, Reject):
            self.stats.rejects += 1
            if msg.reason in FATAL_REJECTS:
                self.fatal = FatalReject(f"hub rejected collector {self.hello.collector_id}: {msg.reason}: {msg.detail}")
                log.error("%s", self.fatal)
            elif msg.reason == "hello_required":
                if self.welcome is not None:  # only once: later rejects are for segments queued before
                    log.info("hub does not know us (restarted?); saying hello again")
                    self.stats.reconnects += 1
                    self._connect()
            else:
                log.warning("hub rejected a message: %s: %s", msg.reason, msg.detail)
        self._notify()

    def _on_credit(self, msg: Credit) -> None:
        self.window = msg.n
        if msg.ack > self.ack:
            self.ack = msg.ack
        while self.unacked and next(iter(self.unacked)) <= self.ack:
            self.unacked.popitem(last=False)
            self.stats.acked += 1

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _wait_changed(self) -> None:
        ev = self._changed
        with anyio.move_on_after(0.5):
            await ev.wait()


def free_base_port(host: str = "127.0.0.1") -> int:
    """A port P with P..P+3 free on ``host`` (the four hub sockets), for tests and benchmarks."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((host, 0))
            p = s.getsockname()[1]
        if p > 65000:
            continue
        try:
            for k in range(1, 4):
                with socket.socket() as s:
                    s.bind((host, p + k))
            return p
        except OSError:
            continue
    raise RuntimeError(f"no four consecutive free ports on {host}")
