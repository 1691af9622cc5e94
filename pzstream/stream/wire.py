"""Wire format of pzstream: every message is one msgpack map in one ZeroMQ frame.

The format is specified in docs/wire.md; this module is its reference
implementation.  `encode` turns a message dataclass into bytes, `decode` turns
untrusted bytes back into a dataclass or raises `WireError` -- never any other
exception, whatever the input.  Nothing from the network is ever pickled or
evaluated; numeric columns travel as a small msgpack ext type (code 1) holding
a dtype code, the shape and the raw little-endian element bytes, and are
decoded with `np.frombuffer` (no copy beyond msgpack's own ext payload).
"""

from __future__ import annotations

import math
import operator
import re
import struct
import threading
from dataclasses import dataclass, fields
from typing import Any, Callable, Union

import msgpack
import numpy as np

PROTOCOL_VERSION: int = 1
ARRAY_EXT_CODE: int = 1

REASONS: frozenset[str] = frozenset({
    "too_large", "malformed", "not_a_map", "bad_version", "unknown_kind", "bad_field",
    "bad_dtype", "bad_shape", "shape_exceeds_frame", "array_too_large", "column_length",
    "bad_value",
})


class WireError(ValueError):
    """A message that cannot be accepted.

    `reason` is a short stable code (one of `REASONS`) meant for counters and
    `Reject.reason`; `detail` is free text for humans.
    """

    def __init__(self, reason: str, detail: str) -> None:
        # args kept as (reason, detail) so the exception pickles/copies cleanly
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


@dataclass(frozen=True)
class WireLimits:
    """Bounds applied by `decode` so hostile input cannot allocate much memory.

    max_message_bytes: whole frame, bytes (checked before unpacking).
    max_array_elements: elements of any one ext array.
    max_steps: steps T per segment.
    max_candidates_per_step: candidates of one step.
    max_string_bytes: any single str/bin inside a message, utf-8 bytes.
    """

    max_message_bytes: int = 16 * 1024 * 1024
    max_array_elements: int = 1 << 22
    max_steps: int = 4096
    max_candidates_per_step: int = 1024
    max_string_bytes: int = 1 << 20


DEFAULT_LIMITS = WireLimits()

# Maps (including heartbeat stats) are small; this only bounds hostile input.
_MAX_MAP_LEN = 4096
# A step's visit/prior distribution must sum to 1 within this (float32 sums).
_SUM_TOLERANCE = 1e-3


# ---------------------------------------------------------------- messages


@dataclass(frozen=True)
class Hello:
    """kind "hello", collector -> hub, first on every connection; pid: OS process id."""

    collector_id: str
    game: str
    host: str
    pid: int
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Welcome:
    """kind "welcome", hub -> collector, reply to an accepted hello.

    window: initial credits (segments allowed in flight); heartbeat_s: seconds.
    """

    hub_id: str
    window: int
    wm_version: int
    llm_version: int
    heartbeat_s: float


@dataclass(frozen=True)
class Reject:
    """kind "reject", hub -> collector: why a hello/segment was refused (a `REASONS` code or the hub's own)."""

    reason: str
    detail: str


@dataclass(frozen=True)
class Credit:
    """kind "credit", hub -> collector: n more segments may be in flight; ack: highest seq processed (-1 none)."""

    n: int
    ack: int


@dataclass(frozen=True)
class Heartbeat:
    """kind "heartbeat", both directions; time: unix seconds; stats: name -> int or float."""

    sender: str
    time: float
    stats: dict[str, float]


@dataclass(frozen=True)
class Weights:
    """kind "weights", hub -> collectors (PUB/SUB): new weights at `uri` (sha256 hex digest, nbytes bytes)."""

    model: str
    version: int
    uri: str
    sha256: str
    nbytes: int


@dataclass(frozen=True)
class Fetch:
    """kind "fetch", collector -> hub on its DEALER: send bytes [offset, offset+length) of weights (model, version)."""

    model: str
    version: int
    offset: int
    length: int


