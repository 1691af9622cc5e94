"""Typed messages between the hub and its helper processes (world-model trainer, PPO worker).

Both ends are this program, on a local ipc channel, so these are not checked like the wire
protocol: an undecodable message is a bug and raises ``InternalError``. One message is one
ZeroMQ multipart message: frame 0 is a msgpack map ``{"kind": ..., fields...}``; a message
with a ``payload`` (weights bytes, a segment frame) carries it as frame 1, never copied into
the map.

    hub -> trainer     SegmentFrame (the accepted segment's wire bytes), TrainBudget, Pace, SaveCheckpoint, Stop
    trainer -> hub     WorkerReady, NewWeights (model, payload), TrainerStats, Taken, BudgetSpent
    hub -> PPO worker  EpisodeRequest, SaveCheckpoint, Stop
    PPO worker -> hub  WorkerReady, EpisodeResult (payload: the new policy weights), WorkerFatal

Weights carry no version: the hub's ``PublishedVersions`` numbers every version it publishes.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import msgpack


class InternalError(ValueError):
    """A helper-channel message that does not decode: a bug in one end, not bad input."""


@dataclass(frozen=True)
class Stop:
    """hub -> helper: finish what is in hand and exit."""


@dataclass(frozen=True)
class SegmentFrame:
    """hub -> trainer: one accepted segment; payload: its wire bytes exactly as the hub received them."""

    payload: bytes = b""


@dataclass(frozen=True)
class NewWeights:
    """trainer -> hub: new weights of ``model`` ("wm" or "llm"); payload: the serialised state."""

    model: str
    payload: bytes = b""


@dataclass(frozen=True)
class TrainerStats:
    """trainer -> hub: the trainer's counters and last losses (name -> number)."""

    stats: dict[str, float]


@dataclass(frozen=True)
class Taken:
    """trainer -> hub: segment bytes it has taken off its pipe since it last said so (the hub
    forwards at most ``trainer.pipe_bytes`` not yet taken)."""

    nbytes: int


@dataclass(frozen=True)
class TrainBudget:
    """hub -> trainer (``schedule.mode=alternating``): make ``updates`` updates, then answer ``BudgetSpent``."""

    updates: int


@dataclass(frozen=True)
class Pace:
    """hub -> trainer (``schedule.gpu_share=auto``, pzstream/hub/gpu_share.py): make at most
    ``max_updates_per_s`` updates a second from now on (0: no limit but ``trainer.max_updates_per_s``)."""

    max_updates_per_s: float


@dataclass(frozen=True)
class BudgetSpent:
    """trainer -> hub: the budget is spent (``updates`` made: 0 when the replay was too small to train)."""

    updates: int


@dataclass(frozen=True)
class SaveCheckpoint:
    """hub -> helper: save your state as checkpoint ``step`` (after everything sent before this message)."""

    step: int


@dataclass(frozen=True)
class EpisodeRequest:
    """hub -> PPO worker: run episode ``episode`` on these prompt samples (``PromptSample.to_dict()`` each)."""

    episode: int
    samples: list[dict[str, Any]]


@dataclass(frozen=True)
class WorkerReady:
    """PPO worker -> hub: the runtime is up; ``describe`` says what it runs on."""

    runtime: str
    describe: str


@dataclass(frozen=True)
class WorkerFatal:
    """PPO worker -> hub: the runtime could not start (the worker exits)."""

    error: str


@dataclass(frozen=True)
class EpisodeResult:
    """PPO worker -> hub: one finished episode. ok: the payload holds the new policy weights;
    otherwise ``error`` (one line) and ``traceback`` say why."""

    episode: int
    ok: bool
    metrics: dict[str, float] = field(default_factory=dict)
    games: dict[str, int] = field(default_factory=dict)
    rewards: list[float] = field(default_factory=list)
    error: str = ""
    traceback: str = ""
    payload: bytes = b""


