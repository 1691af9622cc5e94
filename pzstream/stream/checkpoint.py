"""Atomic checkpoints on disk: named byte parts and a manifest that says they are complete.

One checkpoint is a directory ``<dir>/step-NNNNNNNN/`` holding one file per part and
``manifest.json``. Each part is written to a temporary file, fsynced and renamed into place;
the manifest (format version, step, counters, and the sha256 and size of every part) is
written the same way, last. A checkpoint without its manifest is incomplete (the writer was
killed midway) and is never read: ``read_checkpoint`` falls back to the newest complete one.
A part whose bytes do not match the manifest is damage, not a crash: ``CheckpointError``
names it (``fallback_on_corrupt`` takes the previous complete checkpoint instead).

Each process of the learner role writes its own directory under ``runs/<name>/checkpoints``
(``hub``, ``trainer``, ``ppo``); the step numbers tie them to the hub's segment journal
(``pzstream.stream.journal``; what each process saves: ``pzstream.hub.hub_checkpoint``). ``pack_frames`` / ``unpack_frames`` hold a list of wire
frames (the trainer's replay) in one part.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("pzstream.stream.checkpoint")

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_STEP_PREFIX = "step-"
_LEN = struct.Struct("<I")


CHECKPOINTS = "checkpoints"  # under a run directory
PROCESSES = ("hub", "trainer", "ppo")  # each writes checkpoints/<process>/; the hub's journal is checkpoints/journal/


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def rng_state(rng: random.Random) -> list:
    """A ``random.Random`` state as JSON/msgpack-able lists."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def load_rng(rng: random.Random, state: Sequence) -> None:
    rng.setstate((state[0], tuple(state[1]), state[2]))


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: none complete, a damaged part, an unknown format."""


@dataclass(frozen=True)
class PartInfo:
    """One part as the manifest records it: its file name in the step directory, sha256 (hex), size in bytes."""

    file: str
    sha256: str
    nbytes: int


@dataclass(frozen=True)
class Manifest:
    """format: FORMAT_VERSION; step: the checkpoint number (grows by 1 per checkpoint of a run);
    created: unix time; counters: name -> int (versions, updates, segments); parts: name -> PartInfo."""

    format: int
    step: int
    created: float
    counters: dict[str, int]
    parts: dict[str, PartInfo]

    def to_json(self) -> str:
        return json.dumps({"format": self.format, "step": self.step, "created": self.created, "counters": self.counters,
                           "parts": {k: vars(v) for k, v in self.parts.items()}}, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: Path) -> "Manifest":
        try:
            d = json.loads(text)
            if d.get("format") != FORMAT_VERSION:
                raise CheckpointError(f"{where}: checkpoint format {d.get('format')!r}, this program reads {FORMAT_VERSION}")
            parts = {str(k): PartInfo(file=str(v["file"]), sha256=str(v["sha256"]), nbytes=int(v["nbytes"]))
                     for k, v in d["parts"].items()}
            return cls(format=FORMAT_VERSION, step=int(d["step"]), created=float(d["created"]),
                       counters={str(k): int(v) for k, v in d["counters"].items()}, parts=parts)
        except CheckpointError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{where}: unreadable manifest ({type(e).__name__}: {e})") from None


@dataclass(frozen=True)
class Checkpoint:
    """A complete, verified checkpoint: its directory, manifest, and every part's bytes."""

    directory: Path
    manifest: Manifest
    parts: dict[str, bytes]

    @property
    def step(self) -> int:
        return self.manifest.step


