"""Properties of the wire codec (pzstream/stream/wire.py), checked by hypothesis.

1. Every message kind, built within the documented limits, decodes equal to what was encoded.
2. Anything else -- arbitrary bytes, truncations, bit flips, wrong-typed or missing fields,
   oversize values, wrong versions and kinds -- either decodes to a valid message (one that
   re-encodes and decodes to itself) or raises `WireError` with a documented reason; never
   another exception, and never slowly.  Where docs/wire.md names the reason for a damage
   exactly (a truncated frame is `malformed`, a bad `v` is `bad_version`, ...) that reason is
   asserted.
"""
from __future__ import annotations

import math
import struct
import time
from dataclasses import dataclass, fields, replace
from typing import Any

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pzstream.stream import wire
from pzstream.stream.wire import WireError, WireLimits

# Small limits make oversize values cheap to build; every valid message below fits them,
# so the round trip is checked under both these and the defaults.
SMALL = WireLimits(max_message_bytes=64 * 1024, max_array_elements=256, max_steps=8,
                   max_candidates_per_step=8, max_string_bytes=256)
LIMITS = (wire.DEFAULT_LIMITS, SMALL)
ITEMS = SMALL.max_steps * SMALL.max_candidates_per_step  # the msgpack array item cap under SMALL
# A decode, even of a hostile frame, takes microseconds; this bound only catches a hang.
SLOW_S = 1.0

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- valid messages

INT64 = st.integers(-(2**63), 2**63 - 1)
UINT = st.integers(0, 2**64 - 1)  # msgpack carries unsigned ints up to 2^64 - 1
VERSION = st.integers(0, wire.MAX_VERSION - 1)
TEXT = st.text(max_size=24)  # hypothesis leaves out surrogates, which utf-8 cannot carry
SHORT_TEXT = st.text(max_size=6)  # for the many candidate texts of a segment: cheaper to draw
TEXTS = st.lists(TEXT, max_size=6).map(tuple)
ANY_FLOAT = st.floats()  # NaN and both infinities too: float fields other than those ranged take them
FINITE = st.floats(allow_nan=False, allow_infinity=False)
# docs/wire.md, Framing: an id is 1 to 128 characters, none of them a control character
_ID_FORBIDDEN = "".join(map(chr, [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029,
                                  *range(0x202A, 0x202F), *range(0x2066, 0x206A)]))
COLLECTOR_ID = st.text(st.characters(codec="utf-8", exclude_characters=_ID_FORBIDDEN), min_size=1,
                       max_size=wire.MAX_ID_CHARS)
STATS = st.dictionaries(TEXT, st.one_of(INT64, ANY_FLOAT), max_size=6)


def normalised(weights: list[int]) -> list[float]:
    """Non-negative weights made a distribution (sums to 1 within the wire's float32 tolerance)."""
    total = sum(weights)
    return [w / total for w in weights] if total else [1.0 / len(weights)] * len(weights)


