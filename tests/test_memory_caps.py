"""Issue 14, item 2: what a peer can make the hub (or a server, or a collector) hold is bounded by
configuration, not by the peer. Each case of the issue is driven with raw sockets against a real
hub in a process of its own; the test asserts the cap bites (its counter in the summary's ``caps``),
that the hub's RSS stays under a bound derived from the configured caps, and that valid traffic
still flows."""
from __future__ import annotations

import json
import random
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time

import anyio
import psutil
import pytest
import zmq
from support import REPO, FakeHubRouter, LoopThread, free_base_port, hub_config, recv_kind
from support import dealer as raw_dealer

from pzstream.model.replay import SegmentReplay, segment_nbytes
from pzstream.stream import wire
from pzstream.stream.transport import SegmentSender
from pzstream.stream.weights import CHUNK_BYTES, BlobAssembler, WeightsError
from pzstream.stream.weights_client import WeightsClient

MiB = 1024 * 1024
SLACK = 64 * MiB  # allocator and interpreter noise on top of what the caps allow
CTX = zmq.Context.instance()


# ---------------------------------------------------------------------------- a hub in its own process


class PeakRSS:
    """One process's resident memory, sampled every 10 ms on a thread: ``growth()`` is its peak since
    :meth:`rebase` (or since this was made) over its RSS then."""

    def __init__(self, pid: int):
        self.ps = psutil.Process(pid)
        self.base = self.peak = self.ps.memory_info().rss
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while self._sampling:
            try:
                self.peak = max(self.peak, self.ps.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.01)

    def rebase(self) -> int:
        """Measure growth from now on; returns the RSS now (the new base)."""
        self.base = self.peak = self.ps.memory_info().rss
        return self.base

    def growth(self) -> int:
        return self.peak - self.base

    def stop(self) -> None:
        self._sampling = False
        self._sampler.join()


class HubProcess:
    """tests/hub_process.py in a subprocess; ``peak_growth()`` is its RSS peak over its RSS when ready."""

    def __init__(self, procs: list, *overrides: str, weights_bytes: int = 0):
        self.address = f"tcp://127.0.0.1:{free_base_port()}"
        self._run_dir = tempfile.TemporaryDirectory(prefix="pzstream-caps-")
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "hub_process.py"), self._run_dir.name, str(weights_bytes),
             f"hub.address={self.address}", "trainer.tensorboard=false", "hub.heartbeat_s=0.2", *overrides],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(self.proc)
        line = self.proc.stdout.readline()
        assert line.strip() == "READY", (line, self.proc.stderr.read() if self.proc.poll() is not None else "")
        self.rss = PeakRSS(self.proc.pid)

    def trainer_pid(self, timeout: float = 120.0) -> int:
        """The pid of the hub's trainer once it has said it is ready (its line on the hub's stdout)."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        assert line.startswith("TRAINER "), (line, self.proc.stderr.read() if self.proc.poll() is not None else "")
        pid = int(line.split()[1])
        assert pid in {c.pid for c in psutil.Process(self.proc.pid).children()}, "not a child of the hub"
        return pid

    def peak_growth(self) -> int:
        return self.rss.growth()

    def stop(self) -> dict:
        """SIGTERM; the hub's summary."""
        self.rss.stop()
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        self._run_dir.cleanup()
        assert self.proc.returncode == 0, err[-3000:]
        return json.loads(out.strip().splitlines()[-1])


def dealer(address: str) -> zmq.Socket:
    return raw_dealer(address, sndhwm=0)  # the attacker queues without limit: only the hub's caps bound the hub


def hello(cid: str, **kw) -> wire.Hello:
    return wire.Hello(collector_id=cid, game="g", host="h", pid=1, capabilities=("reject_seq",), **kw)


def segment(cid: str, seq: int, steps: int = 3, obs_chars: int = 10, searched: bool = False) -> wire.Segment:
    header = wire.SegmentHeader(game="g", collector_id=cid, seq=seq, episode_id=seq, step0=0, wm_version=0,
                                llm_version=0, t_start=1.0, t_end=2.0)
    return wire.make_segment(header, [f"o{t} " + "x" * obs_chars for t in range(steps)], [["north", "south"]] * steps,
                             [0] * steps, [0.0] * steps, [0] * steps, [t == steps - 1 for t in range(steps)],
                             root_values=[0.5] * steps if searched else None)