@dataclass(frozen=True)
class Blob:
    """kind "blob", hub -> collector: one chunk of a weights file; total: file size in bytes; sha256 of the whole file.

    An empty ``data`` with total 0 means the hub no longer has that version (fetch the newest notice).
    """

    model: str
    version: int
    offset: int
    total: int
    sha256: str
    data: bytes


@dataclass(frozen=True)
class ScoreRequest:
    """kind "score", collector -> prior server: score the candidates of B roots.

    prompts [B]; candidates: the B candidate lists flattened; counts [B]: each root's number of candidates.
    """

    request_id: int
    prompts: tuple[str, ...]
    candidates: tuple[str, ...]
    counts: tuple[int, ...]


@dataclass(frozen=True)
class ScoreReply:
    """kind "prior", prior server -> collector: log-prior of every candidate, flattened like the request."""

    request_id: int
    llm_version: int
    logprior: tuple[float, ...]


@dataclass(frozen=True)
class Log:
    """kind "log", any role -> log stream; level: Python logging level; time: unix seconds."""

    role: str
    sender: str
    level: int
    time: float
    logger: str
    message: str


@dataclass(frozen=True)
class SegmentHeader:
    """Identity and provenance of a segment.

    seq: per-collector segment counter (>= 0), used for credit acks and dedup;
    episode_id: collector-chosen episode id; step0: index in the episode of
    the segment's first step (>= 0); wm_version / llm_version: model versions
    that produced the actions; t_start / t_end: unix seconds.
    """

    game: str
    collector_id: str
    seq: int
    episode_id: int
    step0: int
    wm_version: int
    llm_version: int
    t_start: float
    t_end: float


@dataclass(frozen=True, eq=False)
class Segment:
    """kind "segment": T consecutive steps of one episode, stored by column.

    N = cand_offsets[-1] is the total number of candidates.  Arrays decoded
    from the wire are read-only views onto the message payload.

    observations: list[str] [T], observation text before each action.
    cand_offsets: int32 [T+1], 0 first, strictly increasing (>= 1 candidate
        per step); step t's candidates are candidates[off[t]:off[t+1]].
    candidates: list[str] [N], flattened valid action texts.
    action_index: int32 [T], chosen action's index within its step.
    action_text: list[str] [T], == candidates[off[t] + action_index[t]].
    reward: float32 [T], reward of the step (finite).
    score: int32 [T], game score after the step.
    done: bool [T], episode ended (terminal or truncated) after this step.
    visits: float32 [N], search visit distribution, sums to 1 per step.
    prior: float32 [N], LLM prior probabilities, sums to 1 per step.
    root_value: float32 [T], search root value; NaN = no estimate.
    """

    header: SegmentHeader
    observations: list[str]
    cand_offsets: np.ndarray
    candidates: list[str]
    action_index: np.ndarray
    action_text: list[str]
    reward: np.ndarray
    score: np.ndarray
    done: np.ndarray
    visits: np.ndarray
    prior: np.ndarray
    root_value: np.ndarray

    @property
    def n_steps(self) -> int:
        return len(self.observations)

    def step_candidates(self, t: int) -> list[str]:
        return list(self.candidates[int(self.cand_offsets[t]):int(self.cand_offsets[t + 1])])

    def same_as(self, other: "Segment") -> bool:
        """Exact equality of header and every column (dtype, shape, values; NaN == NaN)."""
        if not isinstance(other, Segment) or self.header != other.header:
            return False
        for name in _STR_COLUMNS:
            if list(getattr(self, name)) != list(getattr(other, name)):
                return False
        for name in _ARRAY_COLUMNS:
            a, b = getattr(self, name), getattr(other, name)
            if a.dtype != b.dtype or a.shape != b.shape:
                return False
            if not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
                return False
        return True


Message = Union[Hello, Welcome, Reject, Credit, Heartbeat, Segment, Weights, Fetch, Blob, ScoreRequest, ScoreReply, Log]