@st.composite
def segments(draw: st.DrawFn) -> wire.Segment:
    """A valid segment within SMALL. Numeric columns are drawn as raw bytes (one draw per column,
    which keeps this strategy fast): every float32 bit pattern, NaN payloads and subnormals included."""
    header = wire.SegmentHeader(
        game=draw(TEXT), collector_id=draw(COLLECTOR_ID), seq=draw(UINT), episode_id=draw(INT64),
        step0=draw(UINT), wm_version=draw(VERSION), llm_version=draw(VERSION),
        t_start=draw(ANY_FLOAT), t_end=draw(ANY_FLOAT))
    steps = draw(st.integers(1, SMALL.max_steps))

    def column(dtype: str, n: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize * n
        return np.frombuffer(draw(st.binary(min_size=size, max_size=size)), dtype)

    counts = (1 + column("u1", steps) % SMALL.max_candidates_per_step).tolist()
    n = sum(counts)
    starts = np.cumsum([0] + counts[:-1])
    per_step = lambda xs: [list(xs[a:a + k]) for a, k in zip(starts, counts)]  # noqa: E731
    reward = column("<f4", steps).copy()
    reward[~np.isfinite(reward)] = 0.0  # rewards are finite
    root_value = column("<f4", steps).copy()
    root_value[np.isinf(root_value)] = math.nan  # NaN means "no estimate"; infinities are refused
    return wire.make_segment(
        header,
        observations=draw(st.lists(TEXT, min_size=steps, max_size=steps)),
        candidates=per_step(draw(st.lists(SHORT_TEXT, min_size=n, max_size=n))),
        action_index=(column("u1", steps) % counts).tolist(),
        rewards=reward,
        scores=column("<i4", steps),
        dones=column("u1", steps) % 2 == 1,
        # byte weights, zeros (a candidate never visited) included
        visits=[normalised(w) for w in per_step(column("u1", n).tolist())],
        priors=[normalised(w) for w in per_step(column("u1", n).tolist())],
        root_values=root_value,
    )


@st.composite
def search_requests(draw: st.DrawFn) -> wire.SearchRequest:
    h = draw(st.integers(0, SMALL.max_steps))
    return wire.SearchRequest(
        collector_id=draw(COLLECTOR_ID), request_id=draw(UINT), episode_id=draw(UINT), reset=draw(st.booleans()),
        observation=draw(TEXT),
        candidates=tuple(draw(st.lists(TEXT, min_size=1, max_size=SMALL.max_candidates_per_step))),
        last_action=draw(TEXT), last_reward=draw(FINITE),
        history_observations=tuple(draw(st.lists(TEXT, min_size=h, max_size=h))),
        history_actions=tuple(draw(st.lists(TEXT, min_size=h, max_size=h))),
        history_rewards=tuple(draw(st.lists(FINITE, min_size=h, max_size=h))),
    )


MESSAGES: dict[type, st.SearchStrategy] = {
    wire.Hello: st.builds(wire.Hello, collector_id=COLLECTOR_ID, game=TEXT, host=TEXT, pid=UINT,
                          capabilities=TEXTS, seed=st.none() | INT64,
                          role=st.sampled_from([None, *wire.HELLO_ROLES]), session=st.none() | TEXT),
    wire.Welcome: st.builds(wire.Welcome, hub_id=TEXT, window=UINT, wm_version=VERSION, llm_version=VERSION,
                            heartbeat_s=st.floats(min_value=0.0, exclude_min=True)),
    wire.Reject: st.builds(wire.Reject, reason=TEXT, detail=TEXT, seq=st.none() | UINT),
    wire.Credit: st.builds(wire.Credit, n=UINT, ack=st.integers(-1, 2**64 - 1)),
    wire.Heartbeat: st.builds(wire.Heartbeat, sender=TEXT, time=ANY_FLOAT, stats=STATS),
    wire.Weights: st.builds(wire.Weights, model=TEXT, version=VERSION, uri=TEXT,
                            sha256=st.text("0123456789abcdef", min_size=64, max_size=64), nbytes=UINT),
    wire.Fetch: st.builds(wire.Fetch, model=TEXT, version=VERSION, offset=UINT, length=st.integers(1, 2**64 - 1)),
    wire.Blob: st.builds(wire.Blob, model=TEXT, version=VERSION, offset=UINT, total=UINT, sha256=TEXT,
                         data=st.binary(max_size=SMALL.max_string_bytes)),
    wire.ScoreRequest: st.builds(wire.ScoreRequest, request_id=INT64, prompts=TEXTS, candidates=TEXTS,
                                 counts=st.lists(INT64, max_size=6).map(tuple)),
    wire.ScoreReply: st.builds(wire.ScoreReply, request_id=INT64, llm_version=VERSION,
                               logprior=st.lists(ANY_FLOAT, max_size=6).map(tuple)),
    wire.SearchRequest: search_requests(),
    wire.SearchReply: st.builds(wire.SearchReply, request_id=UINT, action_index=UINT,
                                visits=st.lists(ANY_FLOAT, max_size=6).map(tuple), root_value=ANY_FLOAT,
                                prior=st.lists(ANY_FLOAT, max_size=6).map(tuple), wm_version=VERSION,
                                llm_version=VERSION, batch=st.integers(1, 2**64 - 1)),
    wire.Log: st.builds(wire.Log, role=TEXT, sender=TEXT, level=INT64, time=ANY_FLOAT, logger=TEXT, message=TEXT),
    wire.Segment: segments(),
}
ANY_MESSAGE = st.one_of(*MESSAGES.values())


def test_every_message_kind_has_a_strategy() -> None:
    assert set(MESSAGES) == set(wire.Message.__args__)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- equality


def same_value(a: Any, b: Any) -> bool:
    """Equal value and type; NaN equals NaN (a float field may carry it)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(map(same_value, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_value(a[k], b[k]) for k in a)
    return a == b


def same_message(a: wire.Message, b: wire.Message) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, wire.Segment):
        if not all(same_value(getattr(a.header, f.name), getattr(b.header, f.name)) for f in fields(a.header)):
            return False
        return a.same_as(replace(b, header=a.header))  # same_as compares the header with ==, not NaN-aware
    return all(same_value(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))


def decode_quickly(data: bytes | memoryview, limits: WireLimits) -> wire.Message:
    start = time.perf_counter()
    try:
        return wire.decode(data, limits)
    finally:
        assert time.perf_counter() - start < SLOW_S, f"decode of {len(data)} bytes took over {SLOW_S}s"


# ---------------------------------------------------------------- property 1: round trip


@PROPERTY
@given(ANY_MESSAGE)
def test_anything_encoded_decodes_equal(msg: wire.Message) -> None:
    data = wire.encode(msg)
    for limits in LIMITS:
        back = decode_quickly(data, limits)
        assert same_message(back, msg), (msg, back)
    # a frame that is a slice of a bigger buffer (as a zmq frame can be) reads the same
    assert same_message(wire.decode(memoryview(b"\x00" + data + b"\x00")[1:-1]), msg)
    if isinstance(msg, wire.Segment):
        wire.validate_segment(msg, SMALL)


@PROPERTY
@given(ANY_MESSAGE)
def test_encoding_is_deterministic_and_decoding_is_idempotent(msg: wire.Message) -> None:
    data = wire.encode(msg)
    assert wire.encode(wire.decode(data)) == data


# ---------------------------------------------------------------- property 2: everything else


def decodes_or_is_refused(data: bytes, limits: WireLimits = SMALL) -> WireError | None:
    """The codec's whole contract on untrusted bytes: a valid message, or a WireError with a
    documented reason.  Returns the error (None when the bytes decoded)."""
    try:
        msg = decode_quickly(data, limits)
    except WireError as e:
        assert e.reason in wire.REASONS, e
        assert isinstance(e.detail, str) and len(e.detail) < 2000
        return e
    # what was accepted is valid: it survives its own round trip unchanged
    assert same_message(wire.decode(wire.encode(msg), limits), msg), msg
    return None


def reason_of(data: bytes, limits: WireLimits = SMALL) -> str | None:
    error = decodes_or_is_refused(data, limits)
    return None if error is None else error.reason


def tree_of(msg: wire.Message) -> dict:
    """The raw msgpack map of an encoded message (array columns stay ExtType)."""
    return msgpack.unpackb(wire.encode(msg), raw=False)


@dataclass(frozen=True)
class AnyExt:
    """An ext value with any type code, -128 to 127 (msgpack.ExtType takes only 0 to 127)."""

    code: int
    data: bytes

    def frame(self) -> bytes:
        n, code = len(self.data), struct.pack("b", self.code)
        fixed = {1: b"\xd4", 2: b"\xd5", 4: b"\xd6", 8: b"\xd7", 16: b"\xd8"}
        if n in fixed:
            return fixed[n] + code + self.data
        for marker, fmt in ((b"\xc7", ">B"), (b"\xc8", ">H"), (b"\xc9", ">I")):
            if n < 1 << (8 * struct.calcsize(fmt)):
                return marker + struct.pack(fmt, n) + code + self.data
        raise ValueError("ext too long")


def pack(tree: Any) -> bytes:
    """msgpack bytes of a tree that may hold AnyExt values: each is packed as a placeholder ext
    with a unique payload, whose bytes are then replaced by the AnyExt's own."""
    spliced: dict[bytes, bytes] = {}

    def swap(value: Any) -> Any:
        if isinstance(value, AnyExt):
            marker = struct.pack(">Q", 0x5A17_0000_0000_0000 + len(spliced))
            spliced[b"\xd7\x7f" + marker] = value.frame()
            return msgpack.ExtType(127, marker)
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return value

    data = msgpack.packb(swap(tree), use_bin_type=True)
    for placeholder, real in spliced.items():
        assert data.count(placeholder) == 1
        data = data.replace(placeholder, real)
    return data


def paths_of(tree: dict) -> list[tuple[str, ...]]:
    """Every field of a message map as a key path: top-level keys and, in a segment, the header's and columns' keys."""
    out: list[tuple[str, ...]] = []
    for key, value in tree.items():
        out.append((key,))
        if key in ("header", "columns") and isinstance(value, dict):
            out.extend((key, sub) for sub in value)
    return out


def parent_of(tree: dict, path: tuple[str, ...]) -> dict:
    return tree if len(path) == 1 else tree[path[0]]


# Any ext code; -1 is msgpack's timestamp, which msgpack itself refuses (`malformed`) unless its
# payload is a well-formed timestamp, so the properties that name an exact reason leave it out.
EXT = st.builds(AnyExt, st.integers(-128, 127), st.binary(max_size=40))
PLAIN_EXT = st.builds(AnyExt, st.integers(-128, 127).filter(lambda c: c != -1), st.binary(max_size=40))


def wild(ext: st.SearchStrategy) -> st.SearchStrategy:
    """Values of every msgpack type, for a field that wants another."""
    small = st.integers(-(2**63), 2**64 - 1)
    return st.one_of(
        st.none(), st.booleans(), small, st.floats(), st.text(max_size=8), st.binary(max_size=8),
        st.lists(st.integers(-5, 5), max_size=3), st.lists(st.text(max_size=3), max_size=3),
        st.dictionaries(st.text(max_size=3), small, max_size=2), ext,
    )


WILD = wild(EXT)
PLAIN_WILD = wild(PLAIN_EXT)


@PROPERTY
@given(st.binary(max_size=512))
def test_arbitrary_bytes_decode_or_are_refused(data: bytes) -> None:
    decodes_or_is_refused(data)
    decodes_or_is_refused(data, wire.DEFAULT_LIMITS)


@PROPERTY
@given(ANY_MESSAGE, st.data())
def test_a_truncated_frame_is_malformed(msg: wire.Message, data: st.DataObject) -> None:
    frame = wire.encode(msg)
    cut = data.draw(st.integers(0, len(frame) - 1))
    assert reason_of(frame[:cut]) == "malformed"


@PROPERTY
@given(ANY_MESSAGE, st.binary(min_size=1, max_size=16))
def test_trailing_bytes_are_malformed(msg: wire.Message, tail: bytes) -> None:
    assert reason_of(wire.encode(msg) + tail) == "malformed"


@PROPERTY
@given(ANY_MESSAGE, st.data())
def test_bit_flips_decode_or_are_refused(msg: wire.Message, data: st.DataObject) -> None:
    frame = bytearray(wire.encode(msg))
    for bit in data.draw(st.lists(st.integers(0, 8 * len(frame) - 1), min_size=1, max_size=8)):
        frame[bit // 8] ^= 1 << (bit % 8)
    decodes_or_is_refused(bytes(frame))


@PROPERTY
@given(ANY_MESSAGE, st.data())
def test_byte_edits_decode_or_are_refused(msg: wire.Message, data: st.DataObject) -> None:
    """Overwritten, inserted and deleted bytes (lengths and headers shift, unlike with bit flips)."""
    frame = bytearray(wire.encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(frame)))
        op = data.draw(st.sampled_from(["set", "insert", "delete"]))
        if op == "insert" or not frame:
            frame[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "set":
            frame[min(pos, len(frame) - 1)] = data.draw(st.integers(0, 255))
        else:
            del frame[pos:pos + data.draw(st.integers(1, 8))]
    decodes_or_is_refused(bytes(frame))


@PROPERTY
@given(ANY_MESSAGE, st.data(), WILD)
def test_a_wrong_typed_field_decodes_or_is_refused(msg: wire.Message, data: st.DataObject, value: Any) -> None:
    tree = tree_of(msg)
    path = data.draw(st.sampled_from(paths_of(tree)))
    parent_of(tree, path)[path[-1]] = value
    decodes_or_is_refused(pack(tree))


@PROPERTY
@given(ANY_MESSAGE, st.data())
def test_a_missing_field_is_refused_unless_optional(msg: wire.Message, data: st.DataObject) -> None:
    tree = tree_of(msg)
    path = data.draw(st.sampled_from(paths_of(tree)))
    del parent_of(tree, path)[path[-1]]
    reason = reason_of(pack(tree))
    if path == ("v",):
        assert reason == "bad_version"
    elif path == ("kind",):
        assert reason == "unknown_kind"
    elif path[-1] in ("seed", "role", "session", "seq") and type(msg) in (wire.Hello, wire.Reject):
        assert reason is None  # docs/wire.md, Versioning: the optional fields of version 1
    else:
        assert reason == "bad_field", path


@PROPERTY
@given(ANY_MESSAGE, st.data(), st.text(min_size=1, max_size=12), PLAIN_WILD)
def test_an_unknown_extra_field_is_bad_field(msg: wire.Message, data: st.DataObject, key: str, value: Any) -> None:
    tree = tree_of(msg)
    where = data.draw(st.sampled_from([()] + [(k,) for k in ("header", "columns") if k in tree]))
    target = tree if not where else tree[where[0]]
    if key in target:
        return
    target[key] = value
    assert reason_of(pack(tree)) == "bad_field"


@PROPERTY
@given(ANY_MESSAGE, PLAIN_WILD)
def test_a_wrong_version_is_bad_version(msg: wire.Message, v: Any) -> None:
    if type(v) is int and v == wire.PROTOCOL_VERSION:
        return
    tree = tree_of(msg)
    tree["v"] = v
    assert reason_of(pack(tree)) == "bad_version"


def test_version_1_in_any_integer_encoding_is_accepted() -> None:
    body = pack({"kind": "credit", "n": 1, "ack": 5})[1:]  # the map's entries without its fixmap header
    for one in (b"\x01", b"\xcc\x01", b"\xcd\x00\x01", b"\xce\x00\x00\x00\x01", b"\xcf" + struct.pack(">Q", 1),
                b"\xd0\x01", b"\xd1\x00\x01", b"\xd2\x00\x00\x00\x01", b"\xd3" + struct.pack(">q", 1)):
        assert wire.decode(b"\x84\xa1v" + one + body) == wire.Credit(n=1, ack=5)


@PROPERTY
@given(ANY_MESSAGE, PLAIN_WILD)
def test_an_unknown_kind_is_unknown_kind(msg: wire.Message, kind: Any) -> None:
    if isinstance(kind, str) and kind in wire._KINDS:
        return
    tree = tree_of(msg)
    tree["kind"] = kind
    assert reason_of(pack(tree)) == "unknown_kind"


@PROPERTY
@given(st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=20),
                 st.binary(max_size=20), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5), PLAIN_EXT))