def a_collector_still_streams(address: str, cid: str = "good") -> None:
    """A well-behaved collector is welcomed and its segment accepted (acknowledged) while caps bite."""
    s = dealer(address)
    try:
        s.send(wire.encode(hello(cid)))
        recv_kind(s, wire.Welcome)
        s.send(wire.encode(segment(cid, 0)))
        deadline = time.monotonic() + 10
        while True:
            credit = recv_kind(s, wire.Credit, timeout=max(0.1, deadline - time.monotonic()))
            if credit.ack == 0:
                return
    finally:
        s.close(0)


# ---------------------------------------------------------------------------- peers, hellos, stats


def test_hellos_and_the_peer_table_are_bounded(procs):
    """Issue: 60 hellos of 4 MB kept 310 MB. Now a hello over hub.max_hello_bytes is refused, the
    table holds at most hub.max_peers, and gone peers are forgotten after hub.peer_ttl_s."""
    max_peers, ttl, recv_q = 8, 1.0, 16 * MiB
    hub = HubProcess(procs, "trainer.enabled=false", "ppo.enabled=false", f"hub.max_peers={max_peers}",
                     f"hub.peer_ttl_s={ttl}", f"hub.recv_queue_bytes={recv_q}")
    socks: list[zmq.Socket] = []
    live: list[zmq.Socket] = []
    try:  # a valid hello of 4 MB: four capabilities of 1 MB (each str is under the codec's 1 MiB)
        big = wire.encode(wire.Hello(collector_id="big", game="g", host="h", pid=1,
                                     capabilities=tuple("c" * 10**6 for _ in range(4))))
        for _ in range(60):
            s = dealer(hub.address)
            socks.append(s)
            s.send(big)
        for s in socks[:3]:
            assert recv_kind(s, wire.Reject).reason == "hello_too_large"
        # more live peers than the table holds: the ones past max_peers are refused
        for i in range(max_peers + 4):
            s = dealer(hub.address)
            live.append(s)
            s.send(wire.encode(hello(f"p{i}")))
        replies = [recv_kind(s, (wire.Welcome, wire.Reject)) for s in live]
        assert sum(isinstance(r, wire.Welcome) for r in replies) == max_peers
        assert {r.reason for r in replies if isinstance(r, wire.Reject)} == {"too_many_peers"}
        # they say goodbye; past the ttl they are forgotten and a newcomer fits again
        for s, r in zip(live, replies):
            if isinstance(r, wire.Welcome):
                s.send(wire.encode(wire.Heartbeat(sender="x", time=1.0, stats={"closing": 1.0})))
        time.sleep(ttl + 1.0)
        a_collector_still_streams(hub.address)
    finally:
        for s in socks + live:
            s.close(0)
        summary = hub.stop()
    caps = summary["caps"]
    assert caps["hellos_too_large"] == 60 and caps["peers_refused"] == 4 and caps["peers_pruned"] >= max_peers, caps
    assert summary["rejected_by_reason"]["hello_too_large"] == 60
    assert summary["segments_accepted"] == 1
    bound = max_peers * 64 * 1024 + 2 * recv_q + 8 * 16 * MiB + SLACK
    assert hub.peak_growth() < bound, (hub.peak_growth() / MiB, bound / MiB)


def test_heartbeat_stats_are_trimmed_so_the_summary_stays_small(procs):
    """Issue: 40 heartbeats of 3 MB made a 121 MB summary. Stats are kept to hub.max_stat_bytes per peer."""
    stat_bytes = 4096
    hub = HubProcess(procs, "trainer.enabled=false", "ppo.enabled=false", f"hub.max_stat_bytes={stat_bytes}")
    try:
        socks = []
        for i in range(40):
            s = dealer(hub.address)
            socks.append(s)
            s.send(wire.encode(hello(f"h{i}")))
            recv_kind(s, wire.Welcome)
            stats = {f"k{j:04d}" + "z" * 700: float(j) for j in range(4000)}  # ~3 MB
            stats.update({"env_steps": 7.0, "wm_version": 0.0})
            s.send(wire.encode(wire.Heartbeat(sender=f"h{i}", time=1.0, stats=stats)))
        time.sleep(2.0)
        a_collector_still_streams(hub.address)
        for s in socks:
            s.close(0)
    finally:
        summary = hub.stop()
    assert summary["caps"]["stats_trimmed"] == 40 * 4000
    assert summary["collector_stats"]["h0"] == {"env_steps": 7.0, "wm_version": 0.0}
    size = len(json.dumps(summary))
    assert size < 41 * stat_bytes + 256 * 1024, size