_STR_COLUMNS = ("observations", "candidates", "action_text")
# Declared dtype of every numeric column (little-endian on the wire).
_ARRAY_COLUMNS: dict[str, np.dtype] = {
    "cand_offsets": np.dtype("<i4"),
    "action_index": np.dtype("<i4"),
    "reward": np.dtype("<f4"),
    "score": np.dtype("<i4"),
    "done": np.dtype("|b1"),
    "visits": np.dtype("<f4"),
    "prior": np.dtype("<f4"),
    "root_value": np.dtype("<f4"),
}
_COLUMN_NAMES = frozenset(f.name for f in fields(Segment)) - {"header"}
_HEADER_NAMES = frozenset(f.name for f in fields(SegmentHeader))
_SEGMENT_KEYS = frozenset({"v", "kind", "header", "columns"})

# ---------------------------------------------------------------- array ext

_DTYPE_OF_CODE: dict[int, np.dtype] = {
    1: np.dtype("|b1"), 2: np.dtype("|i1"), 3: np.dtype("|u1"), 4: np.dtype("<i2"),
    5: np.dtype("<i4"), 6: np.dtype("<i8"), 7: np.dtype("<f2"), 8: np.dtype("<f4"),
    9: np.dtype("<f8"),
}
_CODE_OF_DTYPE: dict[np.dtype, int] = {dt: code for code, dt in _DTYPE_OF_CODE.items()}
# Header: dtype u8, ndim u8, 2 zero bytes, ndim x dim u32, zero bytes up to a
# multiple of 8.  The msgpack ext payload is a fresh bytes object whose data
# CPython aligns to 16, so the elements that follow the header are 8-byte
# aligned and numpy takes its fast aligned paths on them.
_HEAD_LEN = [8 * (ndim // 2 + 1) for ndim in range(5)]
_HEAD = [struct.Struct("<BBxx" + "I" * ndim + "x" * (_HEAD_LEN[ndim] - 4 - 4 * ndim)) for ndim in range(5)]
_HEAD1 = struct.Struct("<BBHI")  # the 1-d header, zero bytes included, for the decode fast path
_MAX_DIM = 0xFFFFFFFF


def _array_ext(a: np.ndarray) -> msgpack.ExtType:
    """ndarray -> ext type 1: [dtype u8][ndim u8][0 0][ndim x dim u32le][0 pad to 8k][C-order LE bytes]."""
    code = _CODE_OF_DTYPE.get(a.dtype)
    shape = a.shape
    if code is None:
        # big-endian or non-whitelisted: normalise byte order, then retry once
        le = a.dtype.newbyteorder("<")
        code = _CODE_OF_DTYPE.get(le)
        if code is None:
            raise WireError("bad_dtype", f"dtype {a.dtype} is not in the wire whitelist")
        a = a.astype(le)
    if len(shape) > 4 or max(shape, default=0) > _MAX_DIM:
        raise WireError("bad_shape", f"shape {shape} needs ndim <= 4 and uint32 dimensions")
    # tobytes() is always C-order, whatever a's strides are
    return msgpack.ExtType(ARRAY_EXT_CODE, _HEAD[len(shape)].pack(code, len(shape), *shape) + a.tobytes())


def _parse_array(code: int, data: bytes, max_elements: int) -> np.ndarray:
    """ext payload -> read-only ndarray viewing `data`; every check, exact reasons."""
    if code != ARRAY_EXT_CODE:
        raise WireError("bad_field", f"unexpected ext type {code}")
    if len(data) < 2:
        raise WireError("bad_shape", "array ext shorter than its 2-byte header")
    dtype = _DTYPE_OF_CODE.get(data[0])
    if dtype is None:
        raise WireError("bad_dtype", f"array dtype code {data[0]} not in whitelist")
    ndim = data[1]
    if ndim > 4:
        raise WireError("bad_shape", f"array ndim {ndim} > 4")
    offset = _HEAD_LEN[ndim]
    if len(data) < offset:
        raise WireError("bad_shape", f"array ext shorter than its {offset}-byte header")
    if any(data[2:4]) or any(data[4 + 4 * ndim:offset]):
        raise WireError("bad_shape", "array ext header padding is not zero")
    shape = _HEAD[ndim].unpack_from(data)[2:]
    count = 1
    for d in shape:
        count *= d
    # element count first: a tiny frame may declare a huge shape
    if count > max_elements:
        raise WireError("array_too_large", f"shape {shape} has {count} > {max_elements} elements")
    need = offset + count * dtype.itemsize
    if need > len(data):
        raise WireError("shape_exceeds_frame", f"shape {shape} needs {need} bytes, ext has {len(data)}")
    if need < len(data):
        raise WireError("bad_shape", f"ext payload {len(data)} bytes longer than shape {shape} needs ({need})")
    if dtype.kind == "b" and data[offset:].translate(None, b"\x00\x01"):
        # numpy would show byte 2 as True yet compare it unequal to True
        raise WireError("bad_value", "bool array holds a byte other than 0 or 1")
    a = np.frombuffer(data, dtype, count, offset)
    return a if ndim == 1 else a.reshape(shape)


def _make_ext_hook(limits: WireLimits) -> Callable[[int, bytes], Any]:
    max_elements = limits.max_array_elements
    fast = {code: (dt, dt.itemsize, dt.kind == "b") for code, dt in _DTYPE_OF_CODE.items()}

    def ext_hook(code: int, data: bytes) -> Any:
        # Fast path for what segments carry: a well-formed 1-d array (8-byte
        # header).  Anything else, including every error, goes through _parse_array.
        if code == ARRAY_EXT_CODE and len(data) >= 8:
            dtype_code, ndim, pad, count = _HEAD1.unpack_from(data)
            spec = fast.get(dtype_code)
            if ndim == 1 and pad == 0 and spec is not None and count <= max_elements \
                    and len(data) == 8 + count * spec[1] \
                    and not (spec[2] and data[8:].translate(None, b"\x00\x01")):
                return np.frombuffer(data, spec[0], count, 8)
        return _parse_array(code, data, max_elements)

    return ext_hook


# ---------------------------------------------------------------- encode

# A Packer per thread: reusing one saves its setup per call, but a Packer is
# not safe to share between threads.
_local = threading.local()


def _numpy_scalar(obj: Any) -> Any:
    # Collectors naturally hold numpy scalars (seq, scores, times); packing them
    # as plain numbers keeps the wire free of numpy specifics.
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return _array_ext(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} on the wire")


def _packer() -> msgpack.Packer:
    p = getattr(_local, "packer", None)
    if p is None:
        p = _local.packer = msgpack.Packer(use_bin_type=True, default=_numpy_scalar)
    return p


_KIND_OF: dict[type, str] = {
    Hello: "hello", Welcome: "welcome", Reject: "reject", Credit: "credit",
    Heartbeat: "heartbeat", Weights: "weights", Fetch: "fetch", Blob: "blob", Log: "log", Segment: "segment",
    ScoreRequest: "score", ScoreReply: "prior",
}
_FIELDS_OF: dict[type, tuple[str, ...]] = {cls: tuple(f.name for f in fields(cls)) for cls in _KIND_OF}


def encode(msg: Message) -> bytes:
    """Serialise one message to the bytes of one frame.  Does not validate."""
    cls = type(msg)
    kind = _KIND_OF.get(cls)
    if kind is None:
        raise TypeError(f"not a wire message: {cls.__name__}")
    if cls is Segment:
        h = msg.header
        body: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "kind": "segment",
            "header": {
                "game": h.game, "collector_id": h.collector_id, "seq": h.seq,
                "episode_id": h.episode_id, "step0": h.step0, "wm_version": h.wm_version,
                "llm_version": h.llm_version, "t_start": h.t_start, "t_end": h.t_end,
            },
            # built explicitly: a direct ExtType skips msgpack's default= round trip
            "columns": {
                "observations": msg.observations,
                "cand_offsets": _array_ext(msg.cand_offsets),
                "candidates": msg.candidates,
                "action_index": _array_ext(msg.action_index),
                "action_text": msg.action_text,
                "reward": _array_ext(msg.reward),
                "score": _array_ext(msg.score),
                "done": _array_ext(msg.done),
                "visits": _array_ext(msg.visits),
                "prior": _array_ext(msg.prior),
                "root_value": _array_ext(msg.root_value),
            },
        }
    else:
        body = {"v": PROTOCOL_VERSION, "kind": kind}
        for name in _FIELDS_OF[cls]:
            body[name] = getattr(msg, name)
    return _packer().pack(body)


# ---------------------------------------------------------------- decode


def _str(x: Any) -> str:
    if type(x) is not str:
        raise TypeError("str")
    return x


def _int(x: Any) -> int:
    if type(x) is not int:  # excludes bool on purpose
        raise TypeError("int")
    return x


def _float(x: Any) -> float:
    if type(x) is not float and type(x) is not int:
        raise TypeError("float")
    return float(x)


def _str_tuple(x: Any) -> tuple[str, ...]:
    if type(x) is not list or not all(type(s) is str for s in x):
        raise TypeError("array of str")
    return tuple(x)


def _int_tuple(x: Any) -> tuple[int, ...]:
    if type(x) is not list or not all(type(i) is int for i in x):
        raise TypeError("array of int")
    return tuple(x)


def _float_tuple(x: Any) -> tuple[float, ...]:
    if type(x) is not list or not all(type(f) is float or type(f) is int for f in x):
        raise TypeError("array of float")
    return tuple(float(f) for f in x)


def _bytes(x: Any) -> bytes:
    if type(x) is not bytes:
        raise TypeError("bin")
    return x


def _stats(x: Any) -> dict[str, float]:
    if type(x) is not dict:
        raise TypeError("map")
    for k, val in x.items():
        if type(k) is not str or (type(val) is not int and type(val) is not float):
            raise TypeError("map of str to number")
    return x


# Field converters by annotation (annotations are strings under __future__).
_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "str": _str, "int": _int, "float": _float, "tuple[str, ...]": _str_tuple, "dict[str, float]": _stats,
    "bytes": _bytes, "tuple[int, ...]": _int_tuple, "tuple[float, ...]": _float_tuple,
}
_Spec = tuple[tuple[str, Callable[[Any], Any]], ...]


