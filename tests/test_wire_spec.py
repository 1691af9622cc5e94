"""docs/wire.md is enough to write a collector: a client written from its text alone, against a real hub.

The client below uses raw pyzmq and msgpack and nothing of ``pzstream.stream``: every byte it sends
and every check it makes on what it receives follows the document (section names in comments). The
hub is a real ``LearnerHub`` in a thread (``tests/support.HubThread``), read only to check results.
The last tests pin the points of issue 14 where the document and the code once disagreed: framing
and frames over the cap, the hub's silence before a collector reconnects, the credit base of a hub
that meets a collector mid-stream, and the CURVE key files.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from support import CurveKeys, HubThread, hub_config, launch

CTX = zmq.Context.instance()
GAME = "tw-default"

# ------------------------------------------------------------------ the codec, from "Framing" and "Message kinds"

# the keys each hub-to-collector kind carries ("Message kinds"); optional ones apart ("Versioning")
HUB_KINDS = {
    "welcome": {"hub_id", "window", "wm_version", "llm_version", "heartbeat_s"},
    "credit": {"n", "ack"},
    "reject": {"reason", "detail"},
    "heartbeat": {"sender", "time", "stats"},
    "blob": {"model", "version", "offset", "total", "sha256", "data"},
    "weights": {"model", "version", "uri", "sha256", "nbytes"},
}
OPTIONAL = {"reject": {"seq"}}
FATAL = {"bad_version", "unknown_kind", "bad_field"}  # "The conversation", 6
CHUNK = 512 * 1024  # "fetch": chunks are at most 512 KiB


def pack(kind: str, **fields) -> bytes:
    """One message: one msgpack map with "v" and "kind"; text as str, bytes as bin."""
    return msgpack.packb({"v": 1, "kind": kind, **fields}, use_bin_type=True)


def unpack(frame: bytes) -> dict:
    """A message from the hub, checked against the document: exactly the listed keys."""
    msg = msgpack.unpackb(frame, raw=False)
    assert isinstance(msg, dict) and msg.pop("v") == 1, msg
    kind = msg["kind"]
    keys = set(msg) - {"kind"}
    want, optional = HUB_KINDS[kind], OPTIONAL.get(kind, set())
    assert want <= keys <= want | optional, (kind, keys)
    return msg


# "The array ext type (code 1)": dtype codes and item formats
INT32, BOOL, FLOAT32 = 5, 1, 8
ITEM = {INT32: "<i", BOOL: "<?", FLOAT32: "<f"}


def array(code: int, values: list) -> msgpack.ExtType:
    """A 1-d array ext: dtype code, ndim, two zero bytes, dims as uint32 LE, zero padding to a
    multiple of 8 (none for ndim 1), then the elements little-endian."""
    head = struct.pack("<BBxx", code, 1) + struct.pack("<I", len(values))
    head += bytes(8 * (1 // 2 + 1) - len(head))
    body = b"".join(struct.pack(ITEM[code], v) for v in values)
    return msgpack.ExtType(1, head + body)


@dataclass
class Step:
    observation: str
    candidates: list[str]
    action: int
    reward: float
    score: int
    done: bool
    visits: list[float]
    root_value: float


def segment_frame(cid: str, seq: int, episode: int, step0: int, steps: list[Step], llm_version: int) -> bytes:
    """A segment ("segment": header and columns, by the tables)."""
    offsets = [0]
    for s in steps:
        offsets.append(offsets[-1] + len(s.candidates))
    n_cands = offsets[-1]
    header = {"game": GAME, "collector_id": cid, "seq": seq, "episode_id": episode, "step0": step0,
              "wm_version": 0, "llm_version": llm_version, "t_start": 1.7e9 + step0, "t_end": 1.7e9 + step0 + 1.0}
    columns = {
        "observations": [s.observation for s in steps],
        "cand_offsets": array(INT32, offsets),
        "candidates": [c for s in steps for c in s.candidates],
        "action_index": array(INT32, [s.action for s in steps]),
        "action_text": [s.candidates[s.action] for s in steps],
        "reward": array(FLOAT32, [s.reward for s in steps]),
        "score": array(INT32, [s.score for s in steps]),
        "done": array(BOOL, [s.done for s in steps]),
        "visits": array(FLOAT32, [v for s in steps for v in s.visits]),
        "prior": array(FLOAT32, [1.0 / len(s.candidates) for s in steps for _ in s.candidates]),  # uniform: no LLM
        "root_value": array(FLOAT32, [s.root_value for s in steps]),
    }
    assert len(columns["prior"].data) == 8 + 4 * n_cands
    return pack("segment", header=header, columns=columns)


def play(episode: int, step0: int, n: int) -> list[Step]:
    """Made-up steps of one episode: 1 to 4 candidates each, normalised visits, NaN root values."""
    out = []
    for t in range(step0, step0 + n):
        k = 1 + (episode + t) % 4
        w = [1.0 + i for i in range(k)]
        out.append(Step(f"room {episode}.{t}: a dusty hall", [f"go {d}" for d in "nsew"[:k]], t % k,
                        0.5 * (t % 3 == 0), t, False, [x / sum(w) for x in w],
                        math.nan if t % 2 else 0.25 * t))
    return out


# ------------------------------------------------------------------ the client, from "Sockets and conversation"


@dataclass
class Client:
    """A collector by the document: a DEALER with a routing id drawn once, the sliding credit
    window, heartbeats, reconnects after 5 silent heartbeat periods, and resends."""

    address: str
    cid: str
    routing_id: bytes = field(default_factory=lambda: os.urandom(8).hex().encode())  # "Routing id"
    session: str = field(default_factory=lambda: os.urandom(16).hex())
    curve: tuple[bytes, bytes, bytes] | None = None  # server public, own public, own secret (Z85)
    sock: zmq.Socket | None = None
    welcome: dict | None = None
    window: int = 0
    acked: int = -1  # A: the highest ack received in this process
    next_seq: int = 0
    unacked: dict[int, bytes] = field(default_factory=dict)
    rejects: list[dict] = field(default_factory=list)
    blobs: list[dict] = field(default_factory=list)
    hub_heartbeats: int = 0
    reconnects: int = 0
    resent: list[int] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    heartbeat_s: float = 1.0
    last_heard: float = 0.0
    last_beat: float = 0.0
    order: list[str] = field(default_factory=list)  # kinds received since the last hello

    def connect(self) -> None:
        """Steps 1 and 5: a new DEALER with the same routing id, then hello."""
        if self.sock is not None:
            self.sock.close(0)
        self.sock = CTX.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTING_ID, self.routing_id)
        if self.curve is not None:
            self.sock.curve_serverkey, self.sock.curve_publickey, self.sock.curve_secretkey = self.curve
        self.sock.connect(self.address)
        self.welcome, self.order = None, []
        self.last_heard = time.monotonic()
        self.send(pack("hello", collector_id=self.cid, game=GAME, host="spec-host", pid=os.getpid(),
                       capabilities=["policy:spec", "reject_seq"], seed=1000, session=self.session))

    def send(self, frame: bytes) -> bool:
        """"Sending without blocking": never wait; a refused segment stays unacknowledged."""
        try:
            self.sock.send(frame, zmq.DONTWAIT)
            return True
        except zmq.Again:
            return False

    def answer_order(self) -> list[str]:
        """The hello's answer (step 2): the first credit and welcome since it, in arrival order."""
        return [k for k in self.order if k in ("credit", "welcome")][:2]

    def handle(self, msg: dict) -> None:
        kind = msg["kind"]
        self.order.append(kind)
        if kind == "credit":
            self.window = msg["n"]
            self.acked = max(self.acked, msg["ack"])  # acknowledgements never go back
            for seq in [s for s in self.unacked if s <= self.acked]:
                del self.unacked[seq]
        elif kind == "welcome":
            self.welcome, self.heartbeat_s = msg, msg["heartbeat_s"]
            self.resent += sorted(self.unacked)
            for seq in sorted(self.unacked):  # lowest first
                self.send(self.unacked[seq])
        elif kind == "reject":
            assert msg["reason"] not in FATAL, msg
            self.rejects.append(msg)
            if msg["reason"] == "hello_required" and self.welcome is not None:  # step 6
                self.reconnects += 1
                self.connect()
        elif kind == "blob":
            self.blobs.append(msg)
        elif kind == "heartbeat":
            self.hub_heartbeats += 1

    def pump(self, seconds: float) -> None:
        """Read whatever comes for ``seconds``; heartbeat on time; reconnect when the hub is silent."""
        end = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            if now - self.last_beat >= self.heartbeat_s:
                self.last_beat = now
                self.send(pack("heartbeat", sender=self.cid, time=time.time(), stats=self.stats))
            silent_limit = 5 * self.heartbeat_s if self.welcome is not None else max(5 * self.heartbeat_s, 5.0)
            if now - self.last_heard > silent_limit:  # step 5
                self.reconnects += 1
                self.connect()
            if now >= end:
                return
            if self.sock.poll(max(1, int(1000 * min(end - now, 0.05)))):
                self.last_heard = time.monotonic()
                self.handle(unpack(self.sock.recv()))

    def until(self, done, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"{what}: client {self}"
            self.pump(0.05)

    def send_segment(self, frame_of_seq) -> int:
        """Step 3: wait for room in the window (seq <= A + n), then send; keep it until acked."""
        self.until(lambda: self.welcome is not None and self.next_seq <= self.acked + self.window, 30, "credit")
        seq = self.next_seq
        self.next_seq += 1
        self.unacked[seq] = frame_of_seq(seq)
        self.send(self.unacked[seq])
        return seq

    def fetch(self, notice: dict) -> bytes:
        """"fetch"/"blob": consecutive chunks, one at a time, then the notice's sha256."""
        data = b""
        while len(data) < notice["nbytes"]:
            self.blobs.clear()
            self.send(pack("fetch", model=notice["model"], version=notice["version"], offset=len(data), length=1 << 20))
            self.until(lambda: self.blobs, 10, "blob")
            blob = self.blobs[0]
            assert blob["offset"] == len(data) and blob["total"] == notice["nbytes"] and 0 < len(blob["data"]) <= CHUNK
            data += blob["data"]
        assert hashlib.sha256(data).hexdigest() == notice["sha256"]
        return data

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None


def weights_notice(address: str, model: str, timeout: float = 10.0) -> dict:
    """A notice from the hub's PUB at P+1 (subscribe to everything)."""
    host, port = address.rsplit(":", 1)
    sub = CTX.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"{host}:{int(port) + 1}")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sub.poll(100):
                msg = unpack(sub.recv())
                if msg["kind"] == "weights" and msg["model"] == model and msg["uri"] == "hub":
                    return msg
        raise AssertionError(f"no {model} notice on P+1")
    finally:
        sub.close(0)


