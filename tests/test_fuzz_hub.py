"""A bounded fuzz run against a real hub: thousands of malformed frames of many kinds, from raw
DEALER sockets, interleaved with the segments of a properly behaving collector.

The hub must stay up, accept exactly the valid segments (each once), and count every refused
frame under its reason. The expected reason of a frame from a connection that never said hello
is what the codec says about it (`wire.decode` with the hub's own limits), or the hub's own
reason for what the codec accepts (`hello_required`, `unexpected_kind`, `bad_framing`). A
connection that did say hello sends valid-looking segments with bad ids and seqs one at a time,
and each answer is checked against the credit rules of docs/wire.md as it comes.
"""
from __future__ import annotations

import math
import random
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import msgpack
import numpy as np
import zmq
import zmq.asyncio
from support import HubThread, dealer, hub_config

from pzstream.stream import wire
from pzstream.stream.transport import SegmentSender
from pzstream.stream.wire import WireError, WireLimits

CTX = zmq.Context.instance()
MAX_FRAME = 65536  # wire.max_message_bytes of the hub under test: oversized frames stay cheap
WINDOW = 32  # the hub's default credit window
GAME = "tw-default"

Frame = bytes | list[bytes]  # one frame, or a multipart message


# ---------------------------------------------------------------- valid messages


def make_segment(rng: random.Random, cid: str, seq: int, **header: Any) -> wire.Segment:
    steps = rng.randint(1, 6)
    counts = [rng.randint(1, 5) for _ in range(steps)]
    fields = dict(game=GAME, collector_id=cid, seq=seq, episode_id=rng.randrange(1000), step0=rng.randrange(1000),
                  wm_version=0, llm_version=0, t_start=1.7e9, t_end=1.7e9 + 1.0)
    fields.update(header)
    visits = []
    for k in counts:
        w = [rng.random() + 0.01 for _ in range(k)]
        visits.append([x / sum(w) for x in w])
    return wire.make_segment(
        wire.SegmentHeader(**fields),
        [f"room {rng.random()}" for _ in range(steps)],
        [[f"act {t}.{i}" for i in range(k)] for t, k in enumerate(counts)],
        [rng.randrange(k) for k in counts], [rng.uniform(-1, 1) for _ in range(steps)],
        [rng.randrange(100) for _ in range(steps)], [rng.random() < 0.2 for _ in range(steps)],
        visits=visits, root_values=[rng.choice([math.nan, rng.uniform(-1, 1)]) for _ in range(steps)])


def random_message(rng: random.Random) -> wire.Message:
    """A valid message of any kind (collector ids never that of a live collector)."""
    text = lambda: "".join(rng.choice("abcxyz ☃é") for _ in range(rng.randint(0, 12)))  # noqa: E731
    cid = f"x{rng.randrange(10**6)}"
    kinds = [
        lambda: make_segment(rng, cid, rng.randrange(100)),
        lambda: wire.Hello(collector_id=cid, game=text(), host=text(), pid=rng.randrange(10**5),
                           capabilities=tuple(text() for _ in range(rng.randint(0, 3)))),
        lambda: wire.Welcome(hub_id=text(), window=rng.randrange(64), wm_version=1, llm_version=2, heartbeat_s=0.5),
        lambda: wire.Reject(reason=text(), detail=text(), seq=rng.choice([None, 3])),
        lambda: wire.Credit(n=rng.randrange(64), ack=rng.randrange(-1, 100)),
        lambda: wire.Heartbeat(sender=text(), time=time.time(), stats={text(): rng.random() for _ in range(3)}),
        lambda: wire.Weights(model="wm", version=rng.randrange(9), uri=text(), sha256="ab" * 32, nbytes=10),
        lambda: wire.Fetch(model="llm", version=rng.randrange(9), offset=0, length=1 + rng.randrange(1 << 20)),
        lambda: wire.Blob(model="wm", version=1, offset=0, total=3, sha256="00", data=rng.randbytes(3)),
        lambda: wire.ScoreRequest(request_id=1, prompts=(text(),), candidates=(text(), text()), counts=(2,)),
        lambda: wire.ScoreReply(request_id=1, llm_version=0, logprior=(-0.5, -1.0)),
        lambda: wire.SearchRequest(collector_id=cid, request_id=1, episode_id=2, reset=True, observation=text(),
                                   candidates=(text(),), last_action="", last_reward=0.0, history_observations=(),
                                   history_actions=(), history_rewards=()),
        lambda: wire.SearchReply(request_id=1, action_index=0, visits=(1.0,), root_value=0.0, prior=(), wm_version=0,
                                 llm_version=0, batch=1),
        lambda: wire.Log(role="collector", sender=cid, level=20, time=time.time(), logger="x", message=text()),
    ]
    return rng.choice(kinds)()