def _spec_of(cls: type) -> _Spec:
    return tuple((f.name, _CONVERTERS[f.type]) for f in fields(cls))


_SPECS: dict[str, tuple[type, _Spec]] = {
    kind: (cls, _spec_of(cls)) for cls, kind in _KIND_OF.items() if cls is not Segment
}
_KEYS_OF: dict[str, frozenset[str]] = {
    kind: frozenset({"v", "kind", *(name for name, _ in spec)}) for kind, (_, spec) in _SPECS.items()
}
_HEADER_SPEC = _spec_of(SegmentHeader)
# Smallest accepted value of integer fields of the small messages.
_MINIMA: dict[str, tuple[tuple[str, int], ...]] = {
    "hello": (("pid", 0),), "welcome": (("window", 0),), "credit": (("n", 0), ("ack", -1)),
    "weights": (("nbytes", 0),), "fetch": (("version", 0), ("offset", 0), ("length", 1)),
    "blob": (("version", 0), ("offset", 0), ("total", 0)),
}


def _check_keys(where: str, got: dict, expected: frozenset[str]) -> None:
    if got.keys() != expected:
        missing = sorted(expected - got.keys())
        extra = sorted(repr(k) for k in got.keys() - expected)
        raise WireError("bad_field", f"{where}: missing {missing}, unexpected {extra}")


