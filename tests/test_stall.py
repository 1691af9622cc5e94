"""A stall is not a loss (issue 14): the hub stopped with SIGSTOP past the peer timeout, then resumed.

Real processes on loopback: a hub in its own process (tests/timed_hub.py, with its trainer publishing
world-model weights while the hub stands still) and three MCTS collectors that follow those weights.
Then the parts, fast: loss judged on the hub's running clock (pzstream.stream.liveness), handshake
failures that are no refusal, newest-first weights notices, a fetch asked again after a reconnect, and
weights that waited behind newer ones while the hub's loop stood still published once, as the newest.
"""
from __future__ import annotations

import json
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import anyio
import pytest
import zmq
import zmq.asyncio
from support import REPO, FakeHubRouter, HubThread, dealer, free_base_port, hub_config, launch, recv_kind

from pzstream.stream import wire
from pzstream.stream.liveness import LoopClock, excused, loop_stall_s
from pzstream.stream.transport import NoticeSubscriber, SegmentSender, handshake_rejection
from pzstream.stream.weights import BlobAssembler, WeightsStore, latest_on_disk
from pzstream.stream.weights_client import WeightsClient

HEARTBEAT_S = 0.25
TIMEOUT_HEARTBEATS = 16  # the hub declares a peer lost after 4 s of silence (a busy 2-core CI starves a collector 2-3 s)
STOP_S = 10.0  # the hub stands still 2.5 times as long as that
COLLECTORS = ("s0", "s1", "s2")
COMMON = (f"hub.heartbeat_s={HEARTBEAT_S}", f"hub.peer_timeout_heartbeats={TIMEOUT_HEARTBEATS}", "llm.enabled=false",
          "ppo.enabled=false")
WEIGHTS_TROUBLE = re.compile(r"^\S+ (WARNING|ERROR) .*(weights| wm v| llm v)")