# ---------------------------------------------------------------- malformed frames


def tree(data: bytes) -> dict:
    return msgpack.unpackb(data, raw=False)


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def wild(rng: random.Random) -> Any:
    """A value of some msgpack type, mostly the wrong one for the field it lands in."""
    return rng.choice([
        None, True, False, -1, 2**40, 2**64 - 1, -(2**63), 0.5, math.nan, math.inf, "", "x" * rng.randrange(50),
        b"\x00\x01", [1, "a"], {"k": 1}, {}, [], msgpack.ExtType(rng.randrange(128), rng.randbytes(rng.randrange(20))),
    ])


def a_field_path(t: dict, rng: random.Random) -> tuple[dict, str]:
    """A random field of a message map: its parent map and key."""
    parent = t
    if t.get("kind") == "segment" and rng.random() < 0.8:
        parent = t[rng.choice(["header", "columns"])]
    return parent, rng.choice(list(parent))


def array_payload(rng: random.Random, ext: msgpack.ExtType) -> bytes:
    """A column's array ext payload with its header made to lie in one of the documented ways."""
    data = bytearray(ext.data)
    how = rng.randrange(6)
    if how == 0:  # a dtype code outside the whitelist, or whitelisted but not the column's
        data[0] = rng.choice([0, 10, 42, 255, rng.randrange(1, 10)])
    elif how == 1:  # ndim over 4, or a non-1-d shape
        data[1] = rng.choice([0, 2, 3, 5, 200])
    elif how == 2:  # non-zero padding
        data[rng.choice([2, 3])] = rng.randrange(1, 256)
    elif how == 3:  # a shape bigger than the payload, or bigger than any array may be
        data[4:8] = struct.pack("<I", rng.choice([len(data), 1 << 20, (1 << 32) - 1]))
    elif how == 4:  # payload cut short or overlong
        return bytes(data[:rng.randrange(len(data))]) if rng.random() < 0.5 else bytes(data) + rng.randbytes(4)
    else:  # a bool byte other than 0/1, or a non-finite float
        if data[0] == 1 and len(data) > 8:
            data[8] = rng.randrange(2, 256)
        elif data[0] == 8 and len(data) >= 12:
            data[8:12] = struct.pack("<f", rng.choice([math.inf, -math.inf, math.nan]))
    return bytes(data)