def step_dir(directory: Path, step: int) -> Path:
    return Path(directory) / f"{_STEP_PREFIX}{step:08d}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | memoryview) -> None:
    """``path`` holds ``data`` or what it held before, never a part of it: temp file, fsync, rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _check_name(name: str) -> None:
    if not name or name == MANIFEST or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"bad checkpoint part name {name!r}")


def write_checkpoint(directory: Path, step: int, parts: dict[str, bytes], counters: dict[str, int] | None = None) -> Manifest:
    """Write ``parts`` (name -> bytes) as checkpoint ``step`` under ``directory``; the manifest last.

    A step directory left incomplete by an earlier attempt is replaced. Returns the manifest.
    """
    if step < 0:
        raise ValueError(f"checkpoint step must be >= 0, got {step}")
    target = step_dir(directory, step)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    infos: dict[str, PartInfo] = {}
    for name, data in parts.items():
        _check_name(name)
        write_atomic(target / name, data)
        infos[name] = PartInfo(file=name, sha256=hashlib.sha256(data).hexdigest(), nbytes=len(data))
    manifest = Manifest(format=FORMAT_VERSION, step=step, created=time.time(),
                        counters={k: int(v) for k, v in (counters or {}).items()}, parts=infos)
    write_atomic(target / MANIFEST, manifest.to_json().encode())
    _fsync_dir(target)
    _fsync_dir(target.parent)
    return manifest


def all_steps(directory: Path) -> list[int]:
    """Every step directory under ``directory``, complete or not, ascending."""
    out = []
    if Path(directory).is_dir():
        for p in Path(directory).iterdir():
            tail = p.name[len(_STEP_PREFIX):]
            if p.is_dir() and p.name.startswith(_STEP_PREFIX) and tail.isdigit():
                out.append(int(tail))
    return sorted(out)


def complete_steps(directory: Path) -> list[int]:
    """Steps whose manifest was written (the writer finished), ascending."""
    return [s for s in all_steps(directory) if (step_dir(directory, s) / MANIFEST).is_file()]


def _load(directory: Path, step: int) -> Checkpoint:
    where = step_dir(directory, step)
    manifest = Manifest.from_json((where / MANIFEST).read_text(), where)
    parts: dict[str, bytes] = {}
    for name, info in manifest.parts.items():
        path = where / info.file
        if not path.is_file():
            raise CheckpointError(f"{where}: part {name!r} is missing ({info.file})")
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != info.nbytes or digest != info.sha256:
            raise CheckpointError(f"{where}: part {name!r} is damaged: {len(data)} bytes, sha256 {digest[:12]}; "
                                  f"the manifest says {info.nbytes} bytes, sha256 {info.sha256[:12]}")
        parts[name] = data
    return Checkpoint(directory=where, manifest=manifest, parts=parts)


def read_checkpoint(directory: Path, step: int | None = None, fallback_on_corrupt: bool = False) -> Checkpoint:
    """The newest complete checkpoint under ``directory`` (or exactly ``step``), every part verified.

    Incomplete checkpoints (no manifest) are skipped, with a warning when they are newer than the
    one read. A damaged part raises CheckpointError naming it, unless ``fallback_on_corrupt``: then
    the previous complete checkpoint is tried. Raises CheckpointError when none is usable.
    """
    directory = Path(directory)
    done = complete_steps(directory)
    if step is not None:
        if step not in done:
            raise CheckpointError(f"{step_dir(directory, step)}: no complete checkpoint (no {MANIFEST})")
        return _load(directory, step)
    if not done:
        raise CheckpointError(f"{directory}: no complete checkpoint")
    newer = [s for s in all_steps(directory) if s > done[-1]]
    if newer:
        log.warning("%s: checkpoint step %d is incomplete (its writer stopped midway); using step %d", directory,
                    newer[-1], done[-1])
    errors = []
    for s in reversed(done):
        try:
            return _load(directory, s)
        except CheckpointError as e:
            if not fallback_on_corrupt:
                raise
            errors.append(str(e))
            log.error("%s; trying the previous checkpoint", e)
    raise CheckpointError(f"{directory}: every complete checkpoint is damaged: {'; '.join(errors)}")


def prune_checkpoints(directory: Path, keep: int) -> list[int]:
    """Delete all but the newest ``keep`` complete checkpoints, and incomplete ones older than the
    newest complete one; returns the steps deleted."""
    done = complete_steps(directory)
    kept = set(done[-keep:]) if keep > 0 else set()
    newest = done[-1] if done else -1
    gone = [s for s in all_steps(directory) if s not in kept and (s in done or s < newest)]
    for s in gone:
        shutil.rmtree(step_dir(directory, s), ignore_errors=True)
    return gone


def pack_frames(frames: Iterable[bytes | memoryview]) -> bytes:
    """Frames as one byte string: each a little-endian u32 length, then its bytes."""
    out = bytearray()
    for f in frames:
        out += _LEN.pack(len(f))
        out += f
    return bytes(out)


def unpack_frames(data: bytes) -> list[bytes]:
    """The frames ``pack_frames`` packed; CheckpointError if the data is cut or overlong."""
    out, at, view = [], 0, memoryview(data)
    while at < len(data):
        if at + _LEN.size > len(data):
            raise CheckpointError(f"frames cut at byte {at}")
        (n,) = _LEN.unpack_from(view, at)
        at += _LEN.size
        if at + n > len(data):
            raise CheckpointError(f"frame of {n} bytes cut at byte {at}")
        out.append(bytes(view[at:at + n]))
        at += n
    return out
