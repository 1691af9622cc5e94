"""Every kind of bad input is rejected with its reason, counted, logged once, and the hub keeps serving."""
from __future__ import annotations

import logging
import time

import msgpack
import numpy as np
import pytest
import zmq

from pzstream.stream import wire
from pzstream.stream.transport import CurveKeys, generate_keys
from support import HubThread, hub_config

CTX = zmq.Context.instance()


def dealer(address: str, curve: CurveKeys | None = None) -> zmq.Socket:
    s = CTX.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        curve.make_client(s)
    s.connect(address)
    return s


def recv_kind(sock: zmq.Socket, kind: type, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.poll(100):
            msg = wire.decode(sock.recv())
            if isinstance(msg, kind):
                return msg
    raise AssertionError(f"no {kind.__name__} within {timeout}s")


def say_hello(sock: zmq.Socket, cid: str) -> wire.Welcome:
    sock.send(wire.encode(wire.Hello(collector_id=cid, game="tw-default", host="test", pid=1)))
    return recv_kind(sock, wire.Welcome)


def segment(cid: str, seq: int, steps: int = 3) -> wire.Segment:
    header = wire.SegmentHeader(game="tw-default", collector_id=cid, seq=seq, episode_id=0, step0=0,
                                wm_version=0, llm_version=0, t_start=1.0, t_end=2.0)
    return wire.make_segment(header, [f"room {t}" for t in range(steps)], [["north", "south", "look"]] * steps,
                             [t % 3 for t in range(steps)], [0.0] * steps, [0] * steps, [False] * steps)


def tamper(data: bytes, column: str, fn) -> bytes:
    """Re-pack an encoded segment with one column's raw ext payload replaced."""
    msg = msgpack.unpackb(data, raw=False)
    msg["columns"][column] = fn(msg["columns"][column])
    return msgpack.packb(msg, use_bin_type=True)


def ext_with(code: int | None = None, dims: tuple[int, ...] | None = None):
    def fn(ext: msgpack.ExtType) -> msgpack.ExtType:
        payload = bytearray(ext.data)
        ndim = payload[1]
        body = payload[8 * (ndim // 2 + 1):]
        dtype_code = payload[0] if code is None else code
        shape = dims if dims is not None else tuple(np.frombuffer(bytes(payload[4:4 + 4 * ndim]), "<u4"))
        head = bytes([dtype_code, len(shape), 0, 0]) + np.array(shape, "<u4").tobytes()
        head += bytes(-len(head) % 8)
        return msgpack.ExtType(ext.code, head + bytes(body))
    return fn


def bad_inputs() -> dict[str, bytes]:
    good = wire.encode(segment("good", 7))
    hello_map = msgpack.unpackb(wire.encode(wire.Hello(collector_id="x", game="g", host="h", pid=1)), raw=False)
    short = segment("good", 8)
    return {
        "malformed": b"\xc1\xc1 not msgpack",
        "malformed/truncated": good[: len(good) // 2],
        "unknown_kind": msgpack.packb({"v": wire.PROTOCOL_VERSION, "kind": "teleport"}),
        "bad_version": msgpack.packb({**hello_map, "v": 99}),
        "bad_dtype": tamper(good, "reward", ext_with(code=42)),
        "shape_exceeds_frame": tamper(good, "reward", ext_with(dims=(1000,))),
        "array_too_large": tamper(good, "reward", ext_with(dims=(1 << 30,))),
        "too_large": msgpack.packb({"v": 1, "kind": "segment", "pad": b"x" * 100_000}),
        "column_length": tamper(wire.encode(short), "reward",
                                lambda e: msgpack.ExtType(e.code, e.data[:4] + np.array([2], "<u4").tobytes() + e.data[8:16])),
    }


def test_every_bad_input_is_rejected_counted_logged_once_and_the_hub_keeps_serving(address, caplog):
    caplog.set_level(logging.WARNING, logger="pzstream.learner")
    hub = HubThread(hub_config(address, "wire.max_message_bytes=65536")).start()
    try:
        good = dealer(address)
        assert say_hello(good, "good").window == 32
        good.send(wire.encode(segment("good", 0)))
        assert recv_kind(good, wire.Credit).ack == 0

        bad = dealer(address)
        say_hello(bad, "bad")
        for name, data in bad_inputs().items():
            reason = name.split("/")[0]
            bad.send(data)
            rej = recv_kind(bad, wire.Reject)
            assert rej.reason == reason, (name, rej)

        # a duplicate and a replayed seq
        bad.send(wire.encode(segment("bad", 0)))
        assert recv_kind(bad, wire.Credit).ack == 0
        bad.send(wire.encode(segment("bad", 0)))
        assert recv_kind(bad, wire.Reject).reason == "duplicate_seq"
        bad.send(wire.encode(segment("bad", 1)))
        bad.send(wire.encode(segment("bad", 0)))
        assert recv_kind(bad, wire.Reject).reason == "duplicate_seq"

        # a collector that ignores its credit window
        bad.send(wire.encode(segment("bad", 500)))
        assert recv_kind(bad, wire.Reject).reason == "no_credit"

        # a collector id claimed by another live connection
        thief = dealer(address)
        thief.send(wire.encode(wire.Hello(collector_id="good", game="tw-default", host="evil", pid=2)))
        assert recv_kind(thief, wire.Reject).reason == "collector_id_in_use"
        # a segment from a connection that never said hello
        stranger = dealer(address)
        stranger.send(wire.encode(segment("stranger", 0)))
        assert recv_kind(stranger, wire.Reject).reason == "hello_required"
        # a segment that claims another collector's id
        bad.send(wire.encode(segment("good", 5)))
        assert recv_kind(bad, wire.Reject).reason == "collector_id_mismatch"

        # the well-behaved collector is still served
        good.send(wire.encode(segment("good", 1)))
        assert recv_kind(good, wire.Credit).ack == 1
        for s in (good, bad, thief, stranger):
            s.close(0)
    finally:
        summary = hub.stop()

    rejected = summary["rejected_by_reason"]
    assert rejected["malformed"] == 2
    for reason in ("unknown_kind", "bad_version", "bad_dtype", "shape_exceeds_frame", "array_too_large",
                   "too_large", "column_length", "collector_id_in_use", "hello_required", "collector_id_mismatch",
                   "no_credit"):
        assert rejected[reason] == 1, reason
    assert rejected["duplicate_seq"] == 2
    assert summary["per_collector"]["good"]["accepted"] == 2
    assert summary["per_collector"]["bad"]["accepted"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "rejected (" in r.getMessage()]
    assert sum("(malformed)" in w for w in warnings) == 1, "logged once per kind, not per message"
    assert sum("(duplicate_seq)" in w for w in warnings) == 1


@pytest.fixture
def keys(tmp_path):
    return CurveKeys(generate_keys(tmp_path / "keys"))


def test_curve_admits_key_holders_and_counts_peers_without_the_key(address, keys, tmp_path):
    hub = HubThread(hub_config(address, f"security.curve_dir={keys.directory}"), keys).start()
    try:
        member = dealer(address, keys)
        assert say_hello(member, "member").window == 32
        member.send(wire.encode(segment("member", 0)))
        assert recv_kind(member, wire.Credit).ack == 0

        plain = dealer(address)  # no CURVE at all
        plain.send(wire.encode(wire.Hello(collector_id="plain", game="g", host="h", pid=3)))
        other = CurveKeys(generate_keys(tmp_path / "other"))  # a key pair the hub never authorised
        forged = CTX.socket(zmq.DEALER)
        forged.setsockopt(zmq.LINGER, 0)
        pub, _ = zmq.auth.load_certificate(str(keys.directory / "hub.key"))
        opub, osec = zmq.auth.load_certificate(str(other.directory / "client.key_secret"))
        forged.curve_publickey, forged.curve_secretkey, forged.curve_serverkey = opub, osec, pub
        forged.connect(address)
        forged.send(wire.encode(wire.Hello(collector_id="forged", game="g", host="h", pid=4)))
        assert not plain.poll(1000) and not forged.poll(500), "peers without the key get nothing back"
        hub.wait_for(lambda h: h.counters.connections_rejected["curve_auth"] >= 1 and h.counters.connections_rejected["handshake_failed"] >= 1,
                     timeout=10, what="handshake failures counted")
        member.send(wire.encode(segment("member", 1)))
        assert recv_kind(member, wire.Credit).ack == 1
        for s in (member, plain, forged):
            s.close(0)
    finally:
        summary = hub.stop()
    assert summary["per_collector"].keys() == {"member"}


def test_segments_played_with_too_old_weights_are_dropped_and_counted(address):
    from dataclasses import replace

    hub = HubThread(hub_config(address, "trainer.max_wm_lag=2")).start()
    try:
        hub.hub.wm_version = 5
        s = dealer(address)
        say_hello(s, "old")
        seg = segment("old", 0)
        s.send(wire.encode(replace(seg, header=replace(seg.header, wm_version=1))))  # lag 4 > 2
        assert recv_kind(s, wire.Reject).reason == "stale"
        assert recv_kind(s, wire.Credit).ack == 0  # dropped, but acknowledged: the collector moves on
        seg = segment("old", 1)
        s.send(wire.encode(replace(seg, header=replace(seg.header, wm_version=3))))  # lag 2: fine
        assert recv_kind(s, wire.Credit).ack == 1
        s.close(0)
    finally:
        summary = hub.stop()
    assert summary["rejected_by_reason"] == {"stale": 1}
    assert summary["segments_accepted"] == 1
    assert summary["lag"]["wm"]["max"] == 4
