"""Versioned weights: the hub's store, and the collector's checked reassembly of fetched chunks.

Weights never ride PUB/SUB (it drops at its high-water mark). The hub publishes a small
`weights` notice; a collector asks for the bytes with `fetch` on its own DEALER connection
(credit-free, one chunk at a time) and accepts them only if the sha256 matches the notice.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from pzstream.stream.wire import Blob, Fetch, Weights

CHUNK_BYTES = 512 * 1024  # below the codec's 1 MiB cap on one bin value
DEFAULT_MAX_WEIGHTS_BYTES = 16 * 1024 ** 3  # wire.max_weights_bytes: a 7B model in bf16 fits
HUB_URI = "hub"  # a notice whose bytes are fetched from the hub over the segment connection


def latest_on_disk(directory: Path, model: str) -> tuple[int, Path] | None:
    """The newest ``{model}-v{N}.pt`` in a store's mirror directory."""
    found = []
    for p in directory.glob(f"{model}-v*.pt"):
        tail = p.stem[len(model) + 2:]
        if tail.isdigit():
            found.append((int(tail), p))
    return max(found) if found else None


class WeightsError(ValueError):
    """Fetched weights that cannot be used: wrong checksum, wrong size, gone from the store."""


class WeightsGone(WeightsError):
    """The hub no longer holds the version asked for: newer ones replaced it (fetch the newest notice)."""


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def read_mirrored(directory: Path, model: str) -> tuple[int, bytes] | None:
    """(version, bytes) of the newest ``model`` weights in a store's mirror directory, checked
    against the sha256 the store wrote beside them; None when there are none.

    Raises WeightsError when the bytes do not match their checksum (a damaged or foreign file).
    A file without a checksum (written by an older hub) is read unchecked.
    """
    found = latest_on_disk(directory, model)
    if found is None:
        return None
    version, path = found
    data = path.read_bytes()
    digest_file = path.with_suffix(".sha256")
    if digest_file.is_file():
        want = digest_file.read_text().strip()
        if sha256_hex(data) != want:
            raise WeightsError(f"{path}: sha256 {sha256_hex(data)[:12]} != recorded {want[:12]}")
    return version, data


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class StoredWeights:
    model: str
    version: int
    sha256: str
    data: bytes


class WeightsStore:
    """The newest ``keep`` versions of each model, in memory, optionally mirrored to ``directory``."""

    def __init__(self, keep: int = 3, directory: Path | None = None):
        self.keep = keep
        self.directory = directory
        self._by_model: dict[str, OrderedDict[int, StoredWeights]] = {}

    def put(self, model: str, version: int, data: bytes) -> Weights:
        entry = StoredWeights(model, version, sha256_hex(data), data)
        versions = self._by_model.setdefault(model, OrderedDict())
        versions[version] = entry
        while len(versions) > self.keep:
            old, _ = versions.popitem(last=False)
            if self.directory is not None:
                (self.directory / f"{model}-v{old}.pt").unlink(missing_ok=True)
                (self.directory / f"{model}-v{old}.sha256").unlink(missing_ok=True)
        if self.directory is not None:  # a mirror that --role eval (or a restarted hub) can read
            self.directory.mkdir(parents=True, exist_ok=True)
            # the checksum first, then the bytes: a reader that sees the .pt also sees its .sha256
            _write_atomic(self.directory / f"{model}-v{version}.sha256", entry.sha256.encode())
            _write_atomic(self.directory / f"{model}-v{version}.pt", data)
        return Weights(model=model, version=version, uri=HUB_URI, sha256=entry.sha256, nbytes=len(data))

    def latest(self, model: str) -> StoredWeights | None:
        versions = self._by_model.get(model)
        return next(reversed(versions.values())) if versions else None

    def chunk(self, req: Fetch) -> Blob:
        entry = self._by_model.get(req.model, {}).get(req.version)
        if entry is None:
            return Blob(model=req.model, version=req.version, offset=req.offset, total=0, sha256="", data=b"")
        end = min(len(entry.data), req.offset + min(req.length, CHUNK_BYTES))
        return Blob(model=req.model, version=req.version, offset=req.offset, total=len(entry.data),
                    sha256=entry.sha256, data=entry.data[req.offset:end])


class BlobAssembler:
    """Collects the chunks of one notice's weights in order and checks each against it as it
    comes: a notice declaring more than ``max_bytes`` is refused before any chunk is asked for,
    and a chunk longer than asked for or running past the declared size is refused at once."""

    def __init__(self, notice: Weights, max_bytes: int = DEFAULT_MAX_WEIGHTS_BYTES):
        if not 0 <= notice.nbytes <= max_bytes:
            raise WeightsError(f"{notice.model} v{notice.version}: notice declares {notice.nbytes} bytes, more than "
                               f"this reader takes ({max_bytes}, wire.max_weights_bytes)")
        self.notice = notice
        self._parts: list[bytes] = []
        self.received = 0

    @property
    def done(self) -> bool:
        return self.received >= self.notice.nbytes

    def next_request(self) -> Fetch:
        return Fetch(model=self.notice.model, version=self.notice.version, offset=self.received, length=CHUNK_BYTES)

    def add(self, blob: Blob) -> None:
        n = self.notice
        if blob.total == 0 and n.nbytes > 0:
            raise WeightsGone(f"{n.model} v{n.version} is no longer on the hub")
        if blob.total != n.nbytes or blob.sha256 != n.sha256:
            raise WeightsError(f"{n.model} v{n.version}: chunk says {blob.total} bytes/{blob.sha256[:12]}, "
                               f"notice said {n.nbytes}/{n.sha256[:12]}")
        if blob.offset != self.received or not blob.data:
            raise WeightsError(f"{n.model} v{n.version}: chunk at {blob.offset}, expected {self.received}")
        if len(blob.data) > CHUNK_BYTES or self.received + len(blob.data) > n.nbytes:
            raise WeightsError(f"{n.model} v{n.version}: chunk of {len(blob.data)} bytes at {blob.offset} runs past "
                               f"the chunk size ({CHUNK_BYTES}) or the declared {n.nbytes} bytes")
        self._parts.append(blob.data)
        self.received += len(blob.data)

    def result(self) -> bytes:
        data = b"".join(self._parts)
        if len(data) != self.notice.nbytes:
            raise WeightsError(f"{self.notice.model} v{self.notice.version}: got {len(data)} bytes, expected {self.notice.nbytes}")
        digest = sha256_hex(data)
        if digest != self.notice.sha256:
            raise WeightsError(f"{self.notice.model} v{self.notice.version}: sha256 {digest[:12]} != notice {self.notice.sha256[:12]}")
        return data