# ---------------------------------------------------------------------------- receive queue, fetches


def test_a_flood_of_large_frames_is_held_to_the_receive_queue_cap(procs):
    """Issue: the receive queue allowed 10,000 frames of 16 MiB; 60 fast 16 MiB frames added 1.2 GB."""
    recv_q = 16 * MiB
    hub = HubProcess(procs, "trainer.enabled=false", "ppo.enabled=false", f"hub.recv_queue_bytes={recv_q}")
    try:
        s = dealer(hub.address)
        s.send(wire.encode(hello("flood")))
        recv_kind(s, wire.Welcome)
        steps, k = 4096, 300  # ~14 MB of small strings: slow to decode, so frames pile up
        frame = wire.encode(wire.make_segment(
            wire.SegmentHeader(game="g", collector_id="flood", seq=10_000, episode_id=0, step0=0, wm_version=0,
                               llm_version=0, t_start=1.0, t_end=2.0),
            ["o"] * steps, [[str(c) for c in range(k)]] * steps, [0] * steps, [0.0] * steps, [0] * steps, [False] * steps))
        assert 12 * MiB < len(frame) < 16 * MiB
        for _ in range(60):
            s.send(frame, copy=False)
        deadline = time.monotonic() + 120
        rejected = 0
        while rejected < 59 and time.monotonic() < deadline:  # every one answered: the first accepted, then duplicates
            if s.poll(200) and isinstance(msg := wire.decode(s.recv()), wire.Reject):
                rejected += msg.reason == "duplicate_seq"
        assert rejected == 59
        a_collector_still_streams(hub.address)
        s.close(0)
    finally:
        summary = hub.stop()
    assert summary["caps"]["recv_batches_cut"] >= 1, summary["caps"]
    assert summary["segments_accepted"] == 2  # the flood's first frame and the good collector's segment
    # queued (RCVHWM) + one batch + one frame being read + decoding one (several times its bytes)
    bound = 2 * recv_q + 8 * 16 * MiB + SLACK
    assert hub.peak_growth() < bound, (hub.peak_growth() / MiB, bound / MiB)


def test_unread_weight_fetches_are_dropped_not_queued(procs):
    """Issue: 1,000 fetches of 53 bytes, never read, added 438 MB (a 512 KiB chunk queued for each)."""
    pending = 16
    hub = HubProcess(procs, "trainer.enabled=false", "ppo.enabled=false", f"hub.max_pending_fetches={pending}",
                     weights_bytes=4 * MiB)
    try:
        s = dealer(hub.address)
        s.setsockopt(zmq.RCVHWM, 1)
        s.setsockopt(zmq.RCVBUF, 4096)
        s.send(wire.encode(hello("leech")))
        time.sleep(0.5)
        fetch = wire.encode(wire.Fetch(model="wm", version=1, offset=0, length=CHUNK_BYTES))
        for _ in range(1000):
            s.send(fetch)
        time.sleep(5)
        a_collector_still_streams(hub.address)
        s.close(0)
    finally:
        summary = hub.stop()
    assert summary["caps"]["fetch_replies_dropped"] >= 900, summary["caps"]
    bound = 2 * pending * CHUNK_BYTES + 4 * MiB + SLACK  # the queue to the peer, plus the weights themselves
    assert hub.peak_growth() < bound, (hub.peak_growth() / MiB, bound / MiB)


# ---------------------------------------------------------------------------- replay and prompt queue


