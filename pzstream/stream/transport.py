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
from collections import Counter, OrderedDict
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
from pzstream.stream.liveness import LoopClock, excused
from pzstream.stream.text import printable
from pzstream.stream.weights import DEFAULT_MAX_WEIGHTS_BYTES, BlobAssembler
from pzstream.stream.wire import Blob, Credit, Fetch, Heartbeat, Hello, Log, Reject, Segment, Welcome, WireError

log = logging.getLogger("pzstream.transport")

# Rejections a collector cannot fix by reconnecting.
FATAL_REJECTS = frozenset({"bad_version", "unknown_kind", "bad_field"})
#: How long a collector whose id the hub still holds for another connection keeps saying hello
#: (each heartbeat) before it gives up: a collector restarted at once after a crash finds its old
#: connection live until the hub declares it lost (``hub.peer_timeout_heartbeats``).
ID_IN_USE_WAIT_S = 60.0

#: The hub's own log records: its process publishes them here (inproc, in ``zmq.Context.instance()``),
#: never through the network intake, so no peer can speak as the hub.
HUB_OWN_LOGS = "inproc://pzstream-hub-own-logs"
#: The role of the hub's own records; the log intake drops peers' records that claim it.
HUB_LOG_ROLE = "learner"
#: Every name a monitor shows the hub's own records under (``learner/hub``): a peer's record whose role
#: is one of them, in any case or followed by ``/...``, is refused.
HUB_LOG_NAMES = frozenset({HUB_LOG_ROLE, "hub"})


def claims_hub_role(role: str) -> bool:
    """Whether a record's ``role`` would show as the hub's in a monitor: ``learner``, ``hub``, ``Hub``,
    `` hub``, ``learner/hub`` (the role is printed before a ``/``, so its first part is what reads as one)."""
    return role.split("/", 1)[0].strip().lower() in HUB_LOG_NAMES


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


def frames_nbytes(frames: list) -> int:
    return sum(len(f) for f in frames)


async def recv_batch(sock: zmq.asyncio.Socket, drain: zmq.Socket, cap: int = 256, copy: bool = True,
                     max_bytes: int | None = None) -> list[list]:
    """Await one multipart message on ``sock``, then take what is already queued through ``drain``
    (a sync shadow of the same socket): far cheaper than awaiting each message. ``copy=False``
    gives ``zmq.Frame``s (no copy of the bytes; they can be forwarded without one either).
    The batch stops at ``cap`` messages or once it holds ``max_bytes``: everything in it stays
    alive until the whole batch is handled, so a flood of large frames must not all be taken at once."""
    batch = [await sock.recv_multipart(copy=copy)]
    held = frames_nbytes(batch[0])
    while len(batch) < cap and (max_bytes is None or held < max_bytes):
        try:
            batch.append(drain.recv_multipart(flags=zmq.NOBLOCK, copy=copy))
        except zmq.Again:
            break
        held += frames_nbytes(batch[-1])
    return batch


#: ZMTP protocol errors that mean the two ends' security does not match: CURVE on one end only
#: (mechanism mismatch), or a wrong or forged key (the CURVE boxes do not open).
SECURITY_MISMATCH = frozenset({
    zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH, zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC,
    zmq.PROTOCOL_ERROR_ZMTP_KEY_EXCHANGE, zmq.PROTOCOL_ERROR_ZMTP_MALFORMED_COMMAND_HELLO,
    zmq.PROTOCOL_ERROR_ZMTP_MALFORMED_COMMAND_INITIATE})


