"""The live log stream: every role publishes its records; monitors follow them.

The hub's own records (role ``learner``) reach its relay inside its process; every other record
comes through the network intake and is shown with the address it came from
(``collector/c1@127.0.0.1``): no peer can print a line as the hub's, or as another line.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from typing import TextIO

import anyio
import zmq
import zmq.asyncio

from pzstream.stream.text import printable
from pzstream.stream.transport import HUB_LOG_ROLE, HUB_OWN_LOGS, CurveKeys, LogSubscriber, ZmqLogHandler, endpoints_for
from pzstream.stream.wire import Log

LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR}


def local_address(address: str) -> str:
    """A bind address such as tcp://0.0.0.0:P or tcp://*:P, as the same host connects to it."""
    for wildcard in ("tcp://*:", "tcp://0.0.0.0:"):
        if address.startswith(wildcard):
            return "tcp://127.0.0.1:" + address[len(wildcard):]
    return address


def setup_logging(role: str, sender: str, level: str, hub_address: str | None,
                  curve: CurveKeys | None = None, stream: TextIO = sys.stderr) -> ZmqLogHandler | None:
    """Log to ``stream`` and, when a hub address is known, to the hub's live log stream."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(LEVELS[level])
    console = logging.StreamHandler(stream)
    console.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)-7s {role}/{sender} %(message)s", "%H:%M:%S"))
    root.addHandler(console)
    if hub_address is None:
        return None
    if role == HUB_LOG_ROLE:  # the hub itself: straight to its relay, which trusts only this path
        handler = ZmqLogHandler(HUB_OWN_LOGS, role, sender, ctx=zmq.Context.instance())
    else:
        handler = ZmqLogHandler(local_address(endpoints_for(hub_address).logs_in), role, sender, curve)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    return handler


def setup_helper_logging(role: str, sender: str, level: str, logs_in: str | None) -> None:
    """Logging of a process the hub started (trainer, PPO worker): stderr, and the hub's log
    intake at ``logs_in`` (a local address) when given."""
    setup_logging(role, sender, level, None)
    if logs_in:
        handler = ZmqLogHandler(logs_in, role, sender)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logging.getLogger().addHandler(handler)


MAX_SHOWN_LINE_CHARS = 8192  # one line of a record as a monitor prints it


def shown_text(text: str, limit: int = MAX_SHOWN_LINE_CHARS) -> str:
    """A record's text for a terminal: control characters escaped (no ANSI sequences, no carriage
    returns), and each further line indented, so a record cannot print a line that looks like another record."""
    return "\n    ".join(printable(line, limit) for line in text.split("\n"))


def format_record(rec: Log) -> str:
    t = rec.time if math.isfinite(rec.time) and 0 <= rec.time < 1e11 else 0.0  # a peer's clock may say anything
    stamp = time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
    return f"{stamp} {printable(logging.getLevelName(rec.level), 16):<7} {printable(rec.role, 32)}/{printable(rec.sender, 128)} {shown_text(rec.message)}"


async def run_monitor(hub_address: str, stop: anyio.Event, roles: tuple[str, ...] = (), level: str = "INFO",
                      curve: CurveKeys | None = None, out: TextIO = sys.stdout, max_records: int | None = None) -> int:
    """Print the hub's live log stream, filtered by role (on the wire) and level (here)."""
    ctx = zmq.asyncio.Context()
    sub = LogSubscriber(ctx, local_address(endpoints_for(hub_address).logs_out), roles, curve)
    floor = LEVELS[level]
    shown = 0
    try:
        async with anyio.create_task_group() as tg:
            async def until_stop() -> None:
                await stop.wait()
                tg.cancel_scope.cancel()
            tg.start_soon(until_stop)
            while max_records is None or shown < max_records:
                rec = await sub.recv()
                if rec.level >= floor:
                    print(format_record(rec), file=out, flush=True)
                    shown += 1
            tg.cancel_scope.cancel()
    finally:
        sub.close()
        ctx.destroy(linger=0)
    return shown
