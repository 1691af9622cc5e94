"""Wire format of pzstream: every message is one msgpack map in one ZeroMQ frame.

The format is specified in docs/wire.md; this module is its reference
implementation.  `encode` turns a message dataclass into bytes (msgpack),
`decode` turns untrusted bytes back into a dataclass or raises `WireError` --
never any other exception, whatever the input.  Decoding is declarative: a
typed msgspec schema, derived from the message dataclasses, states every
field's type and range and is read in one pass in C; only the rules between a
segment's columns are checked by hand.  Nothing from the network is ever
pickled or evaluated; numeric columns travel as a small msgpack ext type
(code 1) holding a dtype code, the shape and the raw little-endian element
bytes, and are decoded with `np.frombuffer` (no copy beyond the decoder's own
ext payload).
"""

from __future__ import annotations

import math
import re
import struct
import threading
from dataclasses import dataclass, fields
from typing import Annotated, Any, Callable, Literal, Union

import msgpack
import msgspec
import numpy as np
from msgspec import Meta, Struct

PROTOCOL_VERSION: int = 1
ARRAY_EXT_CODE: int = 1

REASONS: frozenset[str] = frozenset({
    "too_large", "malformed", "not_a_map", "bad_version", "unknown_kind", "bad_field",
    "bad_dtype", "bad_shape", "shape_exceeds_frame", "array_too_large", "column_length",
    "bad_value", "resend_history", "busy",
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


HELLO_ROLES = ("collector", "reader")


@dataclass(frozen=True)
class Hello:
    """kind "hello", collector -> hub, first on every connection; pid: OS process id.

    collector_id: 1 to MAX_ID_CHARS characters, no control characters.
    seed: the collector's environment reset seed (episodes replay from it); None = not told.
    role: one of HELLO_ROLES; None = "collector" (plays and sends segments). A "reader" (a prior
    or search server) only follows weights: it fetches and heartbeats, never sends segments, and
    the hub does not count it as a collector.
    session: a secret the sender draws once per process (never shown in logs or status); a new
    connection whose hello repeats the live connection's session continues that collector (the
    same process reconnecting). None: no such continuation.
    """

    collector_id: str
    game: str
    host: str
    pid: int
    capabilities: tuple[str, ...] = ()
    seed: int | None = None
    role: str | None = None
    session: str | None = None


@dataclass(frozen=True)
class Welcome:
    """kind "welcome", hub -> collector, reply to an accepted hello.

    window: initial credits (segments allowed in flight); heartbeat_s: seconds;
    versions: 0 <= v < MAX_VERSION (as every model version on the wire).
    """

    hub_id: str
    window: int
    wm_version: int
    llm_version: int
    heartbeat_s: float


@dataclass(frozen=True)
class Reject:
    """kind "reject", hub -> collector: why a hello/segment was refused (a `REASONS` code or the hub's own);
    also a server's refusal of a request (a search server's ``seq`` is the refused request's request_id)."""

    reason: str
    detail: str
    seq: int | None = None  # the segment this answers (its credit is freed) or search request; None for others


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
class SearchRequest:
    """kind "search", collector -> search server (``--role search``): search one root.

    The server keeps each collector's recent history; a request carries only what is new since the
    collector's last answered request: the previous move's action text and reward
    (``last_action``/``last_reward``, ignored when ``reset``) and the new ``observation`` with its
    ``candidates`` (1 to max_candidates_per_step texts). ``reset``: a new episode starts here (the
    server drops the collector's old context). ``history_*`` (equal lengths H, at most max_steps):
    the episode's recent (observation, action, reward) steps before ``observation``, sent after a
    "resend_history" reject or a local fallback move; when given they replace the server's context.
    request_id >= 0 is echoed in the answer; episode_id >= 0 names the collector's episode.
    """

    collector_id: str
    request_id: int
    episode_id: int
    reset: bool
    observation: str
    candidates: tuple[str, ...]
    last_action: str
    last_reward: float
    history_observations: tuple[str, ...]
    history_actions: tuple[str, ...]
    history_rewards: tuple[float, ...]


@dataclass(frozen=True)
class SearchReply:
    """kind "searched", search server -> collector: the search of one root.

    action_index: 0 <= i < K (the request's candidates); visits [K]: visit distribution (sums to 1);
    root_value: the search's root value; prior [K] or []: the LLM prior (empty: no LLM);
    wm_version / llm_version: the weights every part of this answer used; batch: roots searched
    together with this one (>= 1).
    """

    request_id: int
    action_index: int
    visits: tuple[float, ...]
    root_value: float
    prior: tuple[float, ...]
    wm_version: int
    llm_version: int
    batch: int


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


Message = Union[Hello, Welcome, Reject, Credit, Heartbeat, Segment, Weights, Fetch, Blob, ScoreRequest, ScoreReply,
                SearchRequest, SearchReply, Log]

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

# ---------------------------------------------------------------- array ext

_DTYPE_OF_CODE: dict[int, np.dtype] = {
    1: np.dtype("|b1"), 2: np.dtype("|i1"), 3: np.dtype("|u1"), 4: np.dtype("<i2"),
    5: np.dtype("<i4"), 6: np.dtype("<i8"), 7: np.dtype("<f2"), 8: np.dtype("<f4"),
    9: np.dtype("<f8"),
}
_CODE_OF_DTYPE: dict[np.dtype, int] = {dt: code for code, dt in _DTYPE_OF_CODE.items()}
# Header: dtype u8, ndim u8, 2 zero bytes, ndim x dim u32, zero bytes up to a
# multiple of 8.  The decoded ext payload is a fresh bytes object whose data
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
    ScoreRequest: "score", ScoreReply: "prior", SearchRequest: "search", SearchReply: "searched",
}
_FIELDS_OF: dict[type, tuple[str, ...]] = {cls: tuple(f.name for f in fields(cls)) for cls in _KIND_OF}
_OPTIONAL_OF: dict[type, tuple[str, ...]] = {Hello: ("seed", "role", "session"), Reject: ("seq",)}
_KINDS = frozenset(_KIND_OF.values())


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
        # an unset optional field is left out, so a message that does not use
        # it has the bytes it had before the field existed
        for name in _OPTIONAL_OF.get(cls, ()):
            if body[name] is None:
                del body[name]
    return _packer().pack(body)


# ---------------------------------------------------------------- decode
#
# The happy path is one typed msgspec decode: the schema below declares every
# field's type and every range, so a well-formed frame costs one pass in C.
# When that decode fails, `_explain` re-reads the frame slowly to name the
# first broken rule in the order docs/wire.md gives; only bad frames pay for it.

# Collector ids are logged and used as keys: bounded, and free of characters
# that rewrite a terminal or a log line (C0/C1 controls such as NUL and ESC,
# DEL, Unicode line separators and bidi overrides).
MAX_ID_CHARS = 128
_ID_PATTERN = "^[^\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]*\\Z"
# Peers report model versions; the hub counts them from 0 one at a time, so
# anything past a signed 32-bit counter is a broken or hostile peer.
MAX_VERSION = 2**31


# Ranges beyond the type, by "kind.field" (the segment header's as "segment.field").
_RANGES: dict[str, Meta] = {
    "hello.pid": Meta(ge=0), "welcome.window": Meta(ge=0), "welcome.heartbeat_s": Meta(gt=0),
    "reject.seq": Meta(ge=0), "credit.n": Meta(ge=0), "credit.ack": Meta(ge=-1), "weights.nbytes": Meta(ge=0),
    "fetch.offset": Meta(ge=0), "fetch.length": Meta(ge=1), "blob.offset": Meta(ge=0), "blob.total": Meta(ge=0),
    "segment.seq": Meta(ge=0), "segment.step0": Meta(ge=0),
    "search.request_id": Meta(ge=0), "search.episode_id": Meta(ge=0), "searched.request_id": Meta(ge=0),
    "searched.action_index": Meta(ge=0), "searched.batch": Meta(ge=1),
}
_VERSION = Meta(ge=0, lt=MAX_VERSION)
_COLLECTOR_ID = Meta(min_length=1, max_length=MAX_ID_CHARS, pattern=_ID_PATTERN)


_Builders = dict[type, Callable[[Any], Message]]


def _schema(limits: WireLimits, lengths: bool) -> tuple[msgspec.msgpack.Decoder, _Builders]:
    """The typed decoder for `limits` and, per schema type, the builder of its public message.

    The schema is derived from the message dataclasses (their fields and
    annotations) plus `_RANGES`, so a field is declared once.  Without
    `lengths` it leaves out the caps on str, bin and array lengths, which
    cost about a tenth of a segment's decode: `decode` uses it only for frames
    too short to hold anything over those caps.
    """
    items = limits.max_steps * limits.max_candidates_per_step

    def capped(typ: Any, cap: int) -> Any:
        return Annotated[typ, Meta(max_length=cap)] if lengths else typ

    Text = capped(str, limits.max_string_bytes)
    wire_type: dict[str, Any] = {
        "str": Text, "int": int, "float": float, "bool": bool, "int | None": int, "str | None": Text,
        "bytes": capped(bytes, limits.max_string_bytes),
        "tuple[str, ...]": capped(tuple[Text, ...], items),
        "tuple[int, ...]": capped(tuple[int, ...], items),
        "tuple[float, ...]": capped(tuple[float, ...], items),
        "dict[str, float]": Annotated[dict[Text, int | float], Meta(max_length=_MAX_MAP_LEN)],
    }

    def schema_fields(kind: str, cls: type) -> list[tuple]:
        out: list[tuple] = []
        for f in fields(cls):
            typ = wire_type[f.type]
            if f.name == "collector_id":
                typ = Annotated[str, _COLLECTOR_ID]
            elif kind == "hello" and f.name == "role":
                typ = Literal[HELLO_ROLES]  # type: ignore[valid-type]
            elif f.name in ("version", "wm_version", "llm_version"):
                typ = Annotated[int, _VERSION]
            elif f"{kind}.{f.name}" in _RANGES:
                typ = Annotated[typ, _RANGES[f"{kind}.{f.name}"]]
            # only the optional fields have a None default; a tuple default does not make a field optional
            out.append((f.name, typ | None, None) if f.type in ("int | None", "str | None") else (f.name, typ))
        return out

    # gc=False: these hold only str, numbers and bytes, so they cannot be in a
    # reference cycle, and untracked instances are cheaper to make and free
    class _Message(Struct, forbid_unknown_fields=True, tag_field="kind", gc=False):
        v: Literal[1]  # type: ignore[valid-type]

    builders: _Builders = {}
    for cls, kind in _KIND_OF.items():
        if cls is not Segment:
            schema = msgspec.defstruct(f"_{cls.__name__}", schema_fields(kind, cls), bases=(_Message,), tag=kind)
            builders[schema] = _builder(cls) if cls is not SearchRequest else _checked_search(limits)
    header = msgspec.defstruct("_Header", schema_fields("segment", SegmentHeader), forbid_unknown_fields=True, gc=False)
    texts = capped(list[Text], items)
    columns = msgspec.defstruct(
        "_Columns", [(f.name, msgspec.msgpack.Ext if f.name in _ARRAY_COLUMNS else texts)
                     for f in fields(Segment) if f.name != "header"], forbid_unknown_fields=True, gc=False)
    segment = msgspec.defstruct("_Segment", [("header", header), ("columns", columns)], bases=(_Message,),
                                tag="segment")
    max_elements = limits.max_array_elements
    builders[segment] = lambda s: _segment_of(s, max_elements, limits)
    return msgspec.msgpack.Decoder(Union[tuple(builders)]), builders  # type: ignore[arg-type]


def _builder(cls: type) -> Callable[[Any], Message]:
    names = _FIELDS_OF[cls]
    return lambda s: cls(*[getattr(s, name) for name in names])


def _checked_search(limits: WireLimits) -> Callable[[Any], Message]:
    build = _builder(SearchRequest)

    def checked(s: Any) -> Message:
        req = build(s)
        check_search_request(req, limits)  # type: ignore[arg-type]
        return req

    return checked


def check_search_request(req: SearchRequest, limits: WireLimits = DEFAULT_LIMITS) -> None:
    """The rules of a search request that no field type states; raises WireError."""
    if not 1 <= len(req.candidates) <= limits.max_candidates_per_step:
        raise WireError("bad_value", f"search: {len(req.candidates)} candidates, must be 1.."
                                     f"{limits.max_candidates_per_step}")
    h = len(req.history_observations)
    if len(req.history_actions) != h or len(req.history_rewards) != h:
        raise WireError("column_length", f"search: history has {h} observations, {len(req.history_actions)} actions "
                                         f"and {len(req.history_rewards)} rewards")
    if h > limits.max_steps:
        raise WireError("too_large", f"search: {h} history steps > {limits.max_steps}")
    if not (math.isfinite(req.last_reward) and all(math.isfinite(r) for r in req.history_rewards)):
        raise WireError("bad_value", "search: rewards must be finite")


_HEADER_FIELDS = tuple(f.name for f in fields(SegmentHeader))
# (column, dtype code, dtype, itemsize, is bool) of every numeric column, in wire order
_COLUMN_SPECS = tuple((name, _CODE_OF_DTYPE[dt], dt, dt.itemsize, dt.kind == "b") for name, dt in _ARRAY_COLUMNS.items())


def _segment_of(s: Any, max_elements: int, limits: WireLimits) -> Segment:
    # The segment and header are filled straight into their __dict__: a frozen
    # dataclass's __init__ sets each field through object.__setattr__, which
    # costs a few microseconds per segment, and the schema has checked the
    # fields already.
    header = object.__new__(SegmentHeader)
    header.__dict__.update(zip(_HEADER_FIELDS, msgspec.structs.astuple(s.header)))
    c = s.columns
    seg = object.__new__(Segment)
    values = seg.__dict__
    values["header"] = header
    values["observations"] = c.observations
    values["candidates"] = c.candidates
    values["action_text"] = c.action_text
    for name, want, dtype, itemsize, is_bool in _COLUMN_SPECS:
        ext = getattr(c, name)
        data = ext.data
        # fast path: a well-formed 1-d array of the column's own dtype (8-byte header)
        if ext.code == ARRAY_EXT_CODE and len(data) >= 8:
            code, ndim, pad, count = _HEAD1.unpack_from(data)
            if code == want and ndim == 1 and pad == 0 and count <= max_elements \
                    and len(data) == 8 + count * itemsize \
                    and not (is_bool and data[8:].translate(None, b"\x00\x01")):
                values[name] = np.frombuffer(data, dtype, count, 8)
                continue
        a = _parse_array(ext.code, data, max_elements)  # raises the exact reason, if any
        if a.dtype != dtype:
            raise WireError("bad_dtype", f"column {name} is {a.dtype}, must be {dtype}")
        raise WireError("bad_shape", f"column {name} has shape {a.shape}, must be 1-d")
    _check_segment(seg, limits)
    return seg


# Per WireLimits (frozen, hashable), built on first use: the typed decoder with
# length caps, the one without, the largest frame the latter may read, and the
# builders of both.
_decoders: dict[WireLimits, tuple[msgspec.msgpack.Decoder, msgspec.msgpack.Decoder, int, _Builders]] = {}


def _decoders_for(limits: WireLimits) -> tuple[msgspec.msgpack.Decoder, msgspec.msgpack.Decoder, int, _Builders]:
    capped, capped_builders = _schema(limits, lengths=True)
    free, free_builders = _schema(limits, lengths=False)
    # A str of n characters, a bin of n bytes and an array of n items each take
    # at least n bytes of the frame, so no frame this short can break a cap.
    short = min(limits.max_string_bytes, limits.max_steps * limits.max_candidates_per_step)
    return capped, free, short, {**capped_builders, **free_builders}


def decode(data: bytes | memoryview, limits: WireLimits = DEFAULT_LIMITS) -> Message:
    """Parse and fully validate one frame.  Raises only `WireError`."""
    try:
        size = memoryview(data).nbytes
    except TypeError:
        raise WireError("malformed", f"not a bytes-like object: {type(data).__name__}") from None
    if size > limits.max_message_bytes:
        raise WireError("too_large", f"{size} bytes > {limits.max_message_bytes}")
    schema = _decoders.get(limits)
    if schema is None:
        schema = _decoders[limits] = _decoders_for(limits)
    capped, free, short, builders = schema
    try:
        s = (free if size <= short else capped).decode(data)
    except Exception as e:  # msgspec raises DecodeError, ValidationError and, on deep nesting, RecursionError
        raise _explain(data, limits, e) from None
    return builders[type(s)](s)


def _caps(limits: WireLimits) -> dict[str, tuple[int, str]]:
    """msgpack length cap and its rejection reason, by the name msgpack's error uses."""
    return {
        "str": (limits.max_string_bytes, "too_large"),
        "bin": (limits.max_string_bytes, "too_large"),
        "array": (limits.max_steps * limits.max_candidates_per_step, "too_large"),
        "map": (_MAX_MAP_LEN, "too_large"),
        "ext": (_HEAD_LEN[4] + 8 * limits.max_array_elements, "array_too_large"),
    }


_LIMIT_ERROR = re.compile(r"exceeds max_(str|bin|array|map|ext)_len\((\d+)\)")
# msgspec's validation messages, by the reason they mean; the first match wins
_VALIDATION_REASONS = (
    (re.compile(r"^Object (missing required|contains unknown) field"), "bad_field"),
    (re.compile(r" - at `key` in `"), "bad_field"),  # a bin map key: msgpack refused every other non-str key
    (re.compile(r"^Expected `\w+` of length <= "), "too_large"),
    (re.compile(r"^Expected `\w+` (>|<|of length >=|matching regex)"), "bad_value"),
    (re.compile(r"^Invalid enum value"), "bad_value"),
)
_AT_COLLECTOR_ID = re.compile(r"`\$\.(header\.)?collector_id`$")
_MAX_DETAIL_CHARS = 300


def _shown(text: str) -> str:
    """Peer-chosen text (a key, a kind) made safe to log: escaped where not printable, and short."""
    if not text.isprintable():
        text = repr(text)[1:-1]
    return text if len(text) <= _MAX_DETAIL_CHARS else text[:_MAX_DETAIL_CHARS] + "..."


def _any_ext(code: int, data: bytes) -> tuple[int, bytes]:
    # msgpack.ExtType refuses the reserved codes -128..-2, but they are valid msgpack: a frame
    # that holds one is judged by where it stands (bad_version, bad_field, ...), not malformed
    return code, data


def _explain(data: bytes | memoryview, limits: WireLimits, error: Exception) -> WireError:
    """The WireError for a frame the typed decoder refused.

    msgspec stops at the first field it cannot use, before it has read the
    rest of the frame, so a truncated frame may first look like a wrong type.
    The frame is therefore parsed again with msgpack (bounded by the same
    limits) to find framing faults, the version and the kind first, as the
    documented order wants; what remains is in msgspec's message.
    """
    size = memoryview(data).nbytes
    caps = _caps(limits)
    try:
        # Container and ext lengths are also capped by the frame size: a
        # header declaring more items than there are bytes is truncated, not
        # merely big, and msgpack would otherwise preallocate room for them.
        obj = msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True,
            max_str_len=caps["str"][0], max_bin_len=caps["bin"][0],
            max_array_len=min(size, caps["array"][0]), max_map_len=min(size, caps["map"][0]),
            max_ext_len=min(size, caps["ext"][0]), ext_hook=_any_ext,
        )
    except Exception as e:  # msgpack documents that it may raise other types too
        # msgpack reports a broken limit only in its message: "N exceeds max_array_len(L)"
        match = _LIMIT_ERROR.search(str(e)) if type(e) is ValueError else None
        if match:
            cap, reason = caps[match.group(1)]
            return WireError(reason if int(match.group(2)) >= cap else "malformed", _shown(str(e)))
        return WireError("malformed", _shown(f"{type(e).__name__}: {e}"))
    if type(obj) is not dict:
        return WireError("not_a_map", f"top level is {type(obj).__name__}")
    v = obj.get("v")
    if type(v) is not int or v != PROTOCOL_VERSION:
        return WireError("bad_version", _shown(f"v={v!r}, expected {PROTOCOL_VERSION}"))
    kind = obj.get("kind")
    if type(kind) is not str or kind not in _KINDS:
        return WireError("unknown_kind", _shown(f"kind={kind!r}"))
    if not isinstance(error, msgspec.ValidationError):
        # msgpack read what msgspec could not (a nesting depth, say): still not a frame we take
        return WireError("malformed", _shown(f"{type(error).__name__}: {error}"))
    text = _shown(str(error))
    reason = next((r for pattern, r in _VALIDATION_REASONS if pattern.search(text)), "bad_field")
    if reason == "bad_field" and "`$.columns.action_text[" in text:
        # a non-str entry cannot equal the str candidate it must repeat: the documented bad_value
        return WireError("bad_value", f"segment: action_text differs from candidates[off[t] + action_index[t]]: {text}")
    if reason != "bad_field" and _AT_COLLECTOR_ID.search(text):
        return WireError("bad_value", f"{kind}: collector_id must be 1 to {MAX_ID_CHARS} characters with no "
                                      f"control characters (NUL, ESC, ...): {text}")
    return WireError(reason, f"{kind}: {text}")