@pytest.mark.slow
def test_large_valid_segments_are_held_to_the_byte_caps(procs):
    """Issue: the replay was capped in steps, not bytes: 40 valid 15 MB segments added 672 MB to
    the hub (its PPO prompt queue kept them all) and 682 MB to the trainer (its replay)."""
    recv_q, queue_bytes = 16 * MiB, 32 * MiB
    hub = HubProcess(procs, "trainer.enabled=false", f"hub.recv_queue_bytes={recv_q}",
                     f"ppo.queue_capacity_bytes={queue_bytes}")
    try:
        s = dealer(hub.address)
        s.send(wire.encode(hello("big")))
        recv_kind(s, wire.Welcome)
        for seq in range(40):
            s.send(wire.encode(segment("big", seq, steps=15, obs_chars=10**6 - 8, searched=True)))
            time.sleep(0.05)
        deadline = time.monotonic() + 60
        acked = -1
        while acked < 39 and time.monotonic() < deadline:
            if s.poll(200) and isinstance(msg := wire.decode(s.recv()), wire.Credit):
                acked = max(acked, msg.ack)
        assert acked == 39
        s.close(0)
    finally:
        summary = hub.stop()
    assert summary["segments_accepted"] == 40
    queue = summary["ppo"]["queue"]
    assert queue["bytes"] <= queue_bytes + 16 * MiB and queue["evicted_for_bytes"] > 0, queue
    bound = 2 * recv_q + queue_bytes + 8 * 16 * MiB + SLACK
    assert hub.peak_growth() < bound, (hub.peak_growth() / MiB, bound / MiB)


@pytest.mark.slow
def test_the_trainer_holds_a_flood_of_large_segments_to_its_pipe_and_replay_caps(procs):
    """Issue: 40 valid 15 MB segments added 682 MB to the trainer. Now the hub forwards at most
    trainer.pipe_bytes that the trainer has not taken, and its replay keeps trainer.replay_capacity_bytes:
    the trainer's RSS, measured while it trains, grows by no more than those allow."""
    pipe, replay_cap = 64 * MiB, 64 * MiB
    hub = HubProcess(procs, "trainer.enabled=true", "ppo.enabled=false", "checkpoint.enabled=false",
                     f"trainer.pipe_bytes={pipe}", f"trainer.replay_capacity_bytes={replay_cap}",
                     "trainer.min_replay_steps=20", "trainer.max_updates_per_s=0.5", "trainer.log_every=1", "hub.recv_queue_bytes=16777216",
                     "hub.peer_timeout_heartbeats=1000")  # this raw peer sends no heartbeats
    trainer = PeakRSS(hub.trainer_pid())
    try:
        s = dealer(hub.address)
        s.send(wire.encode(hello("big")))
        recv_kind(s, wire.Welcome)

        def send_until_acked(segments: list[wire.Segment], timeout: float) -> None:
            last = segments[-1].header.seq
            for seg in segments:
                s.send(wire.encode(seg))
                time.sleep(0.05)
            deadline, acked = time.monotonic() + timeout, -1
            while acked < last and time.monotonic() < deadline:
                if s.poll(200) and isinstance(msg := wire.decode(s.recv()), wire.Credit):
                    acked = max(acked, msg.ack)
            assert acked == last

        # the baseline: a trainer that has trained on small segments for a while (its model, optimiser
        # and the first batches' buffers are all in memory)
        send_until_acked([segment("big", seq, steps=15, searched=True) for seq in range(8)], timeout=30)
        time.sleep(6.0)
        base = trainer.rebase()
        big = [segment("big", seq, steps=15, obs_chars=10**6 - 8, searched=True) for seq in range(8, 48)]
        frame_bytes = len(wire.encode(big[0]))
        send_until_acked(big, timeout=90)
        time.sleep(10.0)  # it takes them off its pipe, evicts, rebuilds its windows and trains on them
        s.close(0)
    finally:
        trainer.stop()
        summary = hub.stop()
    stats = summary["trainer"]
    assert summary["segments_accepted"] == 48
    assert stats["replay_bytes"] <= replay_cap + 2 * frame_bytes, stats  # the newest segment always stays
    assert stats["replay_evicted_for_bytes"] > 0 and stats["updates"] > 0, stats
    # frames on the pipe not yet taken + the replay + the windows of the last rebuild (they may hold
    # segments evicted since) + a burst being decoded (one frame and its strings)
    bound = pipe + 2 * replay_cap + 4 * frame_bytes + SLACK
    print(f"trainer RSS: base {base / MiB:.0f} MiB, peak growth {trainer.growth() / MiB:.0f} MiB (bound {bound / MiB:.0f} "
          f"MiB); segments {frame_bytes / MiB:.1f} MiB each, {summary['trainer_dropped_for_bytes']} of 40 dropped for the "
          f"trainer's pipe, replay {stats['replay_bytes'] / MiB:.0f} MiB, {stats['updates']:.0f} updates; hub peak growth "
          f"{hub.peak_growth() / MiB:.0f} MiB")
    assert trainer.growth() < bound, (trainer.growth() / MiB, bound / MiB)