def handshake_rejection(event: int, value: int) -> str | None:
    """The ``connections_rejected`` reason for a failed-handshake monitor event, or None when no
    security refused the peer: ``curve_auth`` (the authenticator denied its key), ``handshake_failed``
    (its security does not match the hub's, ``SECURITY_MISMATCH``). A peer that hangs up mid-handshake
    (``EVENT_HANDSHAKE_FAILED_NO_DETAIL``: a collector's connection abandoned when it reconnected
    while the hub was stopped, issue 14; a port scan) is no refusal, nor is another ZMTP error."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return "curve_auth"
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value in SECURITY_MISMATCH:
        return "handshake_failed"
    return None


class HubRouter:
    """The hub's ROUTER: receives ``[identity, frame]`` in batches, answers peers by identity.

    Memory it holds for peers is bounded by configuration (docs/wire.md, "Caps"): per connection
    at most ``recv_queue_bytes`` of received frames (RCVHWM in frames of the largest size), one
    batch at most as much, and at most ``max_pending`` messages queued to a peer that does not
    read them (SNDHWM; with ROUTER_MANDATORY a full queue is seen, and what is dropped counted in
    ``caps``).
    """

    def __init__(self, ctx: zmq.asyncio.Context, address: str, curve: CurveKeys | None, max_message_bytes: int,
                 recv_queue_bytes: int = 64 * 1024 * 1024, max_pending: int = 16, caps: Counter[str] | None = None):
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting collector keeps its identity
        # a full queue to a peer raises zmq.Again (counted) instead of dropping unseen
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # libzmq drops bigger frames at the socket and closes that connection; +64 KiB leaves room
        # so the codec sees (and counts) moderately oversized frames itself.
        self.sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes + 65536)
        self.recv_queue_bytes = recv_queue_bytes
        self.sock.setsockopt(zmq.RCVHWM, max(2, recv_queue_bytes // max_message_bytes))
        self.sock.setsockopt(zmq.SNDHWM, max_pending)
        self.caps: Counter[str] = caps if caps is not None else Counter()
        if curve is not None:
            curve.make_server(self.sock)
        self.monitor = self.sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        self.sock.bind(address)
        self._drain = zmq.Socket.shadow(self.sock.underlying)  # sync view for NOBLOCK draining

    async def recv_batch(self, cap: int = 256, copy: bool = True) -> list[list]:
        batch = await recv_batch(self.sock, self._drain, cap, copy, self.recv_queue_bytes)
        if len(batch) < cap and sum(frames_nbytes(f) for f in batch) >= self.recv_queue_bytes:
            self.caps["recv_batches_cut"] += 1
        return batch

    async def send(self, identity: bytes, data: bytes) -> bool:
        """Queue ``data`` for a peer without waiting; False when it was dropped (the peer is gone,
        or its queue is full: it does not read, and the heartbeat timeout will catch it)."""
        try:
            await self.sock.send_multipart([identity, data], flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            self.caps["sends_dropped"] += 1
            return False
        except zmq.ZMQError as e:
            if e.errno == zmq.EHOSTUNREACH:  # no such connection (any more)
                return False
            raise

    async def handshake_failures(self) -> str:
        """Await the next handshake the hub's security refused; returns its reason
        (``handshake_rejection``). Other failed handshakes are no refusal and pass unseen."""
        from zmq.utils.monitor import parse_monitor_message

        while True:
            event = parse_monitor_message(await self.monitor.recv_multipart())
            reason = handshake_rejection(event["event"], event["value"])
            if reason is not None:
                return reason
            log.debug("handshake ended without a refusal (event %#x, value %#x)", event["event"], event["value"])

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


def peer_of(frame: zmq.Frame) -> str:
    """Who sent a received frame, as the connection says (never as the peer claims): its address,
    and with CURVE the start of its public key."""
    try:
        who = frame.get("Peer-Address") or "local"
    except zmq.ZMQError:
        who = "local"
    try:
        user = frame.get("User-Id")
    except zmq.ZMQError:
        user = ""
    return f"{who}#{user[:8]}" if user else who


def attributed_log(frames: list, max_bytes: int) -> tuple[list[bytes] | None, str]:
    """A log record from the network intake, checked and re-addressed: ``([topic, data], "")``
    with the sender suffixed by the connection's own address (``c1@10.0.0.5``), or ``(None,
    why)`` with why a ``CAPS`` name: too large, no log record, or one claiming the hub's role."""
    if frames_nbytes(frames) > max_bytes:
        return None, "log_records_too_large"
    if len(frames) != 2:
        return None, "log_records_malformed"
    try:
        rec = wire.decode(frames[1].bytes if isinstance(frames[1], zmq.Frame) else frames[1])
    except WireError:
        return None, "log_records_malformed"
    if not isinstance(rec, Log):
        return None, "log_records_malformed"
    if claims_hub_role(rec.role):
        return None, "log_records_spoofed"
    peer = peer_of(frames[1]) if isinstance(frames[1], zmq.Frame) else "local"
    role, sender = printable(rec.role, 32), f"{printable(rec.sender)}@{peer}"
    out = replace(rec, role=role, sender=sender)
    return [f"{role}/{sender}".encode(), wire.encode(out)], ""