def test_a_top_level_value_that_is_no_map_is_not_a_map(value: Any) -> None:
    assert reason_of(pack(value)) == "not_a_map"


OVERSIZE = st.one_of(
    st.text(min_size=SMALL.max_string_bytes + 1, max_size=SMALL.max_string_bytes + 40),
    st.binary(min_size=SMALL.max_string_bytes + 1, max_size=SMALL.max_string_bytes + 40),
    st.lists(st.integers(0, 127), min_size=ITEMS + 1, max_size=ITEMS + 20),
    st.integers(4097, 4200).map(lambda n: {str(i): i for i in range(n)}),  # over the 4096-entry map cap
)


@PROPERTY
@given(ANY_MESSAGE, st.data(), OVERSIZE)
def test_an_oversize_value_anywhere_is_too_large(msg: wire.Message, data: st.DataObject, value: Any) -> None:
    """docs/wire.md, Limits: a str/bin over max_string_bytes, an array over max_steps x
    max_candidates_per_step items and a map over 4096 entries are `too_large`, in any field."""
    tree = tree_of(msg)
    path = data.draw(st.sampled_from(paths_of(tree)))
    parent_of(tree, path)[path[-1]] = value
    assert reason_of(pack(tree)) == "too_large"


@PROPERTY
@given(ANY_MESSAGE, st.integers(1, 512))
def test_a_frame_over_max_message_bytes_is_too_large(msg: wire.Message, extra: int) -> None:
    frame = wire.encode(msg)
    limits = replace(SMALL, max_message_bytes=max(1, len(frame) - extra))
    assert reason_of(frame, limits) == "too_large"