def _convert(where: str, m: dict, spec: _Spec) -> dict[str, Any]:
    out = {}
    for name, conv in spec:
        try:
            out[name] = conv(m[name])
        except TypeError as e:
            raise WireError("bad_field", f"{where}.{name}: expected {e}, got {type(m[name]).__name__}") from None
    return out


_LIMIT_ERROR = re.compile(r"exceeds max_(str|bin|array|map|ext)_len\((\d+)\)")


def _caps(limits: WireLimits) -> dict[str, tuple[int, str]]:
    """msgpack length cap and its rejection reason, by the name msgpack's error uses."""
    return {
        "str": (limits.max_string_bytes, "too_large"),
        "bin": (limits.max_string_bytes, "too_large"),
        "array": (limits.max_steps * limits.max_candidates_per_step, "too_large"),
        "map": (_MAX_MAP_LEN, "too_large"),
        "ext": (_HEAD_LEN[4] + 8 * limits.max_array_elements, "array_too_large"),
    }


# ext hook and caps per WireLimits (frozen, hashable), built on first use
_decoders: dict[WireLimits, tuple[Callable[[int, bytes], Any], dict[str, tuple[int, str]]]] = {}


def decode(data: bytes | memoryview, limits: WireLimits = DEFAULT_LIMITS) -> Message:
    """Parse and fully validate one frame.  Raises only `WireError`."""
    try:
        size = memoryview(data).nbytes
    except TypeError:
        raise WireError("malformed", f"not a bytes-like object: {type(data).__name__}") from None
    if size > limits.max_message_bytes:
        raise WireError("too_large", f"{size} bytes > {limits.max_message_bytes}")
    cached = _decoders.get(limits)
    if cached is None:
        cached = _decoders[limits] = (_make_ext_hook(limits), _caps(limits))
    hook, caps = cached
    # Container and ext lengths are also capped by the frame size: a header
    # declaring more items than there are bytes is truncated, not merely big,
    # and msgpack would otherwise preallocate room for all of them.
    try:
        obj = msgpack.unpackb(
            data, raw=False, strict_map_key=True, ext_hook=hook, use_list=True,
            max_str_len=caps["str"][0], max_bin_len=caps["bin"][0],
            max_array_len=min(size, caps["array"][0]), max_map_len=min(size, caps["map"][0]),
            max_ext_len=min(size, caps["ext"][0]),
        )
    except WireError:
        raise
    except Exception as e:  # msgpack documents that it may raise other types too
        # msgpack reports a broken limit only in its message: "N exceeds max_array_len(L)"
        match = _LIMIT_ERROR.search(str(e)) if type(e) is ValueError else None
        if match:
            cap, reason = caps[match.group(1)]
            raise WireError(reason if int(match.group(2)) >= cap else "malformed", str(e)) from None
        raise WireError("malformed", f"{type(e).__name__}: {e}") from None
    if type(obj) is not dict:
        raise WireError("not_a_map", f"top level is {type(obj).__name__}")
    v = obj.get("v")
    if type(v) is not int or v != PROTOCOL_VERSION:
        raise WireError("bad_version", f"v={v!r}, expected {PROTOCOL_VERSION}")
    kind = obj.get("kind")
    if kind == "segment":
        return _decode_segment(obj, limits)
    spec = _SPECS.get(kind) if type(kind) is str else None
    if spec is None:
        raise WireError("unknown_kind", f"kind={kind!r}")
    cls, field_spec = spec
    _check_keys(kind, obj, _KEYS_OF[kind])
    kwargs = _convert(kind, obj, field_spec)
    for name, minimum in _MINIMA.get(kind, ()):
        if kwargs[name] < minimum:
            raise WireError("bad_value", f"{kind}.{name}={kwargs[name]} < {minimum}")
    if kind == "welcome" and not kwargs["heartbeat_s"] > 0:
        raise WireError("bad_value", f"welcome.heartbeat_s={kwargs['heartbeat_s']} must be > 0")
    return cls(**kwargs)


