"""What the central-inference servers share (``--role search`` and ``--role prior``).

A server binds a ROUTER (CURVE like the hub's when keys are given: only clients whose public key
is in the key directory's ``authorized/`` get through, as at the hub), takes every request already
waiting in one go, answers malformed ones with a ``Reject`` naming the reason (and keeps serving
the others), and follows the hub's weights as a ``role="reader"`` peer with the one weights client.
"""
from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Callable

import anyio
import zmq
import zmq.asyncio
from zmq.auth.thread import ThreadAuthenticator

from pzstream.config import Config
from pzstream.stream import wire
from pzstream.stream.transport import (
    CurveKeys,
    NoticeSubscriber,
    SegmentSender,
    endpoints_for,
    recv_batch,
)
from pzstream.stream.weights_client import WeightsClient


def score_request_problem(req: wire.ScoreRequest, max_roots: int, max_candidates: int,
                          max_candidates_per_root: int) -> str | None:
    """Why a prior server refuses a score request its codec accepted, or None: counts that do not
    match the candidates, more roots than ``max_roots``, more candidates than ``max_candidates``,
    or a root with more than ``max_candidates_per_root`` (a request's cost grows with its roots and
    candidates, not only with its bytes)."""
    if sum(req.counts) != len(req.candidates) or min(req.counts, default=0) <= 0:
        return "expected a score request with counts matching its candidates"
    if len(req.counts) > max_roots:
        return f"{len(req.counts)} roots > {max_roots} (llm.prior_max_roots)"
    if len(req.candidates) > max_candidates:
        return f"{len(req.candidates)} candidates > {max_candidates} (llm.prior_max_candidates)"
    if max(req.counts) > max_candidates_per_root:
        return f"a root with {max(req.counts)} candidates > {max_candidates_per_root} (wire.max_candidates_per_step)"
    return None


def client_socket(ctx: zmq.Context, address: str, curve: CurveKeys | None) -> zmq.Socket:
    """A collector's DEALER to a server (CURVE client where the server is one); dropped and made
    again after a timeout, so nothing queued for a dead server is resent to its successor."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        curve.make_client(sock)
    sock.connect(address)
    return sock


#: Received requests one connection may have queued at a server (with RCVHWM in requests of the largest size).
SERVER_QUEUE_BYTES = 64 * 1024 * 1024


class RequestRouter:
    """A server's ROUTER: ``requests()`` awaits the next burst and returns its well-formed requests
    of ``kind`` as (peer identity, message); the rest are rejected with a reason and counted.

    max_request_bytes: a larger request is refused (``too_large``, counted) before it is decoded
    (requests far larger are dropped by libzmq with their connection); queued requests per
    connection, and one burst, hold at most ``SERVER_QUEUE_BYTES``.
    curve: the server's keys; a ZAP authenticator on ``ctx`` then admits only the client keys in
    ``authorized/`` (CURVE alone encrypts but lets any key pair in). ``close`` stops it.
    """

    def __init__(self, ctx: zmq.asyncio.Context, address: str, curve: CurveKeys | None, kind: type,
                 limits: wire.WireLimits = wire.DEFAULT_LIMITS, max_request_bytes: int | None = None):
        self.max_request_bytes = min(max_request_bytes or limits.max_message_bytes, limits.max_message_bytes)
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting collector keeps its identity
        self.sock.setsockopt(zmq.MAXMSGSIZE, self.max_request_bytes + 65536)
        self.sock.setsockopt(zmq.RCVHWM, max(8, SERVER_QUEUE_BYTES // self.max_request_bytes))
        self.authenticator: ThreadAuthenticator | None = None
        try:
            if curve is not None:
                curve.make_server(self.sock)
                # before the bind: no connection is ever handshaken without the key check
                self.authenticator = curve.start_authenticator(zmq.Context.shadow(ctx.underlying))
            self.sock.bind(address)
        except BaseException:
            self.close()
            raise
        self._drain = zmq.Socket.shadow(self.sock.underlying)
        self.kind, self.limits = kind, limits
        self.rejected: Counter[str] = Counter()

    async def requests(self, check: Callable[[object], str | None] = lambda m: None) -> list[tuple[bytes, object]]:
        """``check(msg)``: None, or why a decoded request of the right kind is still refused."""
        out = []
        for frames in await recv_batch(self.sock, self._drain, max_bytes=SERVER_QUEUE_BYTES):
            ident = frames[0]
            if len(frames[-1]) > self.max_request_bytes:  # before decoding: its cost grows with its size
                await self.reject(ident, "too_large", f"request of {len(frames[-1])} bytes > {self.max_request_bytes}")
                continue
            try:
                msg = wire.decode(frames[-1], self.limits)
            except wire.WireError as e:
                await self.reject(ident, e.reason, e.detail)
                continue
            why = (f"expected a {self.kind.__name__}" if not isinstance(msg, self.kind) else check(msg))
            if why is not None:
                await self.reject(ident, "bad_value", why)
                continue
            out.append((ident, msg))
        return out

    async def reject(self, ident: bytes, reason: str, detail: str, request_id: int | None = None) -> None:
        self.rejected[reason] += 1
        await self.send(ident, wire.Reject(reason=reason, detail=detail[:300], seq=request_id))

    async def send(self, ident: bytes, msg: object) -> None:
        try:
            await self.sock.send_multipart([ident, wire.encode(msg)], flags=zmq.NOBLOCK)  # type: ignore[arg-type]
        except zmq.Again:  # the peer is not reading; it will time out and fall back
            pass

    def close(self) -> None:
        self.sock.close(0)
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None


async def follow_hub(ctx: zmq.asyncio.Context, cfg: Config, hub_address: str, name: str, weights: WeightsClient,
                     stats_fn: Callable[[], dict[str, float]], curve: CurveKeys | None,
                     stop: anyio.Event) -> None:
    """Connect to the hub as a weights reader (hello role "reader") and install what it publishes until ``stop``."""
    ep = endpoints_for(hub_address)
    hello = wire.Hello(collector_id=f"{name}-{socket.gethostname()}-{os.getpid()}", game="",
                       host=socket.gethostname(), pid=os.getpid(), role="reader")
    weights.max_bytes = cfg.wire.max_weights_bytes  # what this server may be made to buffer
    sender = SegmentSender(ctx, ep.segments, hello, cfg.hub.heartbeat_s, curve=curve, stats_fn=stats_fn,
                           timeout_heartbeats=cfg.hub.peer_timeout_heartbeats)
    notices = NoticeSubscriber(ctx, ep.weights, curve)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sender.run, anyio.Event())
            tg.start_soon(weights.follow, notices.recv, sender.fetch)
            await stop.wait()
            tg.cancel_scope.cancel()
    finally:
        sender.close()
        notices.close()
