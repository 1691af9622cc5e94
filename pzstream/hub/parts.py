"""What ingest hands its parts: each accepted segment, once, in arrival order.

A part is any object with ``on_segment(AcceptedSegment)``. It runs on the hub's event loop
inside ingest's batch, so it must not block: queue, count, forward without waiting.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import zmq

from pzstream.stream.wire import Segment


@dataclass(frozen=True)
class AcceptedSegment:
    """One segment ingest has validated and counted.

    data: the frame as received, bytes or an uncopied ``zmq.Frame`` (forwarded as it is);
    seed: the reset seed its collector plays with (episode k resets with seed + k), if known.
    """

    segment: Segment
    data: bytes | zmq.Frame
    seed: int | None
    policy: str


class SegmentPart(Protocol):
    def on_segment(self, accepted: AcceptedSegment) -> None: ...