class Mutator:
    """Malformed frames of many kinds; ``frame()`` returns one with the name of its kind."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.kinds = [name for name in dir(self) if name.startswith("k_")]

    def frame(self) -> tuple[str, Frame]:
        name = self.rng.choice(self.kinds)
        return name[2:], getattr(self, name)()

    def valid(self) -> bytes:
        return wire.encode(random_message(self.rng))

    def valid_segment(self) -> bytes:
        return wire.encode(make_segment(self.rng, f"x{self.rng.randrange(100)}", self.rng.randrange(100)))

    # -- kinds
    def k_random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.randrange(300))

    def k_empty(self) -> bytes:
        return b""

    def k_random_msgpack(self) -> bytes:
        return pack(self.rng.choice([[wild(self.rng), wild(self.rng)], wild(self.rng),
                                     {"v": 1, "kind": wild(self.rng)}, {"v": 1}, {}]))

    def k_truncated(self) -> bytes:
        data = self.valid()
        return data[:self.rng.randrange(len(data))]

    def k_trailing_bytes(self) -> bytes:
        return self.valid() + self.rng.randbytes(self.rng.randint(1, 8))

    def k_bit_flips(self) -> bytes:
        data = bytearray(self.valid())
        for _ in range(self.rng.randint(1, 8)):
            data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
        return bytes(data)

    def k_byte_edits(self) -> bytes:
        data = bytearray(self.valid())
        for _ in range(self.rng.randint(1, 4)):
            pos = self.rng.randrange(len(data) + 1)
            if self.rng.random() < 0.5:
                data[pos:pos] = self.rng.randbytes(self.rng.randint(1, 8))
            else:
                del data[pos:pos + self.rng.randint(1, 8)]
        return bytes(data)

    def k_wrong_version(self) -> bytes:
        t = tree(self.valid())
        t["v"] = self.rng.choice([0, 2, 99, -1, 2**64 - 1, True, 1.0, "1", None, [1]])
        return pack(t)

    def k_missing_version(self) -> bytes:
        t = tree(self.valid())
        del t["v"]
        return pack(t)

    def k_unknown_kind(self) -> bytes:
        t = tree(self.valid())
        t["kind"] = self.rng.choice(["", "teleport", "Segment", "hello ", 7, None, b"segment"])
        return pack(t)

    def k_wrong_typed_field(self) -> bytes:
        t = tree(self.valid())
        parent, key = a_field_path(t, self.rng)
        parent[key] = wild(self.rng)
        return pack(t)

    def k_missing_field(self) -> bytes:
        t = tree(self.valid())
        parent, key = a_field_path(t, self.rng)
        del parent[key]
        return pack(t)

    def k_extra_field(self) -> bytes:
        t = tree(self.valid())
        parent, _ = a_field_path(t, self.rng)
        parent[f"extra{self.rng.randrange(10)}"] = wild(self.rng)
        return pack(t)

    def k_non_str_key(self) -> bytes:
        t = tree(self.valid())
        t[self.rng.choice([1, b"n", 2.5])] = 1
        return pack(t)

    def k_oversized_frame(self) -> bytes:
        # over max_message_bytes, but under the socket's own cap (max + 64 KiB): the codec counts it
        size = MAX_FRAME + 1 + self.rng.randrange(60_000)
        return wire.encode(wire.Log(role="collector", sender="x", level=20, time=0.0, logger="l", message="x" * size))

    def k_oversized_map(self) -> bytes:
        stats = {str(i): i for i in range(4097 + self.rng.randrange(50))}  # over the 4096-entry map cap
        return wire.encode(wire.Heartbeat(sender="x", time=0.0, stats=stats))

    def k_deep_nesting(self) -> bytes:
        return b"\x91" * self.rng.randint(100, 5000) + b"\x00"

    def k_huge_declared_length(self) -> bytes:
        return self.rng.choice([b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff",
                                b"\xc6\xff\xff\xff\xff", b"\xc9\xff\xff\xff\xff\x01"]) + self.rng.randbytes(8)

    def k_damaged_column(self) -> bytes:
        t = tree(self.valid_segment())
        name = self.rng.choice(sorted(wire._ARRAY_COLUMNS))
        code = self.rng.choice([1, 1, 1, 2, 127])  # mostly the array ext type; sometimes another
        t["columns"][name] = msgpack.ExtType(code, array_payload(self.rng, t["columns"][name]))
        return pack(t)

    def k_column_as_plain_array(self) -> bytes:
        t = tree(self.valid_segment())
        name = self.rng.choice(sorted(wire._ARRAY_COLUMNS))
        t["columns"][name] = [0] * self.rng.randrange(5)
        return pack(t)

    def k_column_length(self) -> bytes:
        seg = make_segment(self.rng, "x1", 1)
        name = self.rng.choice(["observations", "action_text", "reward", "score", "done", "root_value", "visits"])
        value = getattr(seg, name)
        return wire.encode(replace(seg, **{name: value[:-1] if len(value) > 1 else value[:1] * 2}))

    def k_bad_values(self) -> bytes:
        seg = make_segment(self.rng, "x1", 1)
        rule = self.rng.randrange(4)
        if rule == 0:
            seg = replace(seg, action_index=seg.action_index + 50)
        elif rule == 1:
            seg = replace(seg, reward=np.full_like(seg.reward, self.rng.choice([math.inf, math.nan])))
        elif rule == 2:
            seg = replace(seg, visits=seg.visits * 3)
        else:
            seg = replace(seg, action_text=[t + "!" for t in seg.action_text])
        return wire.encode(seg)

    def k_segment_bad_ids(self) -> bytes:
        # valid-looking segments with bad ids and seqs (from a connection that never said hello)
        bad = self.rng.choice([
            {"collector_id": ""}, {"collector_id": "evil\x1b[2J"}, {"collector_id": "x" * 129},
            {"collector_id": "good"}, {"seq": -self.rng.randint(1, 10**6)}, {"seq": 2**63},
            {"step0": -1}, {"wm_version": 2**31}, {"llm_version": -1}, {"wm_version": 7},
        ])
        return wire.encode(make_segment(self.rng, "x1", bad.pop("seq", 0), **bad))

    def k_valid_from_a_stranger(self) -> bytes:
        return self.valid()

    def k_multipart(self) -> list[bytes]:
        parts = self.rng.randint(2, 4)
        return [self.valid() if self.rng.random() < 0.5 else self.rng.randbytes(10) for _ in range(parts)]


HELLO = "hello"  # what stranger_reason says of a valid hello, which the fuzzer does not send
LEFTOVER = "handover_leftovers"  # ... of a segment it counts among caps, not rejections


def stranger_reason(frame: Frame, limits: WireLimits, live: frozenset[str] = frozenset()) -> str | None:
    """What the hub counts for a frame from a connection that never said hello (None: nothing). The
    strangers set no routing id: libzmq makes theirs up, so a valid segment of theirs that names a
    collector in ``live`` (live on a connection that set its own routing id) looks to the hub like what
    that collector's earlier connection left behind at a handover (``peers.handover_leftover``)."""
    if isinstance(frame, list):
        return "bad_framing"
    try:
        msg = wire.decode(frame, limits)
    except WireError as e:
        return e.reason
    if isinstance(msg, wire.Hello):
        return HELLO  # it would make the stranger a collector: not this test's subject
    if isinstance(msg, wire.Heartbeat):
        return None  # a heartbeat from nobody is ignored
    if isinstance(msg, wire.Segment) and msg.header.collector_id in live:
        return LEFTOVER
    if isinstance(msg, (wire.Segment, wire.Fetch)):
        return "hello_required"
    return "unexpected_kind"