def test_the_trainers_replay_is_capped_in_bytes():
    """The trainer's replay: the oldest segments go once the bytes pass trainer.replay_capacity_bytes,
    counted; a segment of one-character candidates counts its Python strings, not only its frame."""
    segs = [segment("r", seq, steps=15, obs_chars=100_000) for seq in range(40)]
    cap = 10 * segment_nbytes(segs[0])
    replay = SegmentReplay(capacity_steps=50_000, capacity_bytes=cap)
    for seg in segs:
        replay.add(seg)
    assert replay.nbytes <= cap and len(replay.segments) == 10
    assert replay.evicted_for_bytes == 30 and replay.evicted_bytes == sum(segment_nbytes(s) for s in segs[:30])
    assert replay.steps == 150 and [s.header.seq for s in replay.segments] == list(range(30, 40))
    tiny = wire.make_segment(segs[0].header, ["o"] * 100, [["a"] * 100] * 100, [0] * 100, [0.0] * 100, [0] * 100,
                             [False] * 100)
    assert segment_nbytes(tiny) > 5 * len(wire.encode(tiny))  # 10,000 strings of ~50 bytes each in memory
    with pytest.raises(ValueError):
        SegmentReplay(capacity_steps=100, capacity_bytes=0)


# ---------------------------------------------------------------------------- log intake


def test_log_intake_caps_sizes_and_attributes_records_to_their_connection(procs):
    """Issue: four 200 MB log messages reached the monitor, and anyone could send lines that
    monitors showed as the hub's. Now records over hub.max_log_bytes are dropped (counted), a
    record claiming the hub's role from the network is dropped (counted), and every peer's record
    names the address it came from."""
    max_log = 64 * 1024
    hub = HubProcess(procs, "trainer.enabled=false", "ppo.enabled=false", f"hub.max_log_bytes={max_log}")
    from pzstream.stream.transport import endpoints_for

    ep = endpoints_for(hub.address)
    mon = CTX.socket(zmq.SUB)
    mon.setsockopt(zmq.LINGER, 0)
    mon.setsockopt(zmq.SUBSCRIBE, b"")
    mon.connect(ep.logs_out)
    pub = CTX.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.connect(ep.logs_in)
    seen: list[wire.Log] = []
    try:
        def record(role: str, message: str) -> list[bytes]:
            rec = wire.Log(role=role, sender="x", level=30, time=time.time(), logger="l", message=message)
            return [f"{role}/x".encode(), wire.encode(rec)]

        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:  # the subscription has to reach the publisher first
            pub.send_multipart(record("collector", "hello from a collector"))
            if mon.poll(200):
                seen.append(wire.decode(mon.recv_multipart()[1]))
        assert seen and seen[0].sender == "x@127.0.0.1" and seen[0].role == "collector", seen
        huge = b"\0" * (200 * 10**6)
        for _ in range(4):
            pub.send_multipart([b"collector/x", huge], copy=False)  # libzmq drops these with the connection
        del huge
        time.sleep(1.0)
        pub.close(0)
        pub = CTX.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.connect(ep.logs_in)
        time.sleep(0.5)
        for _ in range(3):
            pub.send_multipart(record("collector", "y" * (2 * max_log)))  # over the cap: counted here
            pub.send_multipart(record("learner", "hub says: all good"))  # the hub's own role: refused
            pub.send_multipart(record("hub", "hub says: all good"))  # the name monitors show it under: refused
            pub.send_multipart([b"collector/x", b"\xc1 not a record"])
            pub.send_multipart(record("collector", "still heard"))
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            if mon.poll(100):
                frames = mon.recv_multipart()
                seen.append(wire.decode(frames[1]))
                assert len(frames[1]) <= max_log
    finally:
        pub.close(0)
        mon.close(0)
        summary = hub.stop()
    assert [r.message for r in seen[1:] if r.role == "collector"].count("still heard") == 3
    assert not any("all good" in r.message for r in seen)
    assert all(r.sender.endswith("@127.0.0.1") for r in seen if r.role != "learner")
    caps = summary["caps"]
    assert caps["log_records_too_large"] == 3 and caps["log_records_spoofed"] == 6, caps
    assert caps["log_records_malformed"] == 3, caps
    assert hub.peak_growth() < 64 * max_log + SLACK, hub.peak_growth() / MiB


