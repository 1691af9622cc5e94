"""Hub ingest rate against a plain pyzmq PULL loop, with 4 sender processes.

    python bench/transport.py [--quick] [--senders 4] [--seconds 10]

Both phases push the same pre-encoded segment bytes (50 steps, ~600-character observations,
20 candidates per step, ~60 KB; built by bench/wire.py) from sender processes over tcp loopback:

- hub:   the real LearnerHub with only the parts on the ingest path: ROUTER, decode and full
         validation, duplicate / credit / version checks, counters, credits; the world-model
         trainer link forwarding every segment to a helper process that drains the pipe (no
         training); the PPO prompt queue (episode tracking, queueing; no PPO worker, so nothing
         fires); return tracking. Senders speak the real protocol (hello, credit window); each
         segment's seq is patched into a fixed-width slot of the pre-encoded bytes, so senders
         spend no time encoding.
- plain: a PULL socket in a tight ``recv()`` loop fed by PUSH senders: no decode, no checks.

Per-segment costs, as CPU time of the hub's thread during the hub run (robust to other
processes taking the core): decode + validation, each part's ``on_segment``, and the rest
(ingest's checks and counters, socket receive and credit replies). Rates are counted over a window after a warm-up.
The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import shutil
import struct
import tempfile
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
import msgpack  # noqa: E402
import zmq  # noqa: E402

from pzstream.stream import wire  # noqa: E402
from pzstream.config import load_config  # noqa: E402
from pzstream.stream.transport import free_base_port  # noqa: E402

SEQ_SLOT = 0x7FFF_FFF0  # packs as msgpack uint32 (0xce + 4 bytes): a fixed-width slot to patch


def _bench_wire():
    spec = importlib.util.spec_from_file_location("bench_wire", ROOT / "bench" / "wire.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def template(collector_id: str) -> tuple[bytes, int]:
    """Encoded segment with a patchable seq, and the offset of the seq's 4 bytes."""
    seg = _bench_wire().build_segment()
    from dataclasses import replace

    # versions 0: the hub refuses a version it never published
    seg = replace(seg, header=replace(seg.header, collector_id=collector_id, seq=SEQ_SLOT, wm_version=0, llm_version=0))
    data = wire.encode(seg)
    marker = b"\xa3seq\xce" + struct.pack(">I", SEQ_SLOT)
    at = data.index(marker) + len(marker) - 4
    return data, at


def hub_sender(address: str, index: int, seconds: float) -> None:
    cid = f"bench-{index}"
    data, at = template(cid)
    buf = bytearray(data)
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(address)
    s.send(wire.encode(wire.Hello(collector_id=cid, game="zork1.z5", host="bench", pid=os.getpid())))
    ack, window, seq = -1, 0, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        while seq <= ack + window:
            struct.pack_into(">I", buf, at, seq)
            s.send(bytes(buf), copy=True)
            seq += 1
        if s.poll(100):
            while True:
                try:
                    msg = wire.decode(s.recv(zmq.NOBLOCK))
                except zmq.Again:
                    break
                if isinstance(msg, wire.Credit):
                    ack, window = max(ack, msg.ack), msg.n
    s.close(0)
    ctx.term()


def plain_sender(address: str, index: int, seconds: float) -> None:
    data, _ = template(f"bench-{index}")
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(address)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(64):
            try:
                s.send(data, flags=zmq.NOBLOCK)
            except zmq.Again:
                time.sleep(0.0005)
                break
    s.close(0)
    ctx.term()


def start_senders(target, address: str, n: int, seconds: float) -> list[mp.Process]:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=target, args=(address, i, seconds), daemon=True) for i in range(n)]
    for p in procs:
        p.start()
    return procs


def measure_plain(address: str, senders: int, warmup: float, window: float) -> float:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.bind(address)
    procs = start_senders(plain_sender, address, senders, warmup + window + 8)
    pull.recv()  # wait for the senders to be up
    t_end = time.monotonic() + warmup
    while time.monotonic() < t_end:
        pull.recv()
    n, t0 = 0, time.monotonic()
    t_end = t0 + window
    while True:
        pull.recv()
        n += 1
        if n % 64 == 0 and time.monotonic() >= t_end:
            break
    rate = n / (time.monotonic() - t0)
    for p in procs:
        p.terminate()
        p.join(5)
    pull.close(0)
    ctx.term()
    return rate