# ---------------------------------------------------------------- sockets


def send(sock: zmq.Socket, frame: Frame) -> None:
    if isinstance(frame, list):
        sock.send_multipart(frame)
    else:
        sock.send(frame)


def recv_message(sock: zmq.Socket, timeout: float = 10.0) -> wire.Message:
    """The next message other than a hub heartbeat."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.poll(50):
            msg = wire.decode(sock.recv())
            if not isinstance(msg, wire.Heartbeat):
                return msg
    raise AssertionError(f"no answer within {timeout}s")


def drain(sock: zmq.Socket) -> int:
    n = 0
    while True:
        try:
            sock.recv(zmq.NOBLOCK)
            n += 1
        except zmq.Again:
            return n


@dataclass
class Mallory:
    """A connection that said hello and then sends valid-looking segments with bad ids and seqs,
    one at a time, checking each answer against the credit rules of docs/wire.md.

    last: the highest seq the hub has answered for it (-1: none)."""

    sock: zmq.Socket
    rng: random.Random
    limits: WireLimits
    last: int = -1
    counted: Counter[str] = field(default_factory=Counter)

    def hello(self) -> None:
        self.sock.send(wire.encode(wire.Hello(collector_id="mallory", game=GAME, host="evil", pid=666,
                                              capabilities=("reject_seq",))))
        assert isinstance(recv_message(self.sock), wire.Credit)
        assert isinstance(recv_message(self.sock), wire.Welcome)

    def exchange(self, frame: bytes, seq: int, reason: str) -> None:
        """Send one frame whose header says ``seq``; expect ``reject(reason)`` and the credit
        the rules give: a seq within the window is answered (acked), one at or below the last
        answered is acked as a duplicate, one beyond the window is not."""
        self.sock.send(frame)
        reject = recv_message(self.sock)
        assert isinstance(reject, wire.Reject) and reject.reason == reason, (reason, seq, reject)
        assert reject.seq == seq
        self.counted[reason] += 1
        if seq <= self.last:
            ack: int | None = self.last
        elif self.last == -1 or seq <= self.last + WINDOW:
            ack = self.last = seq
        else:
            ack = None
        if ack is not None:
            credit = recv_message(self.sock)
            assert isinstance(credit, wire.Credit) and credit.ack == ack, (reason, seq, credit)

    def step(self) -> None:
        rng, fresh = self.rng, self.last + 1
        case = rng.randrange(5) if self.last >= 0 else 0
        if case == 0:  # someone else's id, in the window
            seg = make_segment(rng, rng.choice(["good", "x9", "mallory2"]), fresh)
            self.exchange(wire.encode(seg), fresh, "collector_id_mismatch")
        elif case == 1:  # played with weights the hub never published
            model = rng.choice(["wm_version", "llm_version"])
            seg = make_segment(rng, "mallory", fresh, **{model: rng.randint(1, 10**6)})
            self.exchange(wire.encode(seg), fresh, "version_out_of_range")
        elif case == 2:  # a replayed seq
            seq = rng.randint(0, self.last)
            self.exchange(wire.encode(make_segment(rng, "mallory", seq)), seq, "duplicate_seq")
        elif case == 3:  # far beyond the window
            seq = self.last + WINDOW + 1 + rng.randrange(10**9)
            self.exchange(wire.encode(make_segment(rng, "mallory", seq)), seq, "no_credit")
        elif case == 4:  # a damaged column: refused by the codec, its seq still answered
            t = tree(wire.encode(make_segment(rng, "mallory", fresh)))
            name = rng.choice(sorted(wire._ARRAY_COLUMNS))
            t["columns"][name] = msgpack.ExtType(1, array_payload(rng, t["columns"][name]))
            frame = pack(t)
            try:
                wire.decode(frame, self.limits)
            except WireError as e:
                self.exchange(frame, fresh, e.reason)
        # A negative seq is tested on its own below (its reject carries no seq).


def good_segments(n: int) -> list[wire.Segment]:
    rng = random.Random(7)
    return [make_segment(rng, "good", 0) for _ in range(n)]


def run_good_collector(address: str, segments: list[wire.Segment], tokens: threading.Semaphore,
                       welcomed: threading.Event, result: dict) -> None:
    """A properly behaving collector (the real SegmentSender): sends segment i once token i is given."""

    async def play() -> None:
        ctx = zmq.asyncio.Context()
        hello = wire.Hello(collector_id="good", game=GAME, host="test", pid=1, capabilities=("reject_seq",))
        sender = SegmentSender(ctx, address, hello, heartbeat_s=0.5, timeout_heartbeats=20)
        stop = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(sender.run, stop)
                while sender.welcome is None:
                    await anyio.sleep(0.01)
                welcomed.set()
                for seg in segments:
                    await anyio.to_thread.run_sync(tokens.acquire)
                    result.setdefault("seqs", []).append(await sender.send(seg))
                result["drained"] = await sender.drain(60)
                stop.set()
        finally:
            sender.close()
            ctx.destroy(linger=0)
        result["stats"] = sender.stats

    try:
        anyio.run(play)
    except BaseException as e:  # noqa: BLE001 - reported by the test
        result["error"] = e


# ---------------------------------------------------------------- the run


def fuzz_the_hub(address: str, n_frames: int, seed: int) -> dict:
    rng = random.Random(seed)
    n_good = max(10, n_frames // 50)
    # peers time out after 20 s: a collector queued behind a burst of fuzz frames is not lost
    cfg = hub_config(address, f"wire.max_message_bytes={MAX_FRAME}", "hub.peer_timeout_heartbeats=100")
    hub = HubThread(cfg).start()
    limits = hub.hub.ingest.limits
    expected: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    ignored = leftovers = 0
    segments = good_segments(n_good)
    tokens, welcomed, result = threading.Semaphore(0), threading.Event(), {}
    good = threading.Thread(target=run_good_collector, args=(address, segments, tokens, welcomed, result), daemon=True)
    strangers = [dealer(address) for _ in range(3)]
    mallory = Mallory(dealer(address), rng, limits)
    thief = dealer(address)
    start = time.monotonic()
    try:
        good.start()
        assert welcomed.wait(20), result
        mallory.hello()
        mutator = Mutator(rng)
        sent = 0
        while sent < n_frames:
            if sent % 10 == 9:  # one in ten: a hello'd connection's bad segment, answer checked
                mallory.step()
            elif sent % 250 == 0:  # another connection claims the live collector's id
                thief.send(wire.encode(wire.Hello(collector_id="good", game=GAME, host="evil", pid=2)))
                reject = recv_message(thief)
                assert isinstance(reject, wire.Reject) and reject.reason == "collector_id_in_use", reject
                expected["collector_id_in_use"] += 1
            else:
                kind, frame = mutator.frame()
                reason = stranger_reason(frame, limits, frozenset({"good"}))
                if reason == HELLO:
                    continue
                kinds[kind] += 1
                if reason is None:
                    ignored += 1
                elif reason == LEFTOVER:
                    leftovers += 1
                else:
                    expected[reason] += 1
                sock = strangers[sent % len(strangers)]
                send(sock, frame)
                drain(sock)
            sent += 1
            if sent % (n_frames // n_good) == 0:
                tokens.release()  # the good collector's next segment goes out between the fuzz frames
        tokens.release(n_good)  # any not yet given
        good.join(90)
        assert not good.is_alive(), "the good collector did not finish"
        assert "error" not in result, result.get("error")
        fuzz_s = time.monotonic() - start
        expected += mallory.counted
        # a frame over the socket's own cap (max + 64 KiB) never reaches the codec: libzmq drops it
        # with its connection, and nothing is counted
        giant = dealer(address)
        giant.send(b"\x00" * (MAX_FRAME + 65536 + 1))
        # the hub is still up and serving: a newcomer is welcomed
        newcomer = dealer(address)
        newcomer.send(wire.encode(wire.Hello(collector_id="newcomer", game=GAME, host="h", pid=3)))
        assert isinstance(recv_message(newcomer), wire.Credit)
        assert isinstance(recv_message(newcomer), wire.Welcome)
        hub.wait_for(lambda h: sum(h.status().rejected_by_reason.values()) >= sum(expected.values())
                     and h.status().caps.get(LEFTOVER, 0) >= leftovers, timeout=30,
                     what="every fuzz frame counted")
        accepted = hub.segments()
        newcomer.close(0)
        giant.close(0)
    finally:
        tokens.release(n_good)  # a run that failed half-way must not leave the collector waiting
        for s in (*strangers, mallory.sock, thief):
            s.close(0)
        summary = hub.stop()
    return dict(summary=summary, expected=expected, kinds=kinds, ignored=ignored, leftovers=leftovers, result=result,
                segments=segments,
                accepted=accepted, n_good=n_good, fuzz_s=fuzz_s)


def check_run(run: dict, n_frames: int) -> None:
    summary, expected, n_good = run["summary"], run["expected"], run["n_good"]
    # every malformed frame counted under its reason, and nothing else refused
    assert summary["rejected_by_reason"] == dict(expected), (summary["rejected_by_reason"], dict(expected))
    assert summary["caps"].get(LEFTOVER, 0) == run["leftovers"], (summary["caps"], run["leftovers"])
    assert sum(expected.values()) + run["ignored"] + run["leftovers"] >= 0.95 * n_frames
    assert len(expected) >= 15, f"too few kinds of refusal exercised: {dict(expected)}"
    assert len(run["kinds"]) == len(Mutator(random.Random()).kinds)
    # the good collector: every segment accepted exactly once, as it was sent, and none refused
    assert run["result"]["drained"] and run["result"]["seqs"] == list(range(n_good))
    stats = run["result"]["stats"]
    assert stats.rejects == 0 and stats.reconnects == 0 and stats.resent == 0
    accepted = run["accepted"]
    assert sorted(s.header.seq for s in accepted) == list(range(n_good)), "each valid segment accepted exactly once"
    assert all(s.header.collector_id == "good" for s in accepted)
    by_seq = {s.header.seq: s for s in accepted}
    for seq, sent in enumerate(run["segments"]):
        assert by_seq[seq].same_as(replace(sent, header=replace(sent.header, seq=seq)))
    assert summary["segments_accepted"] == n_good
    assert summary["per_collector"]["good"]["accepted"] == n_good
    assert summary["per_collector"]["good"]["rejected"] == 0


def test_a_small_fuzz_run_is_counted_exactly(address):
    """About 1,000 malformed frames, another seed: a quick check, and the first to read when the big run fails."""
    run = fuzz_the_hub(address, 1_000, seed=1)
    check_run(run, 1_000)


def test_ten_thousand_malformed_frames_are_counted_exactly(address):
    """The run issue 14 asks for: >= 10,000 frames (about 6 s on 2 cores, so not in the slow tier)."""
    run = fuzz_the_hub(address, 10_000, seed=2)
    check_run(run, 10_000)
    print(f"fuzzed the hub with 10,000 frames in {run['fuzz_s']:.1f}s: {dict(run['expected'])}, "
          f"{run['ignored']} ignored")


def test_a_segment_with_a_negative_seq_is_refused_with_a_reject_the_collector_can_read(address):
    hub = HubThread(hub_config(address)).start()
    sock = dealer(address)
    try:
        Mallory(sock, random.Random(0), hub.hub.ingest.limits).hello()
        sock.send(wire.encode(make_segment(random.Random(0), "mallory", -5)))
        reply = recv_message(sock)  # the reject leaves out the seq the wire could not carry
        assert isinstance(reply, wire.Reject) and reply.reason == "bad_value"
    finally:
        sock.close(0)
        hub.stop()


def test_a_connection_that_renames_itself_frees_its_old_id(address):
    hub = HubThread(hub_config(address)).start()
    renamer, newcomer = dealer(address), dealer(address)
    try:
        for cid in ("first", "second"):  # the same connection, a new id
            renamer.send(wire.encode(wire.Hello(collector_id=cid, game=GAME, host="h", pid=1)))
            assert isinstance(recv_message(renamer), wire.Credit)
            assert isinstance(recv_message(renamer), wire.Welcome)
        assert set(hub.status().collectors) == {"second"}
        newcomer.send(wire.encode(wire.Hello(collector_id="first", game=GAME, host="other", pid=2)))
        reply = recv_message(newcomer)
        assert isinstance(reply, wire.Credit), reply
    finally:
        renamer.close(0)
        newcomer.close(0)
        hub.stop()