# ---------------------------------------------------------------- segment columns


def with_ext(seg: wire.Segment, column: str, payload: bytes, code: int = wire.ARRAY_EXT_CODE) -> bytes:
    tree = tree_of(seg)
    tree["columns"][column] = AnyExt(code, payload)
    return pack(tree)


ARRAY_COLUMNS = st.sampled_from(sorted(wire._ARRAY_COLUMNS))


@PROPERTY
@given(segments(), ARRAY_COLUMNS, st.binary(max_size=64), st.integers(-128, 127))
def test_a_column_of_arbitrary_ext_bytes_decodes_or_is_refused(seg: wire.Segment, column: str, payload: bytes,
                                                              code: int) -> None:
    decodes_or_is_refused(with_ext(seg, column, payload, code))


@PROPERTY
@given(segments(), ARRAY_COLUMNS, st.integers(0, 4), st.data())
def test_an_array_header_that_lies_about_its_shape_is_refused(seg: wire.Segment, column: str, ndim: int,
                                                             data: st.DataObject) -> None:
    """A column ext whose header declares a shape its payload does not hold: the documented
    reason follows from the declared element count and the payload length."""
    ext = tree_of(seg)["columns"][column]
    dtype = wire._ARRAY_COLUMNS[column]
    elements = ext.data[8:]  # every encoded column is 1-d: an 8-byte header
    dim = st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1))
    dims = data.draw(st.lists(dim, min_size=ndim, max_size=ndim))
    head = bytes([ext.data[0], ndim, 0, 0]) + struct.pack(f"<{ndim}I", *dims)
    head += bytes(-len(head) % 8)
    count = math.prod(dims)
    reason = reason_of(with_ext(seg, column, head + elements))
    if count > SMALL.max_array_elements:
        assert reason == "array_too_large"
    elif len(head) + count * dtype.itemsize > len(head) + len(elements):
        assert reason == "shape_exceeds_frame"
    elif len(head) + count * dtype.itemsize < len(head) + len(elements):
        assert reason == "bad_shape"
    elif ndim != 1:
        assert reason == "bad_shape"  # the right byte count, but a column must be 1-d
    else:
        assert reason in (None, "column_length", "bad_value")  # a 1-d column of another length, or the same