def frames_for(cid: str, llm_version: int = 0):
    """seq -> segment frame; each seq is an episode's next 1-5 steps, the same bytes when resent."""
    made: dict[int, tuple[bytes, list[Step]]] = {}

    def frame(seq: int) -> bytes:
        if seq not in made:
            steps = play(seq // 3, 10 * (seq % 3), 1 + seq % 5)
            made[seq] = segment_frame(cid, seq, seq // 3, 10 * (seq % 3), steps, llm_version), steps
        return made[seq][0]

    frame.steps = lambda seq: made[seq][1]  # type: ignore[attr-defined]
    return frame


def assert_stored(hub: HubThread, cid: str, frame, seqs: range) -> None:
    """The hub stored each seq exactly once, column by column as sent."""
    stored = sorted((s for s in hub.segments() if s.header.collector_id == cid), key=lambda s: s.header.seq)
    assert [s.header.seq for s in stored] == list(seqs)
    for seg in stored:
        steps = frame.steps(seg.header.seq)
        assert list(seg.observations) == [s.observation for s in steps]
        offs = [int(x) for x in seg.cand_offsets]
        assert [list(seg.candidates[offs[t]:offs[t + 1]]) for t in range(len(steps))] == [s.candidates for s in steps]
        assert [int(x) for x in seg.action_index] == [s.action for s in steps]
        assert np.array_equal(seg.reward, np.array([s.reward for s in steps], np.float32))
        assert [int(x) for x in seg.score] == [s.score for s in steps]
        assert np.allclose(seg.visits, [v for s in steps for v in s.visits])
        assert np.array_equal(seg.root_value, np.array([s.root_value for s in steps], np.float32), equal_nan=True)


# ------------------------------------------------------------------ the client against a real hub


def test_a_client_written_from_the_document_is_accepted_exactly(address):
    """hello, credit then welcome, a weights fetch, segments through a small window with heartbeats,
    a reconnect with the same routing id that resends what was unacknowledged, and a goodbye."""
    hub = HubThread(hub_config(address, "hub.credit_window=4")).start()
    client = Client(address, "spec-c1")
    try:
        weights = os.urandom(CHUNK * 2 + 12345)  # three chunks
        assert hub.call(hub.hub.publish, "llm", weights) == 1
        client.connect()
        client.until(lambda: client.welcome is not None, 10, "welcome")
        assert client.answer_order() == ["credit", "welcome"] and client.acked == -1 and client.window == 4
        assert client.welcome["llm_version"] == 1 and client.welcome["heartbeat_s"] == pytest.approx(0.2)

        notice = weights_notice(address, "llm")
        assert notice["version"] == 1 and notice["nbytes"] == len(weights)
        assert client.fetch(notice) == weights

        frame = frames_for(client.cid, llm_version=1)
        for _ in range(10):  # more than the window: the client waits for credit
            client.send_segment(frame)
        client.stats = {"env_steps": 42.0, "cache_hits": 3.0, "cache_misses": 1.0, "llm_version": 1.0, "mine": 7}
        client.until(lambda: not client.unacked, 20, "acks for the first ten")

        # three more, then the socket goes before their acks are read: reconnect and resend
        for _ in range(3):
            client.send_segment(frame)
        assert len(client.unacked) == 3
        client.reconnects += 1
        client.connect()
        client.until(lambda: client.welcome is not None and not client.unacked, 20, "the resent segments acked")
        # the resend itself: unless the hub had already taken all three (its credit's ack then
        # covers them, a race with the socket's close), they went again on the new connection;
        # a credit comes first (acks of the old connection's last segments may come before welcome)
        assert client.answer_order()[0] == "credit"
        assert client.resent or client.acked >= 12
        for _ in range(4):
            client.send_segment(frame)
        client.until(lambda: not client.unacked and client.hub_heartbeats > 0, 20, "all acked")
        client.until(lambda: hub.status().collectors["spec-c1"].stats.get("env_steps") == 42.0, 10,
                     "the client's heartbeat stats at the hub")
        status = hub.status()
        c = status.collectors["spec-c1"]
        assert c.policy == "spec" and c.accepted == 17 and not c.lost
        assert status.cache_hit_rate() == 0.75 and status.min_collector_version("llm") == 1
        # segments still on their way over the old connection reach the hub under an id libzmq made
        # up ("Routing id"): hello_required, answered nowhere, and counted as handover
        # leftovers (as rejections only had the hub declared this collector lost); the resent copies are acked
        assert set(status.rejected_by_reason) <= {"duplicate_seq", "hello_required"}
        assert sum(status.rejected_by_reason.values()) <= 2 * len(client.resent)
        assert all(r["reason"] == "duplicate_seq" and r["seq"] in client.resent for r in client.rejects)

        client.stats = {"closing": 1}  # "The conversation", 4: a clean goodbye
        client.pump(3 * client.heartbeat_s)
        hub.wait_for(lambda h: h.status().collectors["spec-c1"].closed, 10, what="the goodbye")
        assert_stored(hub, "spec-c1", frame, range(17))
    finally:
        client.close()
        summary = hub.stop()
    assert summary["segments_accepted"] == 17 and summary["collectors_lost"] == 0


def test_a_hub_that_meets_the_client_mid_stream_takes_its_first_seq_as_base(address):
    """The credit rule across a hub restart: the new hub acks -1; the client's window still counts
    from its highest ack (A), and the hub allows seq <= first - 1 + n: the same window."""
    window = 4
    hub = HubThread(hub_config(address, f"hub.credit_window={window}")).start()
    client = Client(address, "spec-c2")
    frame = frames_for(client.cid)
    try:
        client.connect()
        for _ in range(6):
            client.send_segment(frame)
        client.until(lambda: not client.unacked, 20, "acks from the first hub")
        assert client.acked == 5
        hub.stop()
        # one more while the hub is away (the window allows it): it stays unacknowledged
        client.send_segment(frame)
        client.pump(6 * client.heartbeat_s)  # silent hub: the client reconnects by itself
        assert client.reconnects >= 1
        hub = HubThread(hub_config(address, f"hub.credit_window={window}")).start()
        client.until(lambda: client.welcome is not None and not client.unacked, 30, "the second hub's welcome and ack")
        assert 6 in client.resent and client.acked == 6
        while client.next_seq <= client.acked + client.window:  # the whole window: 7..10
            client.send_segment(frame)
        client.until(lambda: not client.unacked, 20, "acks")
        # one beyond the window the hub gives (a client that ignores its window)
        client.send(frame(client.acked + window + 1))
        client.until(lambda: client.rejects, 10, "no_credit")
        assert client.rejects[-1]["reason"] == "no_credit" and client.rejects[-1]["seq"] == client.acked + window + 1
        assert_stored(hub, "spec-c2", frame, range(6, 11))
        assert hub.status().rejected_by_reason == {"no_credit": 1}
    finally:
        client.close()
        hub.stop()


# ------------------------------------------------------------------ points where document and code once disagreed


def test_multipart_messages_are_answered_bad_framing_and_counted(address):
    hub = HubThread(hub_config(address)).start()
    client = Client(address, "spec-c3")
    frame = frames_for(client.cid)
    try:
        client.connect()
        client.until(lambda: client.welcome is not None, 10, "welcome")
        client.sock.send_multipart([frame(0), b"more"])  # one segment as a two-part message
        client.next_seq = 1
        client.until(lambda: client.rejects, 10, "a reject")
        assert client.rejects[0]["reason"] == "bad_framing" and client.rejects[0].get("seq") is None
        client.send_segment(frame)  # the next seq goes on as usual; its ack covers the lost one
        client.until(lambda: client.acked == 1, 10, "ack of seq 1")
        status = hub.status()
        assert status.rejected_by_reason == {"bad_framing": 1} and status.collectors["spec-c3"].accepted == 1
    finally:
        client.close()
        hub.stop()


def test_frames_over_the_cap_are_refused_or_dropped_with_their_connection(address):
    """Up to 64 KiB over wire.max_message_bytes: reject too_large with the seq, counted, acked.
    Further over: no reply, nothing counted, the DEALER reconnects by itself under its routing id
    and its next segment is accepted without a new hello."""
    cap = 65536
    # heartbeats of 0.5 s: the client's own silence limit (2.5 s) stays far from libzmq's reconnect
    hub = HubThread(hub_config(address, f"wire.max_message_bytes={cap}", "hub.heartbeat_s=0.5")).start()
    client = Client(address, "spec-c4")

    def padded(seq: int, nbytes: int) -> bytes:
        steps = play(0, 0, 1)
        steps[0].observation = "x" * nbytes
        return segment_frame(client.cid, seq, 0, 0, steps, 0)

    try:
        client.connect()
        client.until(lambda: client.welcome is not None, 10, "welcome")
        client.send(padded(0, cap + 1000))
        client.next_seq = 1
        client.until(lambda: client.rejects and client.acked == 0, 10, "too_large and its ack")
        assert client.rejects[0]["reason"] == "too_large" and client.rejects[0]["seq"] == 0
        client.send(padded(1, cap + 200_000))
        client.next_seq = 2
        client.pump(0.5)
        assert len(client.rejects) == 1 and client.acked == 0  # no reply
        assert hub.status().rejected_by_reason == {"too_large": 1}  # nothing counted
        client.send_segment(frames_for(client.cid))  # seq 2 on the same socket, no new hello
        client.until(lambda: client.acked == 2, 20, "ack of seq 2")
        assert client.reconnects == 0 and len(client.rejects) == 1
        status = hub.status()
        assert status.rejected_by_reason == {"too_large": 1} and status.collectors["spec-c4"].accepted == 1
    finally:
        client.close()
        hub.stop()


@pytest.mark.slow
def test_a_collector_reconnects_after_five_silent_heartbeats(address, procs):
    """The reference collector against a hub that says nothing: before any welcome it says hello
    again after 5 s; welcomed (on that second hello, once it is past its start-up), it says hello
    again 5 heartbeat periods (hub.peer_timeout_heartbeats, default 5) after the welcome. Every
    hello comes on the same routing id."""
    heartbeat_s = 0.4
    router = CTX.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    # as the hub's: a reconnect may arrive before the old connection is gone ("Routing id")
    router.setsockopt(zmq.ROUTER_HANDOVER, 1)
    router.bind(address)
    try:
        procs.append(launch("--role", "collector", "--learner", address, "collector.id=silent-hub",
                            f"hub.heartbeat_s={heartbeat_s}", "collector.policy=random", "collector.segment_steps=5"))
        hellos: list[tuple[float, bytes]] = []
        welcomed = 0.0
        deadline = time.monotonic() + 60
        while len(hellos) < 3:
            assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].stderr.read().decode()[-2000:]
            if not router.poll(50):
                continue
            identity, data = router.recv_multipart()
            if msgpack.unpackb(data, raw=False)["kind"] != "hello":
                continue
            hellos.append((time.monotonic(), identity))
            if len(hellos) == 2:
                router.send_multipart([identity, pack("credit", n=8, ack=-1)])
                router.send_multipart([identity, pack("welcome", hub_id="silent", window=8, wm_version=0,
                                                      llm_version=0, heartbeat_s=heartbeat_s)])
                welcomed = time.monotonic()
        unwelcomed, gap = hellos[1][0] - hellos[0][0], hellos[2][0] - welcomed
        print(f"hello again {unwelcomed:.2f}s after an unanswered hello, {gap:.2f}s after the welcome "
              f"(5 heartbeats = {5 * heartbeat_s:.2f}s)")
        assert 5.0 <= unwelcomed < 5.0 + 2.0
        assert 5 * heartbeat_s <= gap < 5 * heartbeat_s + 1.5
        ids = {identity for _, identity in hellos}
        assert len(ids) == 1 and 1 <= len(hellos[0][1]) <= 255 and hellos[0][1][0] != 0
    finally:
        router.close(0)


def read_certificate(path: Path) -> dict[str, bytes]:
    """"CURVE keys": a ZeroMQ certificate in ZPL text; the keys as 40 Z85 characters."""
    keys = dict(re.findall(r'^\s*(public-key|secret-key)\s*=\s*"(.{40})"\s*$', path.read_text(), re.M))
    return {k: v.encode() for k, v in keys.items()}


def test_curve_keys_as_the_document_lays_them_out(address, tmp_path):
    """`--role keys` writes the files the document names; the hub needs hub.key_secret and
    authorized/, a client only hub.key and client.key_secret; a key not in authorized/ is refused."""
    made = tmp_path / "keys"
    p = launch("--role", "keys", "--out", str(made))
    assert p.wait(60) == 0, p.stderr.read().decode()
    assert {str(f.relative_to(made)) for f in made.rglob("*") if f.is_file()} == {
        "hub.key", "hub.key_secret", "client.key", "client.key_secret", "authorized/client.key"}
    hub_host, client_host = tmp_path / "hub-host", tmp_path / "client-host"
    (hub_host / "authorized").mkdir(parents=True)
    client_host.mkdir()
    shutil.copy(made / "hub.key_secret", hub_host)
    shutil.copy(made / "authorized" / "client.key", hub_host / "authorized")
    shutil.copy(made / "hub.key", client_host)
    shutil.copy(made / "client.key_secret", client_host)

    hub = HubThread(hub_config(address), curve=CurveKeys(hub_host)).start()
    own = read_certificate(client_host / "client.key_secret")
    client = Client(address, "spec-c5", curve=(read_certificate(client_host / "hub.key")["public-key"],
                                               own["public-key"], own["secret-key"]))
    public, secret = zmq.curve_keypair()
    stranger = Client(address, "spec-c6", curve=(client.curve[0], public, secret))
    try:
        client.connect()
        client.until(lambda: client.welcome is not None, 10, "welcome under CURVE")
        client.send_segment(frames_for(client.cid))
        client.until(lambda: client.acked == 0, 10, "ack under CURVE")
        stranger.connect()
        hub.wait_for(lambda h: h.status().connections_rejected.get("curve_auth", 0) >= 1, 10,
                     what="the stranger's handshake refused")
        assert stranger.welcome is None
    finally:
        client.close()
        stranger.close()
        summary = hub.stop()
    assert summary["segments_accepted"] == 1