def _decode_segment(obj: dict, limits: WireLimits) -> Segment:
    _check_keys("segment", obj, _SEGMENT_KEYS)
    header, columns = obj["header"], obj["columns"]
    if type(header) is not dict or type(columns) is not dict:
        raise WireError("bad_field", "segment header and columns must be maps")
    _check_keys("segment.header", header, _HEADER_NAMES)
    _check_keys("segment.columns", columns, _COLUMN_NAMES)
    seg = _filled(Segment, columns)
    seg.__dict__["header"] = _filled(SegmentHeader, _convert("segment.header", header, _HEADER_SPEC))
    _validate_columns(seg, limits)
    return seg


def _filled(cls: type, values: dict[str, Any]) -> Any:
    # A frozen dataclass's __init__ sets every field through object.__setattr__,
    # which costs a few microseconds per segment; the keys were checked to be
    # exactly the fields, so they can go straight into the instance __dict__.
    obj = object.__new__(cls)
    obj.__dict__.update(values)
    return obj


# ---------------------------------------------------------------- validation


def _is_int(x: Any) -> bool:
    return (type(x) is int) or isinstance(x, np.integer)


def _is_float(x: Any) -> bool:
    return type(x) is float or type(x) is int or isinstance(x, (np.floating, np.integer))


def _all_str(xs: Any) -> bool:
    if type(xs) is not list and type(xs) is not tuple:
        return False
    try:
        # str.join type-checks every item in C, far faster than a Python loop
        "".join(xs)
    except TypeError:
        return False
    return True


