"""Collectors as the hub sees them, and what of their self-chosen names may reach a log."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from pzstream.stream.wire import Hello

LOGGED_ID_CHARS = 64  # a collector id is the peer's own text: cap what a log line repeats


def printable(text: str, limit: int = LOGGED_ID_CHARS) -> str:
    """``text`` safe for a terminal: control characters (ANSI escapes, NUL, newlines) and other
    unprintable code points as ``\\xNN`` / ``\\uNNNN`` escapes, cut to ``limit`` characters
    with the original length said."""
    head = text[:limit]
    safe = head if head.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in head)
    return safe if len(text) <= limit else f"{safe}...({len(text)} chars)"


def seed_of(hello: Hello) -> int | None:
    """The reset seed a collector plays with (its episode k resets with seed + k), if it said one."""
    if hello.seed is not None:
        return hello.seed
    # collectors from before Hello.seed said it as a capability
    for cap in hello.capabilities:
        if cap.startswith("seed:") and cap[5:].lstrip("-").isdigit():
            return int(cap[5:])
    return None


def policy_of(hello: Hello) -> str:
    return next((c.split(":", 1)[1] for c in hello.capabilities if c.startswith("policy:")), "unknown")


@dataclass
class Peer:
    """One collector connection.

    ``last_seq``: the highest seq this hub has answered (accepted, or rejected after the
    segment's credit was checked); ``granted``: the highest seq the peer may send (last
    acknowledgement + window).
    """

    identity: bytes
    hello: Hello
    last_heard: float
    last_seq: int = -1
    granted: int = -1
    accepted: int = 0
    rejected: int = 0
    steps: int = 0
    stats: dict[str, float] = field(default_factory=dict)
    lost: bool = False  # went silent past the timeout
    closed: bool = False  # said goodbye: what it still sends while shutting down is ignored

    @property
    def collector_id(self) -> str:
        return self.hello.collector_id

    @property
    def name(self) -> str:
        """The collector id as a log line may show it."""
        return printable(self.hello.collector_id)

    @cached_property
    def seed(self) -> int | None:
        return seed_of(self.hello)

    @cached_property
    def policy(self) -> str:
        return policy_of(self.hello)

    @property
    def is_reader(self) -> bool:
        """A prior or search server: follows weights, sends no segments, is not a collector."""
        return self.hello.role == "reader"

    @property
    def gone(self) -> bool:
        return self.lost or self.closed