class LogRelay:
    """Log records in (XSUB: every role publishes) and out (XPUB: monitors subscribe), relayed by a
    thread that checks each one: records over ``max_log_bytes`` or that are no log record are
    dropped, a peer's record is attributed to the connection it came on (its sender gains
    ``@address``), and only the hub's own process (``HUB_OWN_LOGS``) speaks as the hub
    (``HUB_LOG_ROLE``). What it drops is counted in ``caps``. Queues hold at most
    ``queue_bytes`` of records per connection in and per monitor out.
    """

    def __init__(self, ctx: zmq.Context, logs_in: str, logs_out: str, curve: CurveKeys | None,
                 max_log_bytes: int = 64 * 1024, queue_bytes: int = 16 * 1024 * 1024, caps: Counter[str] | None = None):
        self.ctx = ctx
        self.max_log_bytes = max_log_bytes
        self.caps: Counter[str] = caps if caps is not None else Counter()
        hwm = max(16, queue_bytes // max_log_bytes)
        self.xsub = ctx.socket(zmq.XSUB)
        self.xpub = ctx.socket(zmq.XPUB)
        for s in (self.xsub, self.xpub):
            s.setsockopt(zmq.LINGER, 0)
            if curve is not None:
                curve.make_server(s)
        self.xsub.setsockopt(zmq.RCVHWM, hwm)
        # far bigger records are dropped by libzmq with their connection; moderately bigger ones are counted here
        self.xsub.setsockopt(zmq.MAXMSGSIZE, 4 * max_log_bytes)
        self.xpub.setsockopt(zmq.SNDHWM, hwm)
        self.xsub.bind(logs_in)
        self.xpub.bind(logs_out)
        # the hub's own records, from this process only (one hub per process binds it)
        self.own = zmq.Context.instance().socket(zmq.SUB)
        self.own.setsockopt(zmq.LINGER, 0)
        self.own.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            self.own.bind(HUB_OWN_LOGS)
        except zmq.ZMQError as e:  # another hub of this process relays them
            log.debug("hub's own log records are relayed elsewhere: %s", e)
        self._control_addr = f"inproc://log-relay-{id(self)}"
        self._control = ctx.socket(zmq.PAIR)
        self._control.bind(self._control_addr)
        self._thread = threading.Thread(target=self._run, name="log-relay", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        control = self.ctx.socket(zmq.PAIR)
        control.connect(self._control_addr)
        poller = zmq.Poller()
        for s in (self.xsub, self.xpub, self.own, control):
            poller.register(s, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll())
                if control in ready:
                    return
                if self.xpub in ready:  # monitors' (un)subscriptions go upstream, as a proxy's do
                    self.xsub.send_multipart(self.xpub.recv_multipart())
                if self.own in ready:
                    self._publish(self.own.recv_multipart())
                if self.xsub in ready:
                    for _ in range(256):
                        try:
                            frames = self.xsub.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        out, why = attributed_log(frames, self.max_log_bytes)
                        if out is None:
                            self.caps[why] += 1
                        else:
                            self._publish(out)
        except zmq.ContextTerminated:
            pass
        finally:
            control.close(0)

    def _publish(self, frames: list) -> None:
        try:
            self.xpub.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            pass

    def close(self) -> None:
        self._control.send(b"TERMINATE")
        self._thread.join(timeout=2)
        for s in (self._control, self.xsub, self.xpub, self.own):
            s.close(0)


# ---------------------------------------------------------------------------- log stream


class ZmqLogHandler(logging.Handler):
    """Publishes log records as ``[topic, Log]`` where topic is ``role/sender``.

    A sync PUB of its own (logging calls come from any thread); PUB never blocks:
    at its high-water mark records are dropped, which is acceptable for logs only.
    """

    def __init__(self, address: str, role: str, sender: str, curve: CurveKeys | None = None,
                 ctx: zmq.Context | None = None):
        super().__init__()
        self.role, self.sender = role, sender
        self.topic = f"{role}/{sender}".encode()
        self._own_ctx = ctx is None  # an inproc address needs the context its reader binds in
        self._ctx = zmq.Context() if ctx is None else ctx
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
            if self._own_ctx:
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
    """SUB on the hub's weights notices, newest first: a notice already queued behind a newer one of
    the same model is dropped (counted in ``superseded``). A hub resuming after a stall publishes the
    versions its trainer made meanwhile in a burst; only the newest of them is worth fetching, the
    others are gone from its store by then (issue 14)."""

    def __init__(self, ctx: zmq.asyncio.Context, address: str, curve: CurveKeys | None = None):
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.make_client(self.sock)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(address)
        self._drain = zmq.Socket.shadow(self.sock.underlying)  # sync view for NOBLOCK draining
        self._pending: dict[str, wire.Weights] = {}  # model -> the newest notice queued, not yet returned
        self.superseded = 0

    async def recv(self) -> wire.Weights:
        """The next notice: the newest of those queued for one model."""
        while not self._pending:
            self._keep(await self.sock.recv())
            for _ in range(1024):  # what is queued now (SUB's receive queue holds about this many)
                try:
                    self._keep(self._drain.recv(flags=zmq.NOBLOCK))
                except zmq.Again:
                    break
        return self._pending.pop(next(iter(self._pending)))

    def _keep(self, data: bytes) -> None:
        try:
            msg = wire.decode(data)
        except WireError as e:
            log.warning("ignoring bad weights notice: %s", e)
            return
        if not isinstance(msg, wire.Weights):
            return
        held = self._pending.get(msg.model)
        if held is None or msg.version > held.version:
            self.superseded += held is not None
            self._pending[msg.model] = msg

    def close(self) -> None:
        self.sock.close(0)


# ---------------------------------------------------------------------------- collector side


def answers(blob: Blob | None, req: Fetch) -> bool:
    """Whether ``blob`` is the hub's reply to ``req`` (same model, version and offset)."""
    return blob is not None and (blob.model, blob.version, blob.offset) == (req.model, req.version, req.offset)


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
                 timeout_heartbeats: int = 5, curve: CurveKeys | None = None,
                 stats_fn: Callable[[], dict[str, float]] = dict, id_in_use_wait_s: float = ID_IN_USE_WAIT_S):
        # the session proves "the same process" when a later connection says hello (wire.Hello)
        hello = hello if hello.session is not None else replace(hello, session=os.urandom(16).hex())
        self.ctx, self.address, self.hello, self.curve = ctx, address, hello, curve
        self.id_in_use_wait_s = id_in_use_wait_s
        self._in_use_since: float | None = None
        self._rehello_at: float | None = None
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
        self._connection = 0  # counts the sockets made: what was sent on an earlier one may be lost
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

    async def fetch(self, notice: wire.Weights, chunk_timeout_s: float = 10.0,
                    max_bytes: int = DEFAULT_MAX_WEIGHTS_BYTES) -> bytes:
        """Fetch the bytes a weights notice announces, chunk by chunk, each checked as it comes;
        raises WeightsError (a notice over ``max_bytes`` before any fetch; WeightsGone when the hub
        no longer has that version) or TimeoutError (no chunk within ``chunk_timeout_s``).

        A request lost with a connection (the hub silent, then a reconnect) is asked again once
        the hub welcomes this collector back; a chunk answering another request (a late reply to
        an earlier fetch, or one asked twice) is not taken for the one awaited."""
        asm = BlobAssembler(notice, max_bytes)
        while not asm.done:
            req = asm.next_request()
            self._blob = None
            asked_on = self._connection
            await self._send(wire.encode(req))
            with anyio.fail_after(chunk_timeout_s):
                while not answers(self._blob, req):
                    if self._connection != asked_on and self.welcome is not None:  # welcomed on a new connection
                        asked_on = self._connection
                        await self._send(wire.encode(req))
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
        """Keep the conversation alive: hello, credits, heartbeats, reconnects.

        The hub's silence is judged on this loop's running clock: time it stood still (this process
        stopped or starved of CPU) is excused (``liveness``), so a collector does not reconnect just
        because it was not running to read what the hub sent."""
        self._connect()
        last_beat = 0.0
        tick = min(self.heartbeat_s, 0.25)
        clock = LoopClock(tick)
        try:
            while not stop.is_set() and self.fatal is None:
                msg_data = None
                with anyio.move_on_after(tick):
                    msg_data = await self._sock.recv()  # type: ignore[union-attr]
                now = time.monotonic()
                self._last_heard = excused(self._last_heard, clock.tick(now), now)
                if msg_data is not None:
                    self._last_heard = now
                    await self._handle(msg_data)
                elif now - self._last_heard > (self.timeout_s if self.stats.welcomes else max(self.timeout_s, 5.0)):
                    log.warning("hub %s silent for %.1fs; reconnecting", self.address, now - self._last_heard)
                    self.stats.reconnects += 1
                    self._connect()
                if self._rehello_at is not None and now >= self._rehello_at:
                    self._rehello_at = None
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
        self._connection += 1
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
            self._in_use_since = None
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
            elif msg.reason == "collector_id_in_use":
                self._on_id_in_use(msg)
            elif msg.reason == "hello_required":
                if self.welcome is not None:  # only once: later rejects are for segments queued before
                    log.info("hub does not know us (restarted?); saying hello again")
                    self.stats.reconnects += 1
                    self._connect()
            else:
                log.warning("hub rejected a message: %s: %s", msg.reason, msg.detail)
        self._notify()

    def _on_id_in_use(self, msg: Reject) -> None:
        """Our id is held by a connection the hub still thinks live (ours, before a crash and a quick
        restart): say hello again each heartbeat until the hub declares it lost, up to a limit."""
        now = time.monotonic()
        self._in_use_since = self._in_use_since or now
        if now - self._in_use_since > self.id_in_use_wait_s:
            self.fatal = FatalReject(f"hub rejected collector {self.hello.collector_id}: collector_id_in_use for "
                                     f"{now - self._in_use_since:.0f}s: {msg.detail}")
            log.error("%s", self.fatal)
            return
        log.warning("collector id %s still in use at the hub (%s); saying hello again in %.1fs",
                    self.hello.collector_id, msg.detail, self.heartbeat_s)
        self._rehello_at = now + self.heartbeat_s

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