_min, _max = np.minimum.reduce, np.maximum.reduce


def validate_segment(seg: Segment, limits: WireLimits = DEFAULT_LIMITS) -> None:
    """Check every invariant of a segment; raise `WireError` on the first broken one.

    Called by `decode`; collectors may call it before sending.  Column checks
    are vectorised so the cost stays small next to unpacking the strings.
    """
    h = seg.header
    if type(h) is not SegmentHeader:
        raise WireError("bad_field", "segment header is not a SegmentHeader")
    for name, conv in _HEADER_SPEC:
        value = getattr(h, name)
        ok = type(value) is str if conv is _str else _is_int(value) if conv is _int else _is_float(value)
        if not ok:
            raise WireError("bad_field", f"header.{name} has type {type(value).__name__}")
    _validate_columns(seg, limits)


def _validate_columns(seg: Segment, limits: WireLimits) -> None:
    # decode has type-checked the header already; only its values remain
    h = seg.header
    if h.seq < 0 or h.step0 < 0:
        raise WireError("bad_value", f"negative seq ({h.seq}) or step0 ({h.step0})")
    # action_text is not scanned here: it must equal a slice of candidates below
    for name in ("observations", "candidates"):
        if not _all_str(getattr(seg, name)):
            raise WireError("bad_field", f"column {name} must be an array of str")
    if type(seg.action_text) is not list and type(seg.action_text) is not tuple:
        raise WireError("bad_field", "column action_text must be an array of str")
    for name, dtype in _ARRAY_COLUMNS.items():
        a = getattr(seg, name)
        if not isinstance(a, np.ndarray):
            raise WireError("bad_field", f"column {name} must be an array, got {type(a).__name__}")
        # decoded arrays carry the very dtype object of _ARRAY_COLUMNS; `is` skips a slow ==
        if a.dtype is not dtype and a.dtype != dtype:
            raise WireError("bad_dtype", f"column {name} is {a.dtype}, must be {dtype}")
        if a.ndim != 1:
            raise WireError("bad_shape", f"column {name} has shape {a.shape}, must be 1-d")

    T = len(seg.observations)
    if not 1 <= T <= limits.max_steps:
        raise WireError("bad_value", f"{T} steps, must be 1..{limits.max_steps}")
    for name in ("cand_offsets", "action_index", "action_text", "reward", "score", "done", "root_value"):
        if len(getattr(seg, name)) != T + (name == "cand_offsets"):
            raise WireError("column_length", f"{name} has {len(getattr(seg, name))} entries for {T} steps")

    # Every distinct numpy operation costs one to three microseconds here,
    # whatever the array size: unpacking has just evicted numpy's code from
    # the CPU caches.  So the T-length columns are turned into lists once
    # (.tolist() is cheap) and checked with Python builtins over map(), and
    # numpy is kept for the N-length visit/prior checks.
    off = seg.cand_offsets.tolist()
    starts = off[:-1]
    counts = list(map(operator.sub, off[1:], starts))
    if off[0] != 0 or min(counts) < 1 or max(counts) > limits.max_candidates_per_step:
        raise WireError("bad_value", "cand_offsets must start at 0 and increase by 1.."
                        f"{limits.max_candidates_per_step} candidates per step")
    N = off[-1]
    for name in ("candidates", "visits", "prior"):
        if len(getattr(seg, name)) != N:
            raise WireError("column_length", f"{name} has {len(getattr(seg, name))} entries, offsets say {N}")

    ai = seg.action_index.tolist()
    if min(ai) < 0 or any(map(operator.ge, ai, counts)):
        raise WireError("bad_value", "action_index outside its step's candidates")
    cands, text = seg.candidates, seg.action_text
    if list(map(cands.__getitem__, map(operator.add, starts, ai))) != (text if type(text) is list else list(text)):
        raise WireError("bad_value", "action_text differs from candidates[off[t] + action_index[t]]")

    # summed in float64, which cannot overflow for T float32 terms: the sum is
    # finite exactly when every term is
    if not math.isfinite(sum(seg.reward.tolist())):
        raise WireError("bad_value", "reward must be finite")
    root = seg.root_value.tolist()
    if math.inf in root or -math.inf in root:
        raise WireError("bad_value", "root_value must be finite or NaN")
    # visits and prior side by side: one copy serves both checks
    dist = np.concatenate((seg.visits, seg.prior)).reshape(2, N)
    if not _min(dist, axis=None) >= 0:  # NaN fails too
        raise WireError("bad_value", "visits and prior must be non-negative")
    sums = np.add.reduceat(dist, seg.cand_offsets[:-1], axis=1)
    # inf and NaN sums fail these bounds
    if not (_min(sums, axis=None) >= 1 - _SUM_TOLERANCE and _max(sums, axis=None) <= 1 + _SUM_TOLERANCE):
        raise WireError("bad_value", f"visits and prior must sum to 1 per step (within {_SUM_TOLERANCE})")