def drain(inbox: str, outbox: str) -> None:
    """The trainer's end of the hub's pipe, reading and discarding: what forwarding costs the hub
    without a trainer competing for the CPU."""
    from pzstream.stream import internal

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(inbox)
    push = ctx.socket(zmq.PUSH)  # the hub forwards segments once its trainer says it is ready
    push.connect(outbox)
    push.send_multipart(internal.encode(internal.WorkerReady(runtime="drain", describe="bench drain")))
    parent = os.getppid()
    try:
        while os.getppid() == parent:
            if not pull.poll(500):
                continue
            frames = pull.recv_multipart(copy=False)
            if len(frames) == 1 and isinstance(internal.decode([f.bytes for f in frames]), internal.Stop):
                return
    finally:
        pull.close(0)
        push.close(0)
        ctx.term()


def start_drain(inbox: str, outbox: str) -> mp.process.BaseProcess:
    proc = mp.get_context("spawn").Process(target=drain, args=(inbox, outbox), daemon=True)
    proc.start()
    return proc


class TimedPart:
    """A hub part with the CPU time of its ``on_segment`` summed (thread CPU time: on a shared
    machine wall time would count the moments other processes hold the core)."""

    def __init__(self, name: str, part) -> None:
        self.name, self.part, self.seconds, self.calls = name, part, 0.0, 0

    def on_segment(self, accepted) -> None:
        t0 = time.thread_time()
        self.part.on_segment(accepted)
        self.seconds += time.thread_time() - t0
        self.calls += 1

    @property
    def us(self) -> float:
        return 1e6 * self.seconds / max(self.calls, 1)