@PROPERTY
@given(segments(), ARRAY_COLUMNS, st.integers(0, 255).filter(lambda c: c not in range(1, 10)))
def test_a_dtype_code_outside_the_whitelist_is_bad_dtype(seg: wire.Segment, column: str, code: int) -> None:
    ext = tree_of(seg)["columns"][column]
    assert reason_of(with_ext(seg, column, bytes([code]) + ext.data[1:])) == "bad_dtype"


@PROPERTY
@given(segments(), ARRAY_COLUMNS, st.sampled_from(sorted(wire._DTYPE_OF_CODE)))
def test_a_whitelisted_dtype_other_than_the_columns_is_bad_dtype(seg: wire.Segment, column: str, code: int) -> None:
    want = wire._CODE_OF_DTYPE[wire._ARRAY_COLUMNS[column]]
    if code == want:
        return
    n = len(getattr(seg, column))
    array = np.zeros(n, wire._DTYPE_OF_CODE[code])
    assert reason_of(with_ext(seg, column, wire._array_ext(array).data)) == "bad_dtype"


@PROPERTY
@given(segments(), ARRAY_COLUMNS, st.sampled_from([2, 3]), st.integers(1, 255))
def test_non_zero_header_padding_is_bad_shape(seg: wire.Segment, column: str, where: int, value: int) -> None:
    ext = bytearray(tree_of(seg)["columns"][column].data)
    ext[where] = value  # bytes 2 and 3 of every array header must be zero
    assert reason_of(with_ext(seg, column, bytes(ext))) == "bad_shape"


