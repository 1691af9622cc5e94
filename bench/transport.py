"""Hub ingest rate against a plain pyzmq PULL loop, with 4 sender processes.

    python bench/transport.py [--quick] [--senders 4] [--seconds 10]

Both phases push the same pre-encoded segment bytes (50 steps, ~600-character observations,
20 candidates per step, ~60 KB; built by bench/wire.py) from sender processes over tcp loopback:

- hub:   the real LearnerHub (ROUTER, decode, validate, duplicate check, replay store, counters,
         credits) fed by DEALER senders that speak the real protocol (hello, credit window). Each
         segment's seq is patched into a fixed-width slot of the pre-encoded bytes, so senders spend
         no time encoding.
- plain: a PULL socket in a tight ``recv()`` loop fed by PUSH senders: no decode, no checks.

Rates are counted over a window after a warm-up. The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import struct
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

    seg = replace(seg, header=replace(seg.header, collector_id=collector_id, seq=SEQ_SLOT))
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


def measure_hub(address: str, senders: int, warmup: float, window: float) -> tuple[float, dict]:
    from pzstream.hub.ingest import LearnerHub

    cfg = load_config(None, [f"hub.address={address}", "hub.credit_window=64", "hub.report_every_s=3600",
                             "hub.replay_capacity_steps=100000", "run.log_level=WARNING"])
    hub = LearnerHub(cfg)
    result: dict = {}

    async def main() -> None:
        stop = anyio.Event()

        async def drive() -> None:
            await hub.ready.wait()
            procs = start_senders(hub_sender, address, senders, warmup + window + 8)
            while hub.counters.accepted == 0:
                await anyio.sleep(0.05)
            await anyio.sleep(warmup)
            n0, t0 = hub.counters.accepted, time.monotonic()
            await anyio.sleep(window)
            result["rate"] = (hub.counters.accepted - n0) / (time.monotonic() - t0)
            stop.set()
            for p in procs:
                p.terminate()
                p.join(5)

        async with anyio.create_task_group() as tg:
            tg.start_soon(drive)
            result["summary"] = await hub.serve(stop)

    anyio.run(main)
    return result["rate"], result["summary"]


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
    for r in range(rounds):  # alternate so drift on a shared machine hits both alike
        rate, summary = measure_hub(f"tcp://127.0.0.1:{free_base_port()}", args.senders, warmup, window)
        hub_rates.append(rate)
        plain_rates.append(measure_plain(f"tcp://127.0.0.1:{free_base_port()}", args.senders, warmup, window))
        print(f"round {r + 1}/{rounds}: hub {hub_rates[-1]:,.0f} seg/s, plain {plain_rates[-1]:,.0f} seg/s", file=sys.stderr)
    hub_rate = sorted(hub_rates)[len(hub_rates) // 2]
    plain_rate = sorted(plain_rates)[len(plain_rates) // 2]
    print(f"segment: {len(data)} bytes; {args.senders} sender processes; {rounds} rounds of {window:.0f} s; median")
    print(f"{'':8}{'segments/s':>12}{'MB/s':>10}")
    print(f"{'hub':8}{hub_rate:12,.0f}{hub_rate * len(data) / 1e6:10,.1f}")
    print(f"{'plain':8}{plain_rate:12,.0f}{plain_rate * len(data) / 1e6:10,.1f}")
    print(f"ingest ratio (hub / plain): {hub_rate / plain_rate:.2f}; hub rejected: {summary.get('segments_rejected')}")
    print(json.dumps({
        "hub_segments_per_s": round(hub_rate, 1), "plain_segments_per_s": round(plain_rate, 1),
        "ingest_ratio": round(hub_rate / plain_rate, 3), "segment_bytes": len(data), "senders": args.senders,
        "rounds": rounds, "window_s": window, "hub_rejected": summary.get("segments_rejected"),
        "hub_rates": [round(x) for x in hub_rates], "plain_rates": [round(x) for x in plain_rates],
        "cpus": os.cpu_count(), "python": platform.python_version(), "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(), "msgpack": ".".join(map(str, msgpack.version)),
    }))


if __name__ == "__main__":
    main()