Internal = (Stop | SegmentFrame | NewWeights | TrainerStats | Taken | TrainBudget | Pace | BudgetSpent | SaveCheckpoint | EpisodeRequest
            | WorkerReady | WorkerFatal | EpisodeResult)

_KINDS: dict[str, type] = {
    "stop": Stop, "segment": SegmentFrame, "new_weights": NewWeights, "trainer_stats": TrainerStats, "taken": Taken,
    "train_budget": TrainBudget, "pace": Pace, "budget_spent": BudgetSpent, "save_checkpoint": SaveCheckpoint,
    "episode": EpisodeRequest, "ready": WorkerReady, "fatal": WorkerFatal, "result": EpisodeResult,
}
_KIND_OF = {cls: kind for kind, cls in _KINDS.items()}
_FIELDS = {cls: tuple(f.name for f in fields(cls) if f.name != "payload") for cls in _KINDS.values()}
_HAS_PAYLOAD = {cls: any(f.name == "payload" for f in fields(cls)) for cls in _KINDS.values()}
_SEGMENT_HEAD = msgpack.packb({"kind": "segment"})


def encode(msg: Internal) -> list[bytes]:
    """The frames of one message (send them with ``send_multipart``)."""
    cls = type(msg)
    if cls is SegmentFrame:  # the hot path: one per accepted segment
        return [_SEGMENT_HEAD, msg.payload]
    kind = _KIND_OF.get(cls)
    if kind is None:
        raise TypeError(f"not a helper-channel message: {cls.__name__}")
    head = msgpack.packb({"kind": kind, **{name: getattr(msg, name) for name in _FIELDS[cls]}})
    return [head, msg.payload] if _HAS_PAYLOAD[cls] else [head]


def decode(frames: list[bytes] | list[Any]) -> Internal:
    """The message these frames carry; raises InternalError if they carry none."""
    if not frames:
        raise InternalError("no frames")
    try:
        head = msgpack.unpackb(frames[0])
    except Exception as e:  # noqa: BLE001 - msgpack raises several types
        raise InternalError(f"frame 0 is not msgpack: {e}") from None
    cls = _KINDS.get(head.pop("kind", None)) if isinstance(head, dict) else None
    if cls is None:
        raise InternalError(f"unknown helper-channel message: {head!r:.200}")
    if _HAS_PAYLOAD[cls]:
        if len(frames) != 2:
            raise InternalError(f"{cls.__name__} needs 2 frames, got {len(frames)}")
        head["payload"] = bytes(frames[1])
    elif len(frames) != 1:
        raise InternalError(f"{cls.__name__} takes 1 frame, got {len(frames)}")
    try:
        return cls(**head)
    except TypeError as e:
        raise InternalError(f"{cls.__name__}: {e}") from None


class HelperChannel:
    """A helper process's end of its channel to the hub: messages in from ``inbox`` (PULL),
    out to ``outbox`` (PUSH, held up to ``linger_ms`` at close so the last ones reach the hub)."""

    def __init__(self, inbox: str, outbox: str, linger_ms: int):
        import zmq

        self._zmq = zmq
        self._ctx = zmq.Context()
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.connect(inbox)
        self._push = self._ctx.socket(zmq.PUSH)
        self._push.setsockopt(zmq.LINGER, linger_ms)
        self._push.connect(outbox)

    def wait(self, timeout_ms: int) -> bool:
        """Whether a message waits, after at most ``timeout_ms``."""
        return bool(self._pull.poll(timeout_ms))

    def receive(self) -> Internal | None:
        """The next message, or None when none waits (never blocks)."""
        try:
            frames = self._pull.recv_multipart(self._zmq.NOBLOCK)
        except self._zmq.Again:
            return None
        return decode(frames)

    def send(self, msg: Internal) -> None:
        self._push.send_multipart(encode(msg))

    def close(self) -> None:
        self._pull.close(0)
        self._push.close()
        self._ctx.term()