@PROPERTY
@given(segments(), st.data())
def test_column_values_out_of_range_are_bad_value(seg: wire.Segment, data: st.DataObject) -> None:
    """One documented value rule broken at a time, in an otherwise valid segment."""
    t = data.draw(st.integers(0, seg.n_steps - 1))
    rule = data.draw(st.sampled_from(["action_index", "reward", "root_value", "visits", "prior", "done"]))
    columns = {name: np.array(getattr(seg, name)) for name in wire._ARRAY_COLUMNS}
    if rule == "action_index":
        k = int(seg.cand_offsets[t + 1] - seg.cand_offsets[t])
        columns[rule][t] = data.draw(st.one_of(st.integers(-(2**31), -1), st.integers(k, 2**31 - 1)))
    elif rule == "reward":
        columns[rule][t] = data.draw(st.sampled_from([math.inf, -math.inf, math.nan]))
    elif rule == "root_value":
        columns[rule][t] = data.draw(st.sampled_from([math.inf, -math.inf]))
    elif rule in ("visits", "prior"):
        i = int(seg.cand_offsets[t])
        columns[rule][i] = data.draw(st.one_of(st.floats(-1e6, -1e-3), st.just(math.nan), st.floats(2.0, 1e6)))
    if rule == "done":
        tree = tree_of(seg)
        payload = bytearray(tree["columns"]["done"].data)
        payload[8 + t] = data.draw(st.integers(2, 255))
        tree["columns"]["done"] = msgpack.ExtType(wire.ARRAY_EXT_CODE, bytes(payload))
        frame = pack(tree)
    else:
        frame = wire.encode(replace(seg, **{rule: columns[rule]}))
    assert reason_of(frame) == "bad_value", rule