# ---------------------------------------------------------------- building


def make_segment(
    header: SegmentHeader,
    observations: list[str],
    candidates: list[list[str]],
    action_index: list[int],
    rewards: list[float],
    scores: list[int],
    dones: list[bool],
    visits: list[list[float]] | None = None,
    priors: list[list[float]] | None = None,
    root_values: list[float] | None = None,
) -> Segment:
    """Build a columnar `Segment` from per-step Python lists.

    candidates[t] / visits[t] / priors[t] are step t's lists; visits and priors
    default to uniform, root_values to NaN.  action_text is derived.  The
    result is not validated; call `validate_segment` to check it.
    """
    counts = [len(c) for c in candidates]
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    flat = [c for step in candidates for c in step]

    def per_candidate(lists: list[list[float]] | None) -> np.ndarray:
        if lists is None:
            return np.repeat(np.array([1.0 / n if n else 0.0 for n in counts], np.float32), counts)
        return np.array([x for step in lists for x in step], dtype=np.float32).reshape(-1)

    return Segment(
        header=header,
        observations=list(observations),
        cand_offsets=offsets,
        candidates=flat,
        action_index=np.asarray(action_index, dtype=np.int32).reshape(-1),
        action_text=[step[i] for step, i in zip(candidates, action_index)],
        reward=np.asarray(rewards, dtype=np.float32).reshape(-1),
        score=np.asarray(scores, dtype=np.int32).reshape(-1),
        done=np.asarray(dones, dtype=np.bool_).reshape(-1),
        visits=per_candidate(visits),
        prior=per_candidate(priors),
        root_value=(np.full(len(counts), np.nan, np.float32) if root_values is None
                    else np.asarray(root_values, dtype=np.float32).reshape(-1)),
    )