class TimedDecode:
    """``pzstream.stream.wire`` as the hub's ingest sees it, with the CPU time of ``decode`` summed."""

    def __init__(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def __getattr__(self, name: str):
        return getattr(wire, name)

    def decode(self, data, *args):
        t0 = time.thread_time()
        try:
            return wire.decode(data, *args)
        finally:
            self.seconds += time.thread_time() - t0
            self.calls += 1


def hub_config(address: str):
    return load_config(None, [f"hub.address={address}", "hub.credit_window=64", "hub.report_every_s=3600",
                              "run.log_level=WARNING", "trainer.tensorboard=false", "llm.enabled=true",
                              "ppo.enabled=true"])


def measure_hub(address: str, senders: int, warmup: float, window: float, run_dir: Path) -> tuple[float, dict, dict]:
    from pzstream.hub.learner import LearnerHub

    hub = LearnerHub(hub_config(address), run_dir=run_dir, helpers={"trainer": start_drain})
    names = {"TrainerLink": "trainer link", "ReturnTracker": "return tracking", "PPOEpisodes": "prompt queue"}
    timed = [TimedPart(names.get(type(p).__name__, type(p).__name__), p) for p in hub.ingest.parts]
    hub.ingest.parts = list(timed)
    import pzstream.hub.ingest as ingest_module

    decode = TimedDecode()
    ingest_module.wire = decode  # times the hub's own decode calls, on the hub's own data
    timed.insert(0, decode)  # type: ignore[arg-type]
    result: dict = {}

    async def main() -> None:
        stop = anyio.Event()

        async def drive() -> None:
            await hub.ready.wait()
            procs = start_senders(hub_sender, address, senders, warmup + window + 8)
            while hub.status().segments_accepted == 0:
                await anyio.sleep(0.05)
            await anyio.sleep(warmup)
            for t in timed:
                t.seconds, t.calls = 0.0, 0
            n0, t0, cpu0 = hub.status().segments_accepted, time.monotonic(), time.thread_time()
            await anyio.sleep(window)
            n = hub.status().segments_accepted - n0
            result["rate"] = n / (time.monotonic() - t0)
            # this task runs on the hub's event loop thread: its CPU time is the hub's
            result["parts_us"] = {"hub thread, all": round(1e6 * (time.thread_time() - cpu0) / max(n, 1), 1),
                                  "decode + validation": round(1e6 * decode.seconds / max(decode.calls, 1), 1),
                                  **{t.name: round(t.us, 1) for t in timed[1:]}}
            stop.set()
            for p in procs:
                p.terminate()
                p.join(5)

        async with anyio.create_task_group() as tg:
            tg.start_soon(drive)
            result["summary"] = await hub.serve(stop)

    try:
        anyio.run(main)
    finally:
        ingest_module.wire = wire
    return result["rate"], result["summary"], result["parts_us"]


def decode_us(data: bytes, n: int = 400) -> float:
    """Decode + full validation of one segment, alone in this process."""
    from pzstream.stream.wire import WireLimits

    w = hub_config("tcp://127.0.0.1:1").wire
    limits = WireLimits(max_message_bytes=w.max_message_bytes, max_array_elements=w.max_array_elements,
                        max_steps=w.max_steps, max_candidates_per_step=w.max_candidates_per_step)
    t0 = time.thread_time()
    for _ in range(n):
        wire.decode(data, limits)
    return 1e6 * (time.thread_time() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short windows (under a minute)")
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=None, help="measurement window per phase")
    ap.add_argument("--rounds", type=int, default=None, help="alternating hub/plain rounds (median taken)")
    args = ap.parse_args()
    window = args.seconds or (4.0 if args.quick else 10.0)
    rounds = args.rounds or (2 if args.quick else 3)
    warmup = 1.0
    import logging

    logging.basicConfig(level=logging.WARNING)

    data, _ = template("bench-0")
    hub_rates, plain_rates = [], []
    summary: dict = {}
    parts: list[dict] = []
    run_dir = Path(tempfile.mkdtemp(prefix="pzstream-bench-transport-"))
    for r in range(rounds):  # alternate so drift on a shared machine hits both alike
        rate, summary, parts_us = measure_hub(f"tcp://127.0.0.1:{free_base_port()}", args.senders, warmup, window, run_dir)
        hub_rates.append(rate)
        parts.append(parts_us)
        plain_rates.append(measure_plain(f"tcp://127.0.0.1:{free_base_port()}", args.senders, warmup, window))
        print(f"round {r + 1}/{rounds}: hub {hub_rates[-1]:,.0f} seg/s, plain {plain_rates[-1]:,.0f} seg/s", file=sys.stderr)
    shutil.rmtree(run_dir, ignore_errors=True)
    hub_rate = sorted(hub_rates)[len(hub_rates) // 2]
    plain_rate = sorted(plain_rates)[len(plain_rates) // 2]
    parts_us = {name: sorted(p[name] for p in parts)[len(parts) // 2] for name in parts[0]}
    total = parts_us.pop("hub thread, all")
    cost = dict(parts_us)
    cost["ingest core + sockets"] = round(total - sum(cost.values()), 1)
    cost["hub thread, all"] = total
    alone = round(decode_us(data), 1)
    print(f"segment: {len(data)} bytes; {args.senders} sender processes; {rounds} rounds of {window:.0f} s; median")
    print(f"{'':8}{'segments/s':>12}{'MB/s':>10}")
    print(f"{'hub':8}{hub_rate:12,.0f}{hub_rate * len(data) / 1e6:10,.1f}")
    print(f"{'plain':8}{plain_rate:12,.0f}{plain_rate * len(data) / 1e6:10,.1f}")
    print(f"ingest ratio (hub / plain): {hub_rate / plain_rate:.2f}; hub rejected: {summary.get('segments_rejected')}; "
          f"trainer link dropped: {summary.get('trainer_dropped')}")
    print(f"\nper-segment CPU time of the hub's thread, in us (1 / hub rate = {1e6 / hub_rate:,.0f} us of wall time)")
    for name, us in cost.items():
        print(f"  {name:24}{us:8,.1f}")
    print(f"  (decode + validation of the same bytes over and over, alone: {alone:,.1f})")
    print(json.dumps({
        "per_segment_us": cost, "decode_alone_us": alone, "trainer_dropped": summary.get("trainer_dropped"),
        "prompt_queue": summary.get("ppo", {}).get("queue"),
        "hub_segments_per_s": round(hub_rate, 1), "plain_segments_per_s": round(plain_rate, 1),
        "ingest_ratio": round(hub_rate / plain_rate, 3), "segment_bytes": len(data), "senders": args.senders,
        "rounds": rounds, "window_s": window, "hub_rejected": summary.get("segments_rejected"),
        "hub_rates": [round(x) for x in hub_rates], "plain_rates": [round(x) for x in plain_rates],
        "cpus": os.cpu_count(), "python": platform.python_version(), "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(), "msgpack": ".".join(map(str, msgpack.version)),
    }))


if __name__ == "__main__":
    main()