@PROPERTY
@given(segments(), st.sampled_from(["observations", "action_text", "reward", "score", "done", "root_value",
                                    "action_index", "candidates", "visits", "prior"]), st.booleans())
def test_columns_that_disagree_in_length_are_column_length(seg: wire.Segment, column: str, longer: bool) -> None:
    value = getattr(seg, column)
    if isinstance(value, list):
        changed: Any = value + ["extra"] if longer else value[:-1]
    else:
        changed = np.concatenate([value, value[:1]]) if longer else value[:-1]
    reason = reason_of(wire.encode(replace(seg, **{column: changed})))
    if column == "observations" and not 1 <= len(changed) <= SMALL.max_steps:
        assert reason == "bad_value"  # T itself is out of range: that is checked first
    else:
        assert reason == "column_length", column


@PROPERTY
@given(segments(), st.sampled_from(["seq", "step0"]), st.integers(-(2**63), -1))
def test_negative_seq_or_step0_is_bad_value(seg: wire.Segment, name: str, value: int) -> None:
    seg = replace(seg, header=replace(seg.header, **{name: value}))
    assert reason_of(wire.encode(seg)) == "bad_value"


@PROPERTY
@given(segments(), st.sampled_from(["wm_version", "llm_version"]),
       st.one_of(st.integers(-(2**63), -1), st.integers(wire.MAX_VERSION, 2**64 - 1)))