def read_accepts(path: Path) -> list[tuple[float, str, int]]:
    """The hub's accept log: (monotonic time, collector id, seq) per accepted segment."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:  # the last line may be half written
            out.append((float(parts[0]), parts[1], int(parts[2])))
    return out


def wait_for(predicate, timeout: float, what: str, hub: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        assert hub.poll() is None, f"the hub exited ({hub.returncode}) while waiting for {what}"
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def installed_versions(log: Path) -> list[int]:
    return [int(v) for v in re.findall(r"wm v(\d+) installed", log.read_text())] if log.exists() else []


@pytest.mark.slow
def test_hub_stopped_past_the_peer_timeout_resumes_without_false_alarms(address, procs, tmp_path):
    accept_log = tmp_path / "accepted.log"
    hub_err = tmp_path / "hub.err"
    hub = subprocess.Popen([sys.executable, str(REPO / "tests" / "timed_hub.py"), str(tmp_path / "run"), str(accept_log),
                            f"hub.address={address}", "hub.report_every_s=1", "trainer.min_replay_steps=20",
                            "trainer.publish_every=5", *COMMON],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=hub_err.open("w"))
    procs.append(hub)
    # collectors start beside the hub (they say hello until it answers): their start-up is most of the wait
    logs = {cid: tmp_path / f"{cid}.err" for cid in COLLECTORS}
    cols = {cid: launch("--role", "collector", "--learner", address, f"collector.id={cid}", f"collector.seed={i}",
                        "collector.segment_steps=5", "search.num_simulations=2", *COMMON, stderr=logs[cid].open("w"))
            for i, cid in enumerate(COLLECTORS)}
    procs.extend(cols.values())
    ready, _, _ = select.select([hub.stdout], [], [], 60)
    assert ready and hub.stdout.readline().strip() == b"READY", hub_err.read_text()[-3000:]

    def seqs_by_collector() -> dict[str, list[int]]:
        out: dict[str, list[int]] = defaultdict(list)
        for _, cid, seq in read_accepts(accept_log):
            out[cid].append(seq)
        return out

    # streaming, and following the trainer's weights, before the stall
    wait_for(lambda: all(len(s) >= 3 for s in seqs_by_collector().values()) and len(seqs_by_collector()) == 3
             and all(installed_versions(logs[c]) for c in COLLECTORS), 90, "3 collectors streaming with trained weights", hub)
    hub.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    published_before = latest_on_disk(tmp_path / "run" / "weights", "wm")[0]  # the run's weights mirror
    time.sleep(STOP_S)
    resumed_at = time.monotonic()
    hub.send_signal(signal.SIGCONT)

    def after_resume() -> dict[str, float]:
        first: dict[str, float] = {}
        for t, cid, _ in read_accepts(accept_log):
            if t >= resumed_at and cid not in first:
                first[cid] = t
        return first

    wait_for(lambda: len(after_resume()) == 3, 30, "every collector's segments accepted after SIGCONT", hub)
    first = after_resume()
    # and each swaps in weights the trainer made while the hub stood still (published after it)
    wait_for(lambda: all(max(installed_versions(logs[c])) > published_before for c in COLLECTORS), 30,
             "every collector on weights published after the stall", hub)
    recovered = time.monotonic() - resumed_at
    time.sleep(1.0)

    results = {}
    for cid, p in cols.items():
        p.send_signal(signal.SIGTERM)
    for cid, p in cols.items():
        out, _ = p.communicate(timeout=30)
        assert p.returncode == 0, logs[cid].read_text()[-3000:]
        results[cid] = json.loads(out.decode().strip().splitlines()[-1])
    hub.send_signal(signal.SIGTERM)
    out, _ = hub.communicate(timeout=60)
    assert hub.returncode == 0, hub_err.read_text()[-3000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])

    # a stall is not a loss
    hub_log = hub_err.read_text()
    assert summary["collectors_lost"] == 0, [line for line in hub_log.splitlines() if " lost " in line]
    for cid in COLLECTORS:
        assert summary["per_collector"][cid]["lost"] is False and summary["per_collector"][cid]["closed"] is True
    # reconnects abandoned during the stall are no handshake failures (the hub runs without CURVE)
    assert summary["connections_rejected"] == {}, summary["connections_rejected"]
    assert summary["segments_rejected"] == 0, summary["rejected_by_reason"]
    # nothing acknowledged is lost, nothing is counted twice, the counts survive the stall
    seqs = seqs_by_collector()
    for cid, res in results.items():
        acked = res["segments_sent"] - res["segments_unsent"]
        assert len(seqs[cid]) == len(set(seqs[cid])), f"{cid}: a segment accepted twice"
        assert set(range(acked)) <= set(seqs[cid]), f"{cid}: an acknowledged segment is not in the hub"
        assert summary["per_collector"][cid]["accepted"] == len(seqs[cid])
        assert res["reconnects"] >= 1  # the collectors did notice the silence
    assert summary["segments_accepted"] == sum(len(s) for s in seqs.values())
    # a replaced version is handled quietly: at most one weights warning per collector
    for cid in COLLECTORS:
        trouble = [line for line in logs[cid].read_text().splitlines() if WEIGHTS_TROUBLE.match(line)]
        assert len(trouble) <= 1, trouble
    print(f"hub stopped {resumed_at - stopped_at:.1f}s (peer timeout {HEARTBEAT_S * TIMEOUT_HEARTBEATS:.1f}s); "
          f"first segment accepted after SIGCONT: " + ", ".join(f"{c} {first[c] - resumed_at:.2f}s" for c in COLLECTORS)
          + f"; all on post-stall weights after {recovered:.1f}s; wm v{published_before} before the stop, "
          f"v{summary['wm_version_published']} at the end; "
          f"{summary['caps'].get('handover_leftovers', 0)} handover leftovers dropped")


# ----------------------------------------------------------------------------- the parts, fast


def test_loop_stall_excuses_only_the_time_the_loop_stood_still():
    assert loop_stall_s(now=10.3, last_tick=10.0, interval_s=0.2) == 0.0  # on time, or one tick late: judged as usual
    assert loop_stall_s(now=18.2, last_tick=10.0, interval_s=0.2) == pytest.approx(7.8)  # stopped 8 s
    # a loop always late still adds at least one interval of silence per tick: a dead peer is still found
    for late in (0.1, 0.5, 3.0, 30.0):
        elapsed = 0.2 + late
        assert elapsed - loop_stall_s(10.0 + elapsed, 10.0, 0.2) >= 0.2
    assert excused(last_heard=10.0, stall_s=7.8, now=18.2) == pytest.approx(17.8)
    assert excused(last_heard=18.1, stall_s=7.8, now=18.2) == 18.2  # never past now
    assert excused(last_heard=5.0, stall_s=2.0, now=18.2) == 7.0  # silent long before the stall: only the stall excused
    clock = LoopClock(interval_s=0.2)
    assert [clock.tick(t) for t in (3.0, 3.2, 3.5, 11.5, 11.7)] == pytest.approx([0.0, 0.0, 0.0, 7.6, 0.0])
    assert clock.stalls == 1 and clock.longest_stall_s == pytest.approx(7.6)


def hello(cid: str) -> bytes:
    return wire.encode(wire.Hello(collector_id=cid, game="tw-default", host="test", pid=1))


def beat(cid: str) -> bytes:
    return wire.encode(wire.Heartbeat(sender=cid, time=time.time(), stats={}))


def test_a_frozen_hub_loop_declares_no_one_lost_but_a_peer_gone_meanwhile_still_is(address):
    """The hub's loop blocked for 2.5 s (its peer timeout is 0.8 s). Both peers fall silent with it; the
    talker speaks again once the hub runs and is not lost, the other never does and is found lost."""
    hub = HubThread(hub_config(address, "hub.peer_timeout_heartbeats=4")).start()
    talker, dying = dealer(address), dealer(address)
    try:
        for sock, cid in ((talker, "talker"), (dying, "dying")):
            sock.send(hello(cid))
            recv_kind(sock, wire.Welcome)
        for _ in range(3):
            talker.send(beat("talker"))
            dying.send(beat("dying"))
            time.sleep(0.1)
        freeze = threading.Thread(target=hub.call, args=(time.sleep, 2.5))  # the loop runs nothing meanwhile
        freeze.start()
        freeze.join()
        resumed = time.monotonic()
        while time.monotonic() < resumed + 2.0:
            talker.send(beat("talker"))
            time.sleep(0.1)
        collectors = hub.status().collectors
        assert not collectors["talker"].lost
        assert collectors["dying"].lost  # silent 2 s on the hub's running clock
    finally:
        talker.close(0)
        dying.close(0)
        summary = hub.stop()
    assert summary["collectors_lost"] == 1
    assert summary["hub_stalls"]["count"] >= 1 and summary["hub_stalls"]["longest_s"] > 1.5


def test_handshake_failures_count_only_security_refusals():
    assert handshake_rejection(zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400) == "curve_auth"
    assert handshake_rejection(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) == "handshake_failed"
    assert handshake_rejection(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC) == "handshake_failed"
    assert handshake_rejection(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 104) is None  # hung up mid-handshake
    assert handshake_rejection(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.PROTOCOL_ERROR_ZMTP_UNEXPECTED_COMMAND) is None


def zmtp_greeting(mechanism: bytes) -> bytes:
    """The 64-byte ZMTP 3.0 greeting of a client that speaks ``mechanism`` (ZMTP 3.0, section Greeting)."""
    return b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, 0]) + mechanism.ljust(20, b"\x00") + b"\x00" + b"\x00" * 31


def test_connections_abandoned_mid_handshake_are_not_counted_as_rejected(address, caplog):
    """What a collector reconnecting to a stopped hub leaves behind: connections the hub accepts late,
    already closed by the peer. A plain hub counts none of them; a client asking for CURVE is still
    counted (a raw greeting that stays connected: the hub, not a racing client, finds the mismatch)."""
    caplog.set_level(logging.DEBUG, logger="pzstream.transport")
    hub = HubThread(hub_config(address)).start()
    host, port = address[len("tcp://"):].rsplit(":", 1)
    try:
        for _ in range(5):
            with socket.create_connection((host, int(port))) as abandoned:
                abandoned.sendall(zmtp_greeting(b"NULL")[:10])  # as far as a collector gets with a stopped hub
        deadline = time.monotonic() + 10
        while sum("without a refusal" in r.getMessage() for r in caplog.records) < 5:  # the hub saw all five fail
            assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
            time.sleep(0.05)
        assert hub.status().connections_rejected == {}
        with socket.create_connection((host, int(port))) as curve_client:
            curve_client.sendall(zmtp_greeting(b"CURVE"))
            hub.wait_for(lambda h: h.status().connections_rejected.get("handshake_failed", 0) >= 1, timeout=10,
                         what=f"the CURVE client refused by the plain hub {[r.getMessage() for r in caplog.records]}")
    finally:
        summary = hub.stop()
    assert summary["connections_rejected"] == {"handshake_failed": 1}, summary["connections_rejected"]


def test_notice_subscriber_returns_the_newest_queued_notice_per_model():
    port = free_base_port()
    ctx = zmq.asyncio.Context()
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"tcp://127.0.0.1:{port}")
    sub = NoticeSubscriber(ctx, f"tcp://127.0.0.1:{port}")

    def notice(model: str, version: int) -> wire.Weights:
        return wire.Weights(model=model, version=version, uri="hub", sha256="0" * 64, nbytes=10)

    async def main() -> list[tuple[str, int]]:
        with anyio.fail_after(10):
            while True:  # PUB/SUB: wait until the subscription has reached the publisher
                pub.send(wire.encode(notice("probe", 0)))
                with anyio.move_on_after(0.1):
                    await sub.recv()
                    break
        for v in range(1, 6):  # a burst, as a hub resuming after a stall publishes it
            pub.send(wire.encode(notice("wm", v)))
        pub.send(wire.encode(notice("llm", 1)))
        pub.send(wire.encode(notice("wm", 3)))  # an older one repeated late is no news either
        await anyio.sleep(0.3)
        with anyio.fail_after(5):
            return [((n := await sub.recv()).model, n.version) for _ in range(2)]

    try:
        got = anyio.run(main)
    finally:
        sub.close()
        pub.close(0)
        ctx.destroy(0)
    assert sorted(got) == [("llm", 1), ("wm", 5)]
    assert sub.superseded == 4


def test_weights_replaced_before_the_fetch_are_counted_quietly_and_the_newest_installed(caplog):
    store = WeightsStore(keep=1)
    old = store.put("wm", 1, b"one" * 100)
    new = store.put("wm", 2, b"two" * 100)  # v1 is gone from the store now
    installed: list[int] = []
    client = WeightsClient({"wm": lambda data, v: installed.append(v)}, who="collector t")

    async def fetch(note: wire.Weights) -> bytes:
        asm = BlobAssembler(note)
        while not asm.done:
            asm.add(store.chunk(asm.next_request()))
        return asm.result()

    async def main() -> None:
        notes = [old, old, new]

        async def recv() -> wire.Weights:
            if not notes:
                await anyio.sleep_forever()
            return notes.pop(0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(client.follow, recv, fetch)
            with anyio.fail_after(5):
                while not installed:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()

    with caplog.at_level("DEBUG", logger="pzstream.weights"):
        anyio.run(main)
    assert installed == [2]
    assert client.stats.gone == 1 and client.stats.rejected == 0 and client.stats.errors == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_fetch_that_timed_out_is_tried_again_when_the_hub_repeats_its_notice():
    store = WeightsStore()
    note = store.put("wm", 1, b"one" * 100)
    installed: list[int] = []
    client = WeightsClient({"wm": lambda data, v: installed.append(v)}, who="collector t")
    calls = []

    async def fetch(n: wire.Weights) -> bytes:
        calls.append(n.version)
        if len(calls) == 1:
            raise TimeoutError  # the hub stood still through the whole chunk timeout
        return store.latest("wm").data

    async def main() -> None:
        notes = [note, note]  # the hub repeats its newest notice every heartbeat

        async def recv() -> wire.Weights:
            if not notes:
                await anyio.sleep_forever()
            return notes.pop(0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(client.follow, recv, fetch)
            with anyio.fail_after(5):
                while not installed:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert calls == [1, 1] and installed == [1]
    assert client.stats.timeouts == 1 and client.stats.rejected == 0


class SilentOnceHub(FakeHubRouter):
    """Welcomes, then leaves the first fetch unanswered and falls silent (as a stopped hub does)
    until the collector reconnects; from then on it answers fetches from ``store``."""

    def __init__(self, address: str, store: WeightsStore):
        super().__init__(address, hub_id="silent-once", heartbeat_s=0.2, handover=True)
        self.store, self.fetches = store, 0
        self.quiet = threading.Event()  # set: heartbeats go unanswered
        self.start()

    def answer(self, msg: object) -> list[object]:
        if isinstance(msg, wire.Fetch):
            self.fetches += 1
            return [self.store.chunk(msg)] if self.hellos > 1 else []
        if isinstance(msg, wire.Heartbeat) and self.fetches == 0 and not self.quiet.is_set():
            return [wire.Heartbeat(sender="hub", time=time.time(), stats={})]
        return []


def test_a_fetch_lost_with_its_connection_is_asked_again_after_the_reconnect():
    address = f"tcp://127.0.0.1:{free_base_port()}"
    store = WeightsStore()
    note = store.put("wm", 1, os.urandom(300_000))  # more than one chunk
    hub = SilentOnceHub(address, store)

    async def main() -> tuple[bytes, float, int]:
        ctx = zmq.asyncio.Context()
        sender = SegmentSender(ctx, address, wire.Hello(collector_id="f", game="g", host="h", pid=1), heartbeat_s=0.2,
                               timeout_heartbeats=5)
        stop = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(sender.run, stop)
                with anyio.fail_after(5):
                    while sender.welcome is None:
                        await anyio.sleep(0.02)
                t0 = time.monotonic()
                data = await sender.fetch(note, chunk_timeout_s=10.0)
                took = time.monotonic() - t0
                stop.set()
                tg.cancel_scope.cancel()
        finally:
            sender.close()
            ctx.destroy(linger=0)
        return data, took, sender.stats.reconnects

    try:
        data, took, reconnects = anyio.run(main)
    finally:
        hub.close()
    assert data == store.latest("wm").data
    assert reconnects >= 1 and hub.hellos >= 2
    assert took < 5.0, "asked again on the new connection, not after the 10 s chunk timeout"


def test_a_collector_whose_own_loop_stood_still_does_not_reconnect():
    """The collector's loop blocked for 2 s (its timeout for the hub is 1 s) while the hub, by chance,
    said nothing: that silence was never heard, so it is no reason to reconnect."""
    address = f"tcp://127.0.0.1:{free_base_port()}"
    hub = SilentOnceHub(address, WeightsStore())

    async def main() -> int:
        ctx = zmq.asyncio.Context()
        sender = SegmentSender(ctx, address, wire.Hello(collector_id="z", game="g", host="h", pid=1), heartbeat_s=0.2,
                               timeout_heartbeats=5)
        stop = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(sender.run, stop)
                with anyio.fail_after(5):
                    while sender.welcome is None:
                        await anyio.sleep(0.02)
                await anyio.sleep(0.5)
                hub.quiet.set()
                time.sleep(2.0)  # this process's loop stands still (as under SIGSTOP, or starved of CPU)
                hub.quiet.clear()
                await anyio.sleep(1.5)
                stop.set()
                tg.cancel_scope.cancel()
        finally:
            sender.close()
            ctx.destroy(linger=0)
        return sender.stats.reconnects

    try:
        assert anyio.run(main) == 0
    finally:
        hub.close()


# ----------------------------------------------------------------------------- weights waiting after a stall


def test_only_the_newest_waiting_weights_of_each_model_are_kept():
    from pzstream.hub.supervisor import newest_weights_only
    from pzstream.stream.internal import NewWeights, Taken, TrainerStats

    msgs = [NewWeights("wm", b"1"), Taken(10), NewWeights("llm", b"a"), NewWeights("wm", b"2"),
            TrainerStats({"updates": 5.0}), NewWeights("wm", b"3"), Taken(20)]
    kept, skipped = newest_weights_only(msgs)
    assert kept == [Taken(10), NewWeights("llm", b"a"), TrainerStats({"updates": 5.0}), NewWeights("wm", b"3"), Taken(20)]
    assert skipped == 2
    assert newest_weights_only([]) == ([], 0)
    alone = [Taken(1), NewWeights("wm", b"x")]
    assert newest_weights_only(alone) == (alone, 0)


def backlog_payload(i: int) -> bytes:
    return i.to_bytes(4, "big") * 65536  # 256 KiB, distinct per weights


def _backlog_trainer(inbox: str, outbox: str, go: str, n: int) -> None:
    """A trainer that says it is ready, waits for the file ``go``, then sends ``n`` world-model weights
    at once (as a trainer does while the hub's loop stands still) and waits for Stop."""
    from pzstream.roles.lifecycle import die_with_parent
    from pzstream.stream.internal import HelperChannel, NewWeights, Stop, WorkerReady

    die_with_parent()
    channel = HelperChannel(inbox, outbox, linger_ms=2000)
    channel.send(WorkerReady(runtime="trainer", describe="backlog"))
    while not os.path.exists(go):
        time.sleep(0.01)
    for i in range(n):
        channel.send(NewWeights(model="wm", payload=backlog_payload(i)))
    while not isinstance(channel.receive(), Stop):
        channel.wait(100)
    channel.close()


def test_a_backlog_of_weights_is_published_once_as_its_newest(address, tmp_path):
    """The hub's loop stood still while its trainer sent 12 weights: one version is published (the
    newest bytes, fetchable), the 11 it replaced are counted, and the numbering goes on from it."""
    import multiprocessing as mp

    n, go = 12, tmp_path / "go"

    def start(inbox: str, outbox: str) -> mp.process.BaseProcess:
        proc = mp.get_context("spawn").Process(target=_backlog_trainer, args=(inbox, outbox, str(go), n), daemon=True)
        proc.start()
        return proc

    hub = HubThread(hub_config(address), helpers={"trainer": start}).start()
    try:
        hub.wait_for(lambda h: h.call(lambda: h.hub.trainer.attached), timeout=60, what="the trainer ready")
        frozen = threading.Event()

        def freeze() -> None:
            frozen.set()
            time.sleep(2.0)  # the loop runs nothing meanwhile; libzmq still takes the messages in

        stall = threading.Thread(target=hub.call, args=(freeze,))
        stall.start()
        assert frozen.wait(10)
        go.touch()
        stall.join()
        hub.wait_for(lambda h: h.status().wm_version >= 1, timeout=10, what="weights published")
        time.sleep(0.5)  # room for a second publish, were there one
        assert hub.status().wm_version == 1
        stored = hub.call(hub.hub.weights.latest, "wm")
        assert stored.version == 1 and stored.data == backlog_payload(n - 1)
        assert hub.call(hub.hub.weights.chunk, wire.Fetch(model="wm", version=1, offset=0, length=1 << 20)).data \
            == backlog_payload(n - 1)
        assert hub.call(hub.hub.publish, "wm", b"next") == 2  # the numbering goes on without a gap
    finally:
        summary = hub.stop()
    assert summary["trainer"]["weights_coalesced"] == n - 1, summary["trainer"]
    assert summary["wm_version_published"] == 2
