"""The hub's segment journal: every accepted segment reaches the disk before its acknowledgement
leaves the hub, so a hub killed at any point loses no segment it acknowledged.

The journal is a hub part (it sees each accepted segment, in order, inside ingest's batch; the
batch's credits are sent after every part ran). ``journal-NNNNNNNN.seg`` holds the segments
accepted from checkpoint step N on: the hub starts a new file at each checkpoint, at the same
moment it asks the trainer to save, so a trainer checkpoint N plus the journals from N on hold
every accepted segment (less those counted as ``trainer_dropped``). A file is written with one
``write`` per record and no buffering in this process: a ``kill -9`` keeps every finished record
(the page cache outlives the process); a file is fsynced when the next one starts, so a power
loss costs at most the records since the last checkpoint.

Records: one byte kind, a little-endian u32 length, the payload.
    b"P"  a collector connection: msgpack {"identity": routing id, "hello": its Hello as wire bytes},
          written before the first segment of that connection in each file;
    b"S"  one segment frame, exactly as received.
A record cut short (the process died inside its write) ends the file: it was never acknowledged.
"""
from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack

from pzstream.stream import wire
from pzstream.stream.wire import Hello

log = logging.getLogger("pzstream.learner")

_HEAD = struct.Struct("<cI")
PEER, SEGMENT = b"P", b"S"
_PREFIX, _SUFFIX = "journal-", ".seg"

# collector id -> (routing id, hello) of the connection that now owns it, or None
PeerLookup = Callable[[str], "tuple[bytes, Hello] | None"]


@dataclass(frozen=True)
class PeerRecord:
    identity: bytes
    hello: Hello


@dataclass(frozen=True)
class SegmentRecord:
    data: bytes


def journal_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"{_PREFIX}{step:08d}{_SUFFIX}"


def journal_steps(directory: Path) -> list[int]:
    """Steps of the journal files under ``directory``, ascending."""
    out = []
    if Path(directory).is_dir():
        for p in Path(directory).glob(f"{_PREFIX}*{_SUFFIX}"):
            tail = p.name[len(_PREFIX):-len(_SUFFIX)]
            if tail.isdigit():
                out.append(int(tail))
    return sorted(out)


def prune_journals(directory: Path, below: int) -> list[int]:
    """Delete the journal files of steps below ``below``; returns those steps."""
    gone = [s for s in journal_steps(directory) if s < below]
    for s in gone:
        journal_path(directory, s).unlink(missing_ok=True)
    return gone


def read_journal(path: Path, upto: int | None = None) -> Iterator[PeerRecord | SegmentRecord]:
    """The records of one journal file (its first ``upto`` bytes); a cut last record is skipped."""
    with open(path, "rb") as f:
        data = f.read() if upto is None else f.read(upto)
    at = 0
    while at + _HEAD.size <= len(data):
        kind, n = _HEAD.unpack_from(data, at)
        start, end = at + _HEAD.size, at + _HEAD.size + n
        if end > len(data):
            break  # the writer died inside this record: it was never acknowledged
        payload = data[start:end]
        if kind == SEGMENT:
            yield SegmentRecord(payload)
        elif kind == PEER:
            head = msgpack.unpackb(payload)
            hello = wire.decode(head["hello"])
            if not isinstance(hello, Hello):
                raise ValueError(f"{path}: a peer record at byte {at} holds a {type(hello).__name__}")
            yield PeerRecord(identity=bytes(head["identity"]), hello=hello)
        else:
            raise ValueError(f"{path}: unknown record kind {kind!r} at byte {at}")
        at = end


def journal_segments(directory: Path, since: int, before: int) -> Iterator[bytes]:
    """Every segment frame in the journals of steps ``since <= step < before``, in order."""
    for step in journal_steps(directory):
        if since <= step < before:
            for rec in read_journal(journal_path(directory, step)):
                if isinstance(rec, SegmentRecord):
                    yield rec.data


class SegmentJournal:
    """Part: appends each accepted segment to the current journal file (see the module doc)."""

    def __init__(self, directory: Path, peer_of: PeerLookup):
        self.directory = Path(directory)
        self.peer_of = peer_of
        self.step: int | None = None
        self.segments = 0  # written to the current file
        self.bytes = 0
        self._fd: int | None = None
        self._written_peer: dict[str, bytes] = {}  # collector id -> routing id recorded in this file

    def open(self, step: int) -> None:
        """Start the file of checkpoint ``step``; the previous one is fsynced and closed."""
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(journal_path(self.directory, step), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.step, self.segments, self.bytes = step, 0, 0
        self._written_peer = {}

    def close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def _write(self, kind: bytes, payload: bytes | memoryview) -> None:
        parts = [memoryview(_HEAD.pack(kind, len(payload))), memoryview(payload)]
        total = len(parts[0]) + len(parts[1])
        done = os.writev(self._fd, parts)
        while done < total:  # a short write (rare on a regular file): finish the record
            joined = b"".join(bytes(p) for p in parts)
            done += os.write(self._fd, joined[done:])
        self.bytes += total

    def on_segment(self, accepted) -> None:
        """A hub part (``accepted``: ``pzstream.hub.parts.AcceptedSegment``, its ``segment`` and ``data``)."""
        if self._fd is None:
            return
        cid = accepted.segment.header.collector_id
        owner = self.peer_of(cid)
        if owner is not None and self._written_peer.get(cid) != owner[0]:
            identity, hello = owner
            self._write(PEER, msgpack.packb({"identity": identity, "hello": wire.encode(hello)}))
            self._written_peer[cid] = identity
        self._write(SEGMENT, memoryview(accepted.data))
        self.segments += 1