@pytest.mark.parametrize("role", ["learner", "hub", "HUB", " Hub ", "learner/hub", "hub/x", "Learner"])
def test_a_peers_record_claiming_any_of_the_hubs_names_is_refused(role):
    """Issue 21: a record claiming the role ``hub`` reached monitors (only ``learner`` was refused)."""
    from pzstream.stream.transport import attributed_log

    rec = wire.Log(role=role, sender="hub", level=30, time=time.time(), logger="l", message="all good")
    assert attributed_log([f"{role}/hub".encode(), wire.encode(rec)], 64 * 1024) == (None, "log_records_spoofed")
    for fine in ("collector", "prior", "trainer", "hubcap"):  # others pass, attributed to their connection
        rec = wire.Log(role=fine, sender="hub", level=30, time=time.time(), logger="l", message="ok")
        out, why = attributed_log([f"{fine}/hub".encode(), wire.encode(rec)], 64 * 1024)
        assert out is not None and why == "" and wire.decode(out[1]).sender == "hub@local"


def test_the_monitor_prints_a_peers_text_on_lines_of_its_own_record():
    from pzstream.stream.logstream import format_record

    rec = wire.Log(role="collector\x1b[2J", sender="c1@10.0.0.5", level=20, time=float("nan"), logger="l",
                   message="ok\n12:00:00.000 INFO    learner/hub fake line\r")
    lines = format_record(rec).split("\n")
    assert "\x1b" not in lines[0] and "\\x1b[2J" in lines[0] and "c1@10.0.0.5" in lines[0]
    assert lines[1].startswith("    ") and lines[1].endswith("\\r")  # a continuation, never a record of its own


# ---------------------------------------------------------------------------- prior server requests


@pytest.mark.slow
def test_the_prior_server_refuses_oversized_and_overcostly_requests():
    """Issue: one 0.96 MB request held the prior server for 28 s. Requests over
    llm.prior_max_request_bytes are refused before decoding; requests with more roots or
    candidates than its caps are refused before scoring; valid ones are still answered."""
    from pzstream.roles.prior_server import run_prior_server

    address = f"tcp://127.0.0.1:{free_base_port()}"
    cfg = hub_config(f"tcp://127.0.0.1:{free_base_port()}", "llm.prior_max_request_bytes=65536",
                     "llm.prior_max_candidates=512")
    server = LoopThread()
    server.serve(lambda stop: run_prior_server(cfg, address, stop))
    s = dealer(address)
    try:
        def ask(req: wire.ScoreRequest, timeout: float = 60.0):
            s.send(wire.encode(req))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if s.poll(100):
                    msg = wire.decode(s.recv())
                    if isinstance(msg, (wire.ScoreReply, wire.Reject)):
                        return msg
            raise AssertionError("no answer")

        valid = wire.ScoreRequest(request_id=1, prompts=("you are in a room. Action:",), candidates=("north", "south"),
                                  counts=(2,))
        assert isinstance(ask(valid, timeout=120), wire.ScoreReply)  # the model is loaded
        t0 = time.monotonic()
        huge = wire.ScoreRequest(request_id=20, prompts=("p" * 960_000,), candidates=("a",), counts=(1,))
        with pytest.raises(AssertionError, match="no answer"):  # far over the cap: libzmq drops it with the connection
            ask(huge, timeout=2.0)
        t0 = time.monotonic()
        big = wire.ScoreRequest(request_id=2, prompts=("p" * 100_000,), candidates=("a",), counts=(1,))
        assert ask(big).reason == "too_large"
        many = wire.ScoreRequest(request_id=3, prompts=("p",), candidates=tuple(["a"] * 5000), counts=(5000,))
        assert ask(many).reason == "bad_value"
        assert time.monotonic() - t0 < 5.0
        assert isinstance(ask(wire.ScoreRequest(request_id=4, prompts=valid.prompts, candidates=valid.candidates,
                                                counts=valid.counts)), wire.ScoreReply)
    finally:
        s.close(0)
        stats = server.stop()
    assert stats["requests_too_large"] == 1 and stats["bad_requests"] == 2, stats


