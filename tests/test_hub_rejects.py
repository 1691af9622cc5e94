"""Every kind of bad input is rejected with its reason, counted, logged once, and the hub keeps serving."""
from __future__ import annotations

import logging
import time

import msgpack
import numpy as np
import pytest
import zmq
from support import HubThread, dealer, hub_config, recv_kind

from pzstream.stream import wire
from pzstream.stream.transport import CurveKeys, generate_keys

CTX = zmq.Context.instance()


def say_hello(sock: zmq.Socket, cid: str, capabilities: tuple[str, ...] = ("reject_seq",)) -> wire.Welcome:
    sock.send(wire.encode(wire.Hello(collector_id=cid, game="tw-default", host="test", pid=1, capabilities=capabilities)))
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


def bad_inputs(cid: str, seq0: int) -> dict[str, tuple[bytes, int | None]]:
    """Frames that must be refused, each with the seq its Reject names (None: not a readable segment).
    Each segment-shaped one carries a fresh seq from ``seq0`` on, so each frees its own credit."""
    seqs = iter(range(seq0, seq0 + 100))

    def seg(steps: int = 3) -> tuple[bytes, int]:
        seq = next(seqs)
        return wire.encode(segment(cid, seq, steps)), seq

    hello_map = msgpack.unpackb(wire.encode(wire.Hello(collector_id="x", game="g", host="h", pid=1)), raw=False)
    out: dict[str, tuple[bytes, int | None]] = {"malformed": (b"\xc1\xc1 not msgpack", None)}
    good, seq = seg()
    out["malformed/truncated"] = (good[: len(good) // 2], seq)  # the header precedes the columns: still readable
    out["unknown_kind"] = (msgpack.packb({"v": wire.PROTOCOL_VERSION, "kind": "teleport"}), None)
    out["bad_version"] = (msgpack.packb({**hello_map, "v": 99}), None)
    good, seq = seg()
    out["bad_dtype"] = (tamper(good, "reward", ext_with(code=42)), seq)
    good, seq = seg()
    out["shape_exceeds_frame"] = (tamper(good, "reward", ext_with(dims=(1000,))), seq)
    good, seq = seg()
    out["array_too_large"] = (tamper(good, "reward", ext_with(dims=(1 << 30,))), seq)
    out["too_large"] = (msgpack.packb({"v": 1, "kind": "segment", "pad": b"x" * 100_000}), None)
    short, seq = seg()
    out["column_length"] = (tamper(short, "reward", lambda e: msgpack.ExtType(
        e.code, e.data[:4] + np.array([2], "<u4").tobytes() + e.data[8:16])), seq)
    return out


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
        inputs = bad_inputs("bad", 0)
        for name, (data, seq) in inputs.items():
            reason = name.split("/")[0]
            bad.send(data)
            rej = recv_kind(bad, wire.Reject)
            assert (rej.reason, rej.seq) == (reason, seq), (name, rej)
            if seq is not None:  # answered: its credit is freed
                assert recv_kind(bad, wire.Credit).ack == seq, name
        n = max(seq for _, seq in inputs.values() if seq is not None) + 1

        # a duplicate and a replayed seq
        bad.send(wire.encode(segment("bad", n)))
        assert recv_kind(bad, wire.Credit).ack == n
        bad.send(wire.encode(segment("bad", n)))
        assert recv_kind(bad, wire.Reject).reason == "duplicate_seq"
        bad.send(wire.encode(segment("bad", n + 1)))
        bad.send(wire.encode(segment("bad", n)))
        assert recv_kind(bad, wire.Reject).reason == "duplicate_seq"

        # a collector that ignores its credit window
        bad.send(wire.encode(segment("bad", 500)))
        rej = recv_kind(bad, wire.Reject)
        assert (rej.reason, rej.seq) == ("no_credit", 500)

        # a collector id claimed by another live connection
        thief = dealer(address)
        thief.send(wire.encode(wire.Hello(collector_id="good", game="tw-default", host="evil", pid=2)))
        assert recv_kind(thief, wire.Reject).reason == "collector_id_in_use"
        # a segment from a connection that never said hello
        stranger = dealer(address)
        stranger.send(wire.encode(segment("stranger", 0)))
        assert recv_kind(stranger, wire.Reject).reason == "hello_required"
        # a segment that claims another collector's id
        bad.send(wire.encode(segment("good", n + 2)))
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


def test_a_run_of_rejected_segments_frees_their_credit(address):
    """Issue 10, defect 9: a whole window of refused segments must not leave the collector without credit."""
    window = 4
    hub = HubThread(hub_config(address, f"hub.credit_window={window}")).start()
    try:
        s = dealer(address)
        assert say_hello(s, "c").window == window
        s.send(wire.encode(segment("c", 0)))
        assert recv_kind(s, wire.Credit).ack == 0  # credit up to seq 0 + window
        for seq in range(1, window + 1):  # a whole window refused: a damaged column
            s.send(tamper(wire.encode(segment("c", seq)), "reward", ext_with(code=42)))
            rej = recv_kind(s, wire.Reject)
            assert (rej.reason, rej.seq) == ("bad_dtype", seq)
            assert recv_kind(s, wire.Credit).ack == seq
        s.send(wire.encode(segment("c", window + 1)))  # beyond that window: allowed only if their credit was freed
        assert recv_kind(s, wire.Credit).ack == window + 1
        s.close(0)
    finally:
        summary = hub.stop()
    assert summary["rejected_by_reason"] == {"bad_dtype": window}
    assert summary["segments_accepted"] == 2


def played_with(seg: wire.Segment, wm: int = 0, llm: int = 0) -> wire.Segment:
    from dataclasses import replace

    return replace(seg, header=replace(seg.header, wm_version=wm, llm_version=llm))


def test_versions_the_hub_never_published_are_refused(address, tmp_path):
    """Issue 10, defect 8: a segment's self-reported weights versions must lie in 0..published."""
    hub = HubThread(hub_config(address), run_dir=tmp_path).start()
    try:
        assert hub.call(hub.hub.publish, "wm", b"weights") == 1
        s = dealer(address)
        say_hello(s, "liar")
        for seq, (wm, llm) in enumerate([(10**9, 0), (-5, 0), (0, 3), (0, -1), (2, 0)]):
            s.send(wire.encode(played_with(segment("liar", seq), wm, llm)))
            rej = recv_kind(s, wire.Reject)
            # a negative version may already fail the wire's own range check; either way it is refused
            expected = {"version_out_of_range", "bad_value"} if min(wm, llm) < 0 else {"version_out_of_range"}
            assert rej.reason in expected and rej.seq == seq, (wm, llm, rej)
            assert recv_kind(s, wire.Credit).ack == seq
        s.send(wire.encode(played_with(segment("liar", 5), wm=1)))
        assert recv_kind(s, wire.Credit).ack == 5
        s.close(0)
    finally:
        summary = hub.stop()
    assert sum(summary["rejected_by_reason"].values()) == 5
    assert summary["rejected_by_reason"]["version_out_of_range"] >= 3
    assert summary["segments_accepted"] == 1
    assert summary["lag"]["wm"] == {"n": 1, "mean": 0.0, "p50": 0, "p90": 0, "max": 0}
    assert summary["lag"]["llm"]["mean"] == 0.0


def test_a_collector_whose_segments_are_all_refused_keeps_sending(address):
    """Issue 10, defect 9 through the real collector end: SegmentSender gets its credit back from
    refused segments (here: played with a wm version the hub never published)."""
    import anyio
    import zmq.asyncio

    from pzstream.stream.transport import SegmentSender

    window = 3
    hub = HubThread(hub_config(address, f"hub.credit_window={window}")).start()

    async def play() -> tuple[int, bool]:
        ctx = zmq.asyncio.Context()
        hello = wire.Hello(collector_id="ahead", game="tw-default", host="test", pid=7)
        sender = SegmentSender(ctx, address, hello, heartbeat_s=0.2)
        stop = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(sender.run, stop)
                with anyio.fail_after(20):
                    for i in range(4 * window):
                        await sender.send(played_with(segment("ahead", 0), wm=7))
                    drained = await sender.drain(10)
                stop.set()
        finally:
            sender.close()
            ctx.destroy(linger=0)
        return sender.stats.sent, drained

    try:
        sent, drained = anyio.run(play)
    finally:
        summary = hub.stop()
    assert sent == 4 * window and drained
    assert summary["rejected_by_reason"] == {"version_out_of_range": 4 * window}


def test_peer_text_is_escaped_in_hub_logs(address, caplog):
    """Issue 10, defect 8: a peer's own text (ANSI escapes, NUL, newlines, 10 KB) never reaches the
    terminal raw. The wire refuses such collector ids; the hub escapes what it still logs (game, host)."""
    caplog.set_level(logging.INFO, logger="pzstream.learner")
    nasty = "\x1b[2J\x1b[31mowned\x00\nfake log line" + "x" * 10_000
    hub = HubThread(hub_config(address)).start()
    try:
        s = dealer(address)
        s.send(wire.encode(wire.Hello(collector_id="c", game=nasty, host=nasty, pid=1)))
        recv_kind(s, wire.Welcome)
        s.close(0)
    finally:
        hub.stop()
    joined = [r.getMessage() for r in caplog.records if "joined" in r.getMessage()]
    assert len(joined) == 1 and joined[0].count("owned") == 2, joined
    line = joined[0]
    assert "\x1b" not in line and "\x00" not in line and "\n" not in line, repr(line)
    assert "\\x1b[2J" in line and "(10029 chars)" in line and len(line) < 400, repr(line[:300])


@pytest.fixture
def keys(tmp_path):
    return CurveKeys(generate_keys(tmp_path / "keys"))


def test_segments_left_on_a_handed_over_connection_are_counted_as_leftovers_not_rejections(address):
    """After a reconnect libzmq hands what was still on the old connection to the hub under a routing
    id it makes up (5 bytes, first 0): a segment there naming a collector live on a connection with its
    own routing id is a handover leftover, answered hello_required (nowhere, for a real one) and not
    counted as a rejection; the same from any other unknown connection is a rejection."""
    hub = HubThread(hub_config(address)).start()

    def peer(routing_id: bytes | None) -> zmq.Socket:
        s = CTX.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        if routing_id is not None:
            s.setsockopt(zmq.ROUTING_ID, routing_id)
        s.connect(address)
        return s

    socks = []
    try:
        live, idless = peer(b"live-collector-1"), peer(None)  # libzmq makes up the id-less one's routing id
        socks += [live, idless]
        say_hello(live, "c1")
        say_hello(idless, "c2")
        live.send(wire.encode(segment("c1", 0)))
        assert recv_kind(live, wire.Credit).ack == 0

        leftover = peer(b"\x00\x00\x00\x00\x2a")  # the form of an id libzmq makes up
        stranger = peer(b"not-the-owner")
        socks += [leftover, stranger]
        for seq in (0, 1):
            leftover.send(wire.encode(segment("c1", seq)))
            assert recv_kind(leftover, wire.Reject).reason == "hello_required"
        # rejections: a made-up id naming a collector nobody holds, or one on a made-up id itself (no
        # handover happens there), and an id of the usual form naming the live collector
        for sock, cid in ((leftover, "nobody"), (leftover, "c2"), (stranger, "c1")):
            sock.send(wire.encode(segment(cid, 1)))
            assert recv_kind(sock, wire.Reject).reason == "hello_required", cid
        # the live connection is untouched: its next segment is accepted and acked
        live.send(wire.encode(segment("c1", 1)))
        assert recv_kind(live, wire.Credit).ack == 1
    finally:
        for s in socks:
            s.close(0)
        summary = hub.stop()
    assert summary["caps"].get("handover_leftovers") == 2, summary["caps"]
    assert summary["rejected_by_reason"] == {"hello_required": 3}, summary["rejected_by_reason"]
    assert summary["segments_accepted"] == 2


def test_curve_admits_key_holders_and_counts_peers_without_the_key(address, keys, tmp_path):
    # the member sends no heartbeats: a peer timeout of 20 s (not 2) outlasts the wait for the mismatch below
    hub = HubThread(hub_config(address, f"security.curve_dir={keys.directory}", "hub.peer_timeout_heartbeats=100"),
                    keys).start()
    try:
        member = dealer(address, keys)
        assert say_hello(member, "member").window == 32
        member.send(wire.encode(segment("member", 0)))
        assert recv_kind(member, wire.Credit).ack == 0

        def plain_peer() -> zmq.Socket:
            s = dealer(address)  # no CURVE at all
            s.send(wire.encode(wire.Hello(collector_id="plain", game="g", host="h", pid=3)))
            return s

        def mismatch_counted(h) -> bool:
            return h.status().connections_rejected.get("handshake_failed", 0) >= 1

        plains = [plain_peer()]
        other = CurveKeys(generate_keys(tmp_path / "other"))  # a key pair the hub never authorised
        forged = CTX.socket(zmq.DEALER)
        forged.setsockopt(zmq.LINGER, 0)
        pub, _ = zmq.auth.load_certificate(str(keys.directory / "hub.key"))
        opub, osec = zmq.auth.load_certificate(str(other.directory / "client.key_secret"))
        forged.curve_publickey, forged.curve_secretkey, forged.curve_serverkey = opub, osec, pub
        forged.connect(address)
        forged.send(wire.encode(wire.Hello(collector_id="forged", game="g", host="h", pid=4)))
        assert not plains[0].poll(1000) and not forged.poll(500), "peers without the key get nothing back"
        hub.wait_for(lambda h: h.status().connections_rejected.get("curve_auth", 0) >= 1,
                     timeout=10, what="the forged key counted")
        # A peer without CURVE sees the mismatch in the hub's greeting too and may hang up first: then
        # the hub sees a hang-up (no refusal, by design) and the peer does not always come back. On a
        # loaded machine that race goes the peer's way now and then (CI), so fresh plain peers try
        # until the hub has seen one mismatch itself; each is refused, none gets an answer.
        for _ in range(20):
            if mismatch_counted(hub):
                break
            time.sleep(0.5)
            plains.append(plain_peer())
        hub.wait_for(mismatch_counted, timeout=10, what="a peer without CURVE counted")
        assert not any(p.poll(0) for p in plains), "peers without CURVE get nothing back"
        member.send(wire.encode(segment("member", 1)))
        assert recv_kind(member, wire.Credit).ack == 1
        for s in (member, forged, *plains):
            s.close(0)
    finally:
        summary = hub.stop()
    assert summary["per_collector"].keys() == {"member"}


def test_segments_played_with_too_old_weights_are_dropped_and_counted(address, tmp_path):
    from dataclasses import replace

    hub = HubThread(hub_config(address, "trainer.max_wm_lag=2"), run_dir=tmp_path).start()
    try:
        for _ in range(5):
            hub.call(hub.hub.publish, "wm", b"weights")
        assert hub.status().wm_version == 5
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


def test_reject_names_its_seq_only_to_collectors_that_read_it(address):
    """A collector written before `reject.seq` existed (no `reject_seq` capability) gets rejects without it."""
    hub = HubThread(hub_config(address)).start()
    try:
        old, new = dealer(address), dealer(address)
        say_hello(old, "old", capabilities=())
        say_hello(new, "new")
        for sock, cid in ((old, "old"), (new, "new")):
            sock.send(wire.encode(segment(cid, 0)))
            assert recv_kind(sock, wire.Credit).ack == 0
            sock.send(wire.encode(segment(cid, 0)))  # a duplicate: rejected
        assert recv_kind(old, wire.Reject).seq is None
        assert recv_kind(new, wire.Reject).seq == 0
        old.close(0)
        new.close(0)
    finally:
        hub.stop()


def test_a_reader_fetches_weights_but_is_no_collector(address, tmp_path):
    """A prior or search server says hello as a reader: it may fetch and heartbeat, it sends no
    segments, and it does not count as a collector (or drag the collectors' minimum version)."""
    hub = HubThread(hub_config(address), run_dir=tmp_path).start()
    try:
        assert hub.call(hub.hub.publish, "llm", b"llm weights") == 1
        r = dealer(address)
        r.send(wire.encode(wire.Hello(collector_id="prior-x", game="", host="h", pid=2, role="reader")))
        recv_kind(r, wire.Welcome)
        r.send(wire.encode(wire.Fetch(model="llm", version=1, offset=0, length=1 << 20)))
        assert recv_kind(r, wire.Blob).data == b"llm weights"
        r.send(wire.encode(wire.Heartbeat(sender="prior-x", time=1.0, stats={"llm_version": 0.0})))
        r.send(wire.encode(segment("prior-x", 0)))
        assert recv_kind(r, wire.Reject).reason == "unexpected_kind"
        c = dealer(address)
        say_hello(c, "c0")
        c.send(wire.encode(wire.Heartbeat(sender="c0", time=1.0, stats={"llm_version": 1.0})))
        hub.wait_for(lambda h: "prior-x" in h.status().readers and "c0" in h.status().collectors
                     and h.status().collectors["c0"].stats, timeout=10, what="reader and collector registered")
        status = hub.status()
        assert set(status.collectors) == {"c0"} and status.min_collector_version("llm") == 1
        r.close(0)
        c.close(0)
    finally:
        summary = hub.stop()
    assert set(summary["per_collector"]) == {"c0"} and set(summary["readers"]) == {"prior-x"}
    assert summary["collectors_seen"] == 1 and summary["segments_accepted"] == 0