# ---------------------------------------------------------------- validation


def validate_segment(seg: Segment, limits: WireLimits = DEFAULT_LIMITS) -> None:
    """Check every invariant of a segment; raise `WireError` on the first broken one.

    Collectors may call it before sending.  The segment is checked exactly as
    the hub will check it, by encoding it and decoding the bytes, so there is
    one set of rules.
    """
    if type(seg.header) is not SegmentHeader:
        raise WireError("bad_field", "segment header is not a SegmentHeader")
    try:
        data = encode(seg)
    except TypeError as e:  # a value msgpack cannot carry at all
        raise WireError("bad_field", str(e)) from None
    decode(data, limits)


_min, _max, _all = np.minimum.reduce, np.maximum.reduce, np.logical_and.reduce
_U32, _F64 = np.dtype("<u4"), np.dtype("<f8")
_INF32 = (np.float32(np.inf).tobytes(), np.float32(-np.inf).tobytes())


def _check_segment(seg: Segment, limits: WireLimits) -> None:
    """The rules between columns, which no per-field type can state.

    Each numpy call costs one to three microseconds here, whatever the array
    size (decoding has just pushed numpy's code out of the CPU caches), which
    is most of the cost of these checks: the work is arranged to need few.
    """
    T = len(seg.observations)
    if not 1 <= T <= limits.max_steps:
        raise WireError("bad_value", f"{T} steps, must be 1..{limits.max_steps}")
    for name in ("cand_offsets", "action_index", "action_text", "reward", "score", "done", "root_value"):
        if len(getattr(seg, name)) != T + (name == "cand_offsets"):
            raise WireError("column_length", f"{name} has {len(getattr(seg, name))} entries for {T} steps")

    off = seg.cand_offsets
    starts = off[:-1]
    counts = off[1:] - starts
    # As uint32 a negative action index is huge, so one comparison checks
    # 0 <= a < count, which also proves count >= 1 (offsets strictly increase).
    # int32 wrap-around cannot fake this: with T <= max_steps and counts <=
    # max_candidates_per_step every true offset stays far below 2**31.
    if off[0] != 0 or not _all(seg.action_index.view(_U32) < counts) \
            or _max(counts) > limits.max_candidates_per_step:
        raise WireError("bad_value", "cand_offsets must start at 0 and increase by 1.."
                        f"{limits.max_candidates_per_step} candidates per step, and 0 <= action_index[t] < "
                        "off[t+1] - off[t]")
    N = len(seg.candidates)
    if off[-1] != N or len(seg.visits) != N or len(seg.prior) != N:
        raise WireError("column_length", f"offsets say {off[-1]} candidates; candidates, visits and prior have "
                        f"{N}, {len(seg.visits)} and {len(seg.prior)}")
    if list(map(seg.candidates.__getitem__, (starts + seg.action_index).tolist())) != seg.action_text:
        raise WireError("bad_value", "action_text differs from candidates[off[t] + action_index[t]]")

    # summed in float64, which cannot overflow for T float32 terms: the sum is
    # finite exactly when every term is
    if not math.isfinite(np.add.reduce(seg.reward, dtype=_F64)):
        raise WireError("bad_value", "reward must be finite")
    # NaN is allowed and infinity is not; searching the bytes for the two
    # infinities is far cheaper than a numpy pass, and a hit that straddles
    # two elements is settled by the exact test
    raw = seg.root_value.tobytes()
    if (_INF32[0] in raw or _INF32[1] in raw) and np.isinf(seg.root_value).any():
        raise WireError("bad_value", "root_value must be finite or NaN")
    # visits and prior side by side: one copy serves both checks
    dist = np.concatenate((seg.visits, seg.prior)).reshape(2, N)
    if not _min(dist, axis=None) >= 0:  # NaN fails too
        raise WireError("bad_value", "visits and prior must be non-negative")
    sums = np.add.reduceat(dist, starts, axis=1)
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