# ---------------------------------------------------------------------------- the collector's weights client


class FakeHub(FakeHubRouter):
    """Answers fetches with chunks of ``total`` declared bytes (``fetches`` counts them)."""

    def __init__(self, address: str, total: int, chunk_len: int = CHUNK_BYTES):
        super().__init__(address)
        self.total, self.chunk_len, self.fetches = total, chunk_len, 0
        self.start()

    def answer(self, msg: object) -> list[object]:
        if not isinstance(msg, wire.Fetch):
            return []
        self.fetches += 1
        return [wire.Blob(model=msg.model, version=msg.version, offset=msg.offset, total=self.total, sha256="0" * 64,
                          data=random.randbytes(self.chunk_len))]


def test_a_collector_refuses_weights_larger_than_its_cap_before_fetching_them():
    """Issue: a collector buffered weight chunks up to the size the hub declared before checking it.
    Now a notice over wire.max_weights_bytes is refused before any chunk is asked for, and a chunk
    that runs past what was declared is refused as it arrives."""
    address = f"tcp://127.0.0.1:{free_base_port()}"
    declared = 64 * 1024 ** 3
    hub = FakeHub(address, total=declared)
    installed: list[int] = []
    client = WeightsClient({"wm": lambda data, v: installed.append(v)}, who="collector t", max_bytes=8 * MiB)

    async def run() -> None:
        ctx = zmq.asyncio.Context()
        sender = SegmentSender(ctx, address, hello("t"), heartbeat_s=0.5)
        notices = [wire.Weights(model="wm", version=1, uri="hub", sha256="0" * 64, nbytes=declared),
                   wire.Weights(model="wm", version=2, uri="hub", sha256="0" * 64, nbytes=MiB)]

        async def recv() -> wire.Weights:
            if notices:
                return notices.pop(0)
            await anyio.sleep(3600)
            raise AssertionError

        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(sender.run, stop)
            tg.start_soon(client.follow, recv, sender.fetch)
            with anyio.move_on_after(10):
                while client.stats.rejected < 2:
                    await anyio.sleep(0.05)
            stop.set()
            tg.cancel_scope.cancel()
        sender.close()
        ctx.destroy(linger=0)

    import zmq.asyncio

    try:
        anyio.run(run)
    finally:
        hub.close()
    assert client.stats.too_large == 1 and client.stats.rejected == 2 and not installed, client.stats
    assert hub.fetches == 1  # only v2 (1 MiB declared) was fetched: its first chunk says 64 GiB, refused at once
    assert "declares" in client.stats.errors[0] and "notice said" in client.stats.errors[1]
    # a chunk that runs past the declared size is refused as it comes, not after buffering
    asm = BlobAssembler(wire.Weights(model="wm", version=3, uri="hub", sha256="0" * 64, nbytes=1000))
    with pytest.raises(WeightsError, match="runs past"):
        asm.add(wire.Blob(model="wm", version=3, offset=0, total=1000, sha256="0" * 64, data=b"x" * 1001))
    with pytest.raises(WeightsError, match="declares"):
        BlobAssembler(wire.Weights(model="wm", version=4, uri="hub", sha256="", nbytes=2 * MiB), max_bytes=MiB)