def test_a_version_outside_0_to_2_31_is_bad_value(seg: wire.Segment, name: str, value: int) -> None:
    seg = replace(seg, header=replace(seg.header, **{name: value}))
    assert reason_of(wire.encode(seg)) == "bad_value"


@PROPERTY
@given(st.one_of(st.just(""), st.text(min_size=wire.MAX_ID_CHARS + 1, max_size=wire.MAX_ID_CHARS + 20),
                 st.tuples(TEXT, st.sampled_from(_ID_FORBIDDEN), TEXT).map("".join)),
       st.booleans())
def test_a_bad_collector_id_is_bad_value(cid: str, in_hello: bool) -> None:
    if in_hello:
        frame = wire.encode(wire.Hello(collector_id=cid, game="g", host="h", pid=1))
    else:
        seg = wire.make_segment(wire.SegmentHeader("g", cid, 0, 0, 0, 0, 0, 0.0, 0.0), ["o"], [["a"]], [0], [0.0],
                                [0], [False])
        frame = wire.encode(seg)
    assert reason_of(frame, wire.DEFAULT_LIMITS) == "bad_value"


@PROPERTY
@given(ANY_MESSAGE, st.data(), st.binary(max_size=16))
def test_a_msgpack_timestamp_anywhere_decodes_or_is_refused(msg: wire.Message, data: st.DataObject,
                                                            payload: bytes) -> None:
    """Ext type -1 is msgpack's timestamp: one with a bad payload is not valid msgpack (`malformed`);
    a good one is a value of no wire type (`bad_field`, or `not_a_map` at the top)."""
    tree = tree_of(msg)
    path = data.draw(st.sampled_from(paths_of(tree)))
    parent_of(tree, path)[path[-1]] = AnyExt(-1, payload)
    reason = reason_of(pack(tree))
    if path in (("v",), ("kind",)):
        assert reason in ("malformed", "bad_version" if path == ("v",) else "unknown_kind")
    else:
        assert reason in ("malformed", "bad_field")
    assert reason_of(AnyExt(-1, payload).frame()) in ("malformed", "not_a_map")


def test_a_reserved_ext_code_is_judged_where_it_stands() -> None:
    """Regression: ext codes -128..-2 are reserved but valid msgpack; they used to make any frame
    that msgspec refused `malformed` (msgpack.ExtType cannot hold them), whatever the documented
    order said."""
    credit = tree_of(wire.Credit(n=1, ack=0))
    reserved = AnyExt(-2, b"\x00")
    assert reason_of(pack({**credit, "v": reserved})) == "bad_version"
    assert reason_of(pack({**credit, "kind": reserved})) == "unknown_kind"
    assert reason_of(pack({**credit, "n": reserved})) == "bad_field"
    assert reason_of(pack({**credit, "extra": reserved})) == "bad_field"
    assert reason_of(pack(reserved)) == "not_a_map"
    assert reason_of(with_ext(wire.make_segment(wire.SegmentHeader("g", "c", 0, 0, 0, 0, 0, 0.0, 0.0), ["o"], [["a"]],
                                                [0], [0.0], [0], [False]), "reward", b"\x08", -2)) == "bad_field"
