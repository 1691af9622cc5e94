"""Behaviour of pzstream.stream.wire: round trips, every rejection reason, fuzzing."""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import msgpack
import numpy as np
import pytest

from pzstream.stream import wire
from pzstream.stream.wire import WireError, WireLimits


def _header(**overrides: Any) -> wire.SegmentHeader:
    fields = dict(game="zork1.z5", collector_id="c-1", seq=7, episode_id=42, step0=10,
                  wm_version=3, llm_version=2, t_start=1.7e9, t_end=1.7e9 + 2.5)
    fields.update(overrides)
    return wire.SegmentHeader(**fields)


def _segment(**header: Any) -> wire.Segment:
    """3 steps with 2, 3 and 1 candidates; step 1 has a visit distribution."""
    return wire.make_segment(
        _header(**header),
        observations=["West of House. You are standing in an open field.", "Ñorth: a path ☃", ""],
        candidates=[["open mailbox", "go north"], ["go south", "go east", "wait"], ["quit"]],
        action_index=[0, 2, 0],
        rewards=[0.0, 5.0, -1.0],
        scores=[0, 5, 4],
        dones=[False, False, True],
        visits=[[0.5, 0.5], [0.25, 0.25, 0.5], [1.0]],
        priors=None,
        root_values=[0.1, float("nan"), -0.3],
    )


def _tree(data: bytes) -> dict:
    """Raw msgpack tree of an encoded message, ext values left as ExtType."""
    return msgpack.unpackb(data, raw=False)


def _pack(tree: Any) -> bytes:
    return msgpack.packb(tree, use_bin_type=True)


def _ext(code: int, dims: tuple[int, ...], payload: bytes) -> msgpack.ExtType:
    """Hand-built array ext: dtype, ndim, 2 zero bytes, dims, zero pad to a multiple of 8, payload."""
    head = bytes([code, len(dims), 0, 0]) + struct.pack(f"<{len(dims)}I", *dims)
    head += bytes(-len(head) % 8)
    return msgpack.ExtType(wire.ARRAY_EXT_CODE, head + payload)


def _with_column(name: str, value: Any) -> bytes:
    tree = _tree(wire.encode(_segment()))
    tree["columns"][name] = value
    return _pack(tree)


def _reason(data: bytes | memoryview, limits: WireLimits = wire.DEFAULT_LIMITS) -> str:
    with pytest.raises(WireError) as info:
        wire.decode(data, limits)
    assert info.value.reason in wire.REASONS
    return info.value.reason


# ---------------------------------------------------------------- round trips

SIMPLE_MESSAGES = [
    wire.Hello(collector_id="c-1", game="zork1.z5", host="node7", pid=4242, capabilities=("llm", "mcts")),
    wire.Hello(collector_id="c-2", game="detective.z5", host="h", pid=1),
    wire.Welcome(hub_id="hub-0", window=8, wm_version=12, llm_version=3, heartbeat_s=2.5),
    wire.Reject(reason="bad_version", detail="v=2, expected 1"),
    wire.Credit(n=1, ack=-1),
    wire.Credit(n=3, ack=2**40),
    wire.Heartbeat(sender="c-1", time=1.7e9, stats={"segments": 12, "fps": 31.5, "nan": 0.0}),
    wire.Heartbeat(sender="hub", time=0.0, stats={}),
    wire.Weights(model="llm", version=4, uri="file:///tmp/w.safetensors", sha256="ab" * 32, nbytes=123),
    wire.Log(role="collector", sender="c-1", level=20, time=1.7e9, logger="pzstream.env", message="hé\nllo"),
]


@pytest.mark.parametrize("msg", SIMPLE_MESSAGES, ids=lambda m: type(m).__name__)
def test_simple_round_trip(msg: wire.Message) -> None:
    data = wire.encode(msg)
    tree = _tree(data)
    assert tree["v"] == wire.PROTOCOL_VERSION and tree["kind"] == type(msg).__name__.lower()
    out = wire.decode(data)
    assert type(out) is type(msg) and out == msg


def test_float_fields_accept_ints_and_numpy_scalars_encode_plainly() -> None:
    tree = _tree(wire.encode(wire.Heartbeat(sender="s", time=np.float64(3.0), stats={"n": np.int64(4)})))
    tree["time"] = 3  # another language may send an integral time as int
    out = wire.decode(_pack(tree))
    assert out == wire.Heartbeat(sender="s", time=3.0, stats={"n": 4}) and type(out.time) is float


def test_segment_round_trip() -> None:
    seg = _segment()
    wire.validate_segment(seg)
    data = wire.encode(seg)
    out = wire.decode(data)
    assert isinstance(out, wire.Segment) and out.same_as(seg) and seg.same_as(out)
    assert out.header == seg.header
    assert math.isnan(out.root_value[1]) and out.root_value[0] == np.float32(0.1)
    assert out.n_steps == 3
    assert out.step_candidates(1) == ["go south", "go east", "wait"]
    assert out.action_text == ["open mailbox", "wait", "quit"]
    assert out.observations[1] == "Ñorth: a path ☃"
    for name, dtype in wire._ARRAY_COLUMNS.items():
        a = getattr(out, name)
        assert a.dtype == dtype and a.ndim == 1
        # zero-copy: a read-only view onto the message payload, not an owned copy
        assert not a.flags.owndata and not a.flags.writeable and isinstance(a.base, bytes)
    np.testing.assert_array_equal(out.cand_offsets, [0, 2, 5, 6])
    np.testing.assert_allclose(out.prior, [0.5, 0.5, 1 / 3, 1 / 3, 1 / 3, 1.0], rtol=1e-6)
    assert wire.decode(memoryview(data)).same_as(seg)
    assert wire.decode(bytearray(data)).same_as(seg)


def test_segment_header_integers_from_numpy() -> None:
    seg = _segment(seq=np.int64(9), t_start=np.float32(2.0))
    wire.validate_segment(seg)
    out = wire.decode(wire.encode(seg))
    assert out.header.seq == 9 and type(out.header.seq) is int and out.header.t_start == 2.0


def test_same_as_detects_differences() -> None:
    seg = _segment()
    other = _segment()
    assert seg.same_as(other)
    assert not seg.same_as(_segment(seq=8))
    changed = wire.Segment(**{**seg.__dict__, "root_value": np.array([0.1, 0.0, -0.3], np.float32)})
    assert not seg.same_as(changed)
    retyped = wire.Segment(**{**seg.__dict__, "score": seg.score.astype(np.int64)})
    assert not seg.same_as(retyped)
    assert not seg.same_as(wire.Segment(**{**seg.__dict__, "candidates": seg.candidates[::-1]}))


def test_make_segment_defaults() -> None:
    seg = wire.make_segment(_header(), ["o"], [["a", "b", "c", "d"]], [3], [1.0], [1], [True])
    wire.validate_segment(seg)
    np.testing.assert_allclose(seg.visits, 0.25)
    np.testing.assert_allclose(seg.prior, 0.25)
    assert np.isnan(seg.root_value).all() and seg.action_text == ["d"]


# ---------------------------------------------------------------- framing and envelope


def test_too_large_is_checked_before_unpacking() -> None:
    data = wire.encode(_segment())
    assert _reason(data, WireLimits(max_message_bytes=len(data) - 1)) == "too_large"
    assert _reason(b"\xc1" * 200, WireLimits(max_message_bytes=100)) == "too_large"


def test_oversized_string_is_too_large() -> None:
    msg = wire.Log(role="r", sender="s", level=10, time=0.0, logger="l", message="x" * 100)
    assert _reason(wire.encode(msg), WireLimits(max_string_bytes=50)) == "too_large"


def test_item_caps_are_too_large() -> None:
    data = wire.encode(_segment())  # 6 candidates in one msgpack array
    assert _reason(data, WireLimits(max_steps=1, max_candidates_per_step=5)) == "too_large"
    assert _reason(wire.encode(wire.Heartbeat(sender="s", time=0.0, stats={str(i): i for i in range(5000)}))) \
        == "too_large"


@pytest.mark.parametrize("data", [
    b"", b"\xc1", b"\x92\x01", b"\xdd\xff\xff\xff\xff", b"\x91" * 10_000,
], ids=["empty", "never-used-byte", "short-array", "huge-array-header", "deep-nesting"])
def test_malformed(data: bytes) -> None:
    assert _reason(data) == "malformed"


def test_truncated_frame_is_malformed() -> None:
    data = wire.encode(_segment())
    assert _reason(data[: len(data) // 2]) == "malformed"
    assert _reason(data[:-1]) == "malformed"


def test_trailing_garbage_is_malformed() -> None:
    assert _reason(wire.encode(_segment()) + b"\x00") == "malformed"
    assert _reason(wire.encode(wire.Credit(n=1, ack=0)) + b"\x81") == "malformed"


def test_invalid_utf8_is_malformed() -> None:
    data = wire.encode(wire.Reject(reason="@@@@", detail="d"))
    assert _reason(data.replace(b"@@@@", b"\xff\xfe\xc0\x80")) == "malformed"
    seg_data = wire.encode(_segment())
    assert _reason(seg_data.replace("☃".encode(), b"\xed\xa0\x80")) == "malformed"  # lone surrogate


def test_not_a_bytes_object_is_malformed() -> None:
    assert _reason("a str") == "malformed"  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [[1, 2], "hello", 3, None,
                                   msgpack.ExtType(1, b"\x05\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00")])
def test_not_a_map(value: Any) -> None:
    assert _reason(_pack(value)) == "not_a_map"


def test_non_string_map_key_is_malformed() -> None:
    assert _reason(_pack({1: 2})) == "malformed"


@pytest.mark.parametrize("version", ["missing", 2, 0, True, "1", 1.0])
def test_bad_version(version: Any) -> None:
    tree = _tree(wire.encode(wire.Credit(n=1, ack=0)))
    if version == "missing":
        del tree["v"]
    else:
        tree["v"] = version
    assert _reason(_pack(tree)) == "bad_version"


@pytest.mark.parametrize("kind", ["missing", "gossip", "", 3, "Segment"])
def test_unknown_kind(kind: Any) -> None:
    tree = _tree(wire.encode(wire.Credit(n=1, ack=0)))
    if kind == "missing":
        del tree["kind"]
    else:
        tree["kind"] = kind
    assert _reason(_pack(tree)) == "unknown_kind"


@pytest.mark.parametrize("change", [
    {"n": None}, {"n": "1"}, {"n": True}, {"n": 1.0}, {"ack": None}, {"extra": 1}, {b"n": 1},
])
def test_bad_field_simple(change: dict) -> None:
    tree = _tree(wire.encode(wire.Credit(n=1, ack=0)))
    for key, value in change.items():
        if value is None:
            del tree[key]
        else:
            tree[key] = value
    assert _reason(_pack(tree)) == "bad_field"


@pytest.mark.parametrize("msg, key, value", [
    (SIMPLE_MESSAGES[0], "capabilities", ["llm", 3]),
    (SIMPLE_MESSAGES[0], "capabilities", "llm"),
    (SIMPLE_MESSAGES[6], "stats", {"a": "x"}),
    (SIMPLE_MESSAGES[6], "stats", {"a": True}),
    (SIMPLE_MESSAGES[6], "stats", [1]),
    (SIMPLE_MESSAGES[6], "time", "now"),
    (SIMPLE_MESSAGES[9], "message", b"bytes, not str"),
    (SIMPLE_MESSAGES[9], "level", msgpack.ExtType(1, b"\x05\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00")),
    (SIMPLE_MESSAGES[9], "level", msgpack.ExtType(7, b"x")),
])
def test_bad_field_types(msg: wire.Message, key: str, value: Any) -> None:
    tree = _tree(wire.encode(msg))
    tree[key] = value
    assert _reason(_pack(tree)) == "bad_field"


@pytest.mark.parametrize("msg, key, value", [
    (SIMPLE_MESSAGES[4], "n", -1), (SIMPLE_MESSAGES[4], "ack", -2), (SIMPLE_MESSAGES[2], "window", -1),
    (SIMPLE_MESSAGES[2], "heartbeat_s", 0.0), (SIMPLE_MESSAGES[8], "nbytes", -5), (SIMPLE_MESSAGES[0], "pid", -1),
])
def test_bad_value_simple(msg: wire.Message, key: str, value: Any) -> None:
    tree = _tree(wire.encode(msg))
    tree[key] = value
    assert _reason(_pack(tree)) == "bad_value"


# ---------------------------------------------------------------- segment structure


@pytest.mark.parametrize("where, key", [
    ("top", "header"), ("top", "columns"), ("top", "extra"), ("header", "seq"), ("header", "extra"),
    ("columns", "prior"), ("columns", "extra"),
])
def test_segment_missing_or_extra_field(where: str, key: str) -> None:
    tree = _tree(wire.encode(_segment()))
    target = tree if where == "top" else tree[where]
    if key == "extra":
        target["extra"] = 1
    else:
        del target[key]
    assert _reason(_pack(tree)) == "bad_field"


@pytest.mark.parametrize("name, value", [
    ("observations", ["a", 1, "c"]),
    ("observations", "abc"),
    ("candidates", [b"open mailbox", "go north", "go south", "go east", "wait", "quit"]),
    ("action_text", "open mailbox"),
    ("reward", [0.0, 5.0, -1.0]),  # an array column sent as a plain msgpack array
    ("done", None),
])
def test_segment_wrong_typed_column(name: str, value: Any) -> None:
    assert _reason(_with_column(name, value)) == "bad_field"


def test_segment_wrong_typed_header() -> None:
    tree = _tree(wire.encode(_segment()))
    tree["header"]["seq"] = "7"
    assert _reason(_pack(tree)) == "bad_field"
    tree["header"] = [1, 2]
    assert _reason(_pack(tree)) == "bad_field"


# ---------------------------------------------------------------- array ext


def test_array_ext_layout() -> None:
    ext = wire._array_ext(np.array([1, -2], dtype=np.int32))
    assert ext.code == 1
    assert ext.data == bytes.fromhex("05 01 0000 02000000 01000000 feffffff")
    big_endian = wire._array_ext(np.array([1.5], dtype=">f8"))
    assert big_endian.data == b"\x09\x01\x00\x00\x01\x00\x00\x00" + struct.pack("<d", 1.5)
    # even ndim: 4 zero bytes after the dims keep the elements 8-byte aligned
    matrix = wire._array_ext(np.array([[7]], dtype=np.int16))
    assert matrix.data == bytes.fromhex("04 02 0000 01000000 01000000 00000000 0700")
    scalar = wire._array_ext(np.array(True))
    assert scalar.data == bytes.fromhex("01 00 0000 00000000 01")


def test_decoded_arrays_are_aligned() -> None:
    out = wire.decode(wire.encode(_segment()))
    for name in wire._ARRAY_COLUMNS:
        assert getattr(out, name).flags.aligned, name


@pytest.mark.parametrize("code", [0, 10, 42, 255])
def test_dtype_code_outside_whitelist(code: int) -> None:
    assert _reason(_with_column("reward", _ext(code, (3,), b"\x00" * 12))) == "bad_dtype"


def test_complex_dtype_is_rejected() -> None:
    seg = _segment()
    bad = wire.Segment(**{**seg.__dict__, "reward": seg.reward.astype(np.complex64)})
    with pytest.raises(WireError) as info:
        wire.encode(bad)
    assert info.value.reason == "bad_dtype"
    with pytest.raises(WireError) as info:
        wire.validate_segment(bad)
    assert info.value.reason == "bad_dtype"


@pytest.mark.parametrize("name, array", [
    ("reward", np.zeros(3, np.float64)),
    ("action_index", np.array([0, 2, 0], np.int64)),
    ("done", np.array([0, 0, 1], np.uint8)),
    ("cand_offsets", np.array([0, 2, 5, 6], np.int16)),
])
def test_whitelisted_but_wrong_column_dtype(name: str, array: np.ndarray) -> None:
    assert _reason(_with_column(name, wire._array_ext(array))) == "bad_dtype"


def test_bad_shape() -> None:
    assert _reason(_with_column("reward", _ext(8, (1, 1, 1, 1, 3), b"\x00" * 12))) == "bad_shape"  # ndim 5
    assert _reason(_with_column("reward", _ext(8, (3,), b"\x00" * 16))) == "bad_shape"  # payload too long
    assert _reason(_with_column("reward", _ext(8, (1, 3), b"\x00" * 12))) == "bad_shape"  # 2-d column
    assert _reason(_with_column("reward", msgpack.ExtType(1, b"\x08"))) == "bad_shape"  # cut header
    assert _reason(_with_column("reward", msgpack.ExtType(1, b"\x08\x02\x03\x00"))) == "bad_shape"
    assert _reason(_with_column("reward", msgpack.ExtType(1, b"\x08\x01\x00\x00\x03\x00\x00"))) == "bad_shape"
    # non-zero padding: after ndim, and after the dims of an even-ndim header
    good = _ext(8, (3,), b"\x00" * 12).data
    assert _reason(_with_column("reward", msgpack.ExtType(1, good[:2] + b"\x01\x00" + good[4:]))) == "bad_shape"
    assert _reason(_with_column("reward", msgpack.ExtType(1, good[:3] + b"\x01" + good[4:]))) == "bad_shape"
    two_d = _ext(8, (1, 3), b"\x00" * 12).data
    assert _reason(_with_column("reward", msgpack.ExtType(1, two_d[:15] + b"\x01" + two_d[16:]))) == "bad_shape"


def test_shape_exceeds_frame() -> None:
    assert _reason(_with_column("reward", _ext(8, (1000,), b"\x00" * 12))) == "shape_exceeds_frame"
    assert _reason(_with_column("reward", _ext(8, (3,), b"\x00" * 11))) == "shape_exceeds_frame"
    assert _reason(_with_column("done", _ext(1, (2, 2), b"\x00" * 3))) == "shape_exceeds_frame"


def test_array_too_large() -> None:
    # huge declared shape, 4-byte payload: must be refused before any allocation
    assert _reason(_with_column("reward", _ext(8, (0xFFFFFFFF,), b"\x00" * 4))) == "array_too_large"
    assert _reason(_with_column("reward", _ext(8, (65536, 65536), b""))) == "array_too_large"
    small = WireLimits(max_array_elements=4)
    assert _reason(wire.encode(_segment()), small) == "array_too_large"  # 6 candidates


def test_scalar_and_empty_arrays_parse() -> None:
    def hook(code: int, data: bytes) -> np.ndarray:
        return wire._parse_array(code, data, wire.DEFAULT_LIMITS.max_array_elements)

    scalar = hook(1, wire._array_ext(np.float64(2.5) * np.ones(())).data)
    assert scalar.shape == () and scalar == 2.5
    empty = hook(1, wire._array_ext(np.zeros((0, 3), np.int16)).data)
    assert empty.shape == (0, 3) and empty.dtype == np.int16
    cube = np.arange(24, dtype=np.float16).reshape(2, 3, 4)[:, ::2]  # non-contiguous
    np.testing.assert_array_equal(hook(1, wire._array_ext(cube).data), cube)


def test_bool_bytes_other_than_0_1() -> None:
    assert _reason(_with_column("done", _ext(1, (3,), b"\x00\x02\x01"))) == "bad_value"


# ---------------------------------------------------------------- segment semantics


def test_column_length() -> None:
    assert _reason(_with_column("reward", wire._array_ext(np.zeros(2, np.float32)))) == "column_length"
    assert _reason(_with_column("observations", ["a", "b"])) == "column_length"
    assert _reason(_with_column("action_text", ["open mailbox", "wait"])) == "column_length"
    assert _reason(_with_column("cand_offsets", wire._array_ext(np.array([0, 2, 5], np.int32)))) == "column_length"
    assert _reason(_with_column("candidates", ["open mailbox", "go north", "go south", "go east", "wait"])) \
        == "column_length"
    assert _reason(_with_column("visits", wire._array_ext(np.full(7, 0.5, np.float32)))) == "column_length"


@pytest.mark.parametrize("index", [[0, 3, 0], [0, -1, 0], [2, 0, 0], [0, 0, 1]])
def test_action_index_out_of_range(index: list[int]) -> None:
    assert _reason(_with_column("action_index", wire._array_ext(np.array(index, np.int32)))) == "bad_value"


def test_action_text_mismatch() -> None:
    assert _reason(_with_column("action_text", ["open mailbox", "go east", "quit"])) == "bad_value"
    assert _reason(_with_column("action_text", ["open mailbox", "wait", 7])) == "bad_value"


@pytest.mark.parametrize("offsets", [[0, 3, 2, 6], [0, 2, 2, 6], [1, 2, 5, 6], [0, -1, 5, 6]])
def test_non_monotone_offsets(offsets: list[int]) -> None:
    assert _reason(_with_column("cand_offsets", wire._array_ext(np.array(offsets, np.int32)))) == "bad_value"


def test_step_and_candidate_limits() -> None:
    data = wire.encode(_segment())
    assert _reason(data, WireLimits(max_steps=2)) == "bad_value"
    assert _reason(data, WireLimits(max_candidates_per_step=2)) == "bad_value"
    empty = wire.Segment(**{**_segment().__dict__, "observations": [], "cand_offsets": np.zeros(1, np.int32),
                            "candidates": [], "action_index": np.zeros(0, np.int32), "action_text": [],
                            "reward": np.zeros(0, np.float32), "score": np.zeros(0, np.int32),
                            "done": np.zeros(0, bool), "visits": np.zeros(0, np.float32),
                            "prior": np.zeros(0, np.float32), "root_value": np.zeros(0, np.float32)})
    assert _reason(wire.encode(empty)) == "bad_value"


def test_negative_seq_and_step0() -> None:
    assert _reason(wire.encode(_segment(seq=-1))) == "bad_value"
    assert _reason(wire.encode(_segment(step0=-3))) == "bad_value"


@pytest.mark.parametrize("name, values", [
    ("reward", [0.0, float("nan"), 0.0]), ("reward", [0.0, float("inf"), 0.0]),
    ("root_value", [0.0, float("-inf"), 0.0]),
    ("visits", [0.5, 0.5, 0.25, 0.25, 0.4, 1.0]),  # step 1 sums to 0.9
    ("visits", [1.5, -0.5, 0.25, 0.25, 0.5, 1.0]),  # sums fine, negative entry
    ("prior", [0.5, 0.5, 0.25, 0.25, float("nan"), 1.0]),
])
def test_bad_float_values(name: str, values: list[float]) -> None:
    assert _reason(_with_column(name, wire._array_ext(np.array(values, np.float32)))) == "bad_value"


def test_validate_segment_on_built_segments() -> None:
    seg = _segment()
    wire.validate_segment(seg)
    with pytest.raises(WireError) as info:
        wire.validate_segment(wire.Segment(**{**seg.__dict__, "score": seg.score.astype(np.int64)}))
    assert info.value.reason == "bad_dtype"
    with pytest.raises(WireError) as info:
        wire.validate_segment(wire.Segment(**{**seg.__dict__, "header": _header(game=3)}))
    assert info.value.reason == "bad_field"
    with pytest.raises(WireError) as info:
        wire.validate_segment(wire.Segment(**{**seg.__dict__, "reward": seg.reward.reshape(3, 1)}))
    assert info.value.reason == "bad_shape"
    # tuples are acceptable string columns for a locally built segment
    wire.validate_segment(wire.Segment(**{**seg.__dict__, "action_text": tuple(seg.action_text)}))


def test_wire_error_shape() -> None:
    err = WireError("bad_value", "why")
    assert isinstance(err, ValueError) and err.reason == "bad_value" and err.detail == "why"
    assert str(err) == "bad_value: why"
    with pytest.raises(TypeError):
        wire.encode("not a message")  # type: ignore[arg-type]


# ---------------------------------------------------------------- fuzz


def test_fuzz_mutations_only_raise_wire_error() -> None:
    rng = random.Random(1234)
    base = wire.encode(_segment())
    decoded = 0
    for _ in range(2000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            pos = rng.randrange(len(data)) if data else 0
            if op < 0.5 and data:
                data[pos] = rng.randrange(256)
            elif op < 0.65:
                data.insert(pos, rng.randrange(256))
            elif op < 0.8 and data:
                del data[pos]
            elif op < 0.9:
                data = data[:pos]
            else:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        try:
            msg = wire.decode(bytes(data))
        except WireError as e:
            assert e.reason in wire.REASONS
        else:
            assert isinstance(msg, (wire.Segment, *(type(m) for m in SIMPLE_MESSAGES)))
            decoded += 1
    assert decoded > 0  # some mutations (inside strings) stay valid


# ---------------------------------------------------------------- byte compatibility


def test_credit_bytes_are_the_documented_example() -> None:
    # docs/wire.md spells these 24 bytes out for writers of other collectors
    assert wire.encode(wire.Credit(n=1, ack=5)) == bytes.fromhex("84 a17601 a46b696e64a6637265646974 a16e01 a361636b05")


def test_unset_optional_fields_leave_the_bytes_unchanged() -> None:
    # a hello without a seed and a reject without a seq are the version-1 messages they always were
    old_hello = {"v": 1, "kind": "hello", "collector_id": "c-1", "game": "zork1.z5", "host": "h", "pid": 3,
                 "capabilities": ["policy:mcts"]}
    assert wire.encode(wire.Hello("c-1", "zork1.z5", "h", 3, ("policy:mcts",))) == _pack(old_hello)
    assert wire.decode(_pack(old_hello)) == wire.Hello("c-1", "zork1.z5", "h", 3, ("policy:mcts",), seed=None)
    old_reject = {"v": 1, "kind": "reject", "reason": "stale", "detail": "d"}
    assert wire.encode(wire.Reject("stale", "d")) == _pack(old_reject)
    assert wire.decode(_pack(old_reject)).seq is None


# ---------------------------------------------------------------- typed optional fields


@pytest.mark.parametrize("seed", [0, 7, -3, 2**40])
def test_hello_seed_round_trip(seed: int) -> None:
    hello = wire.Hello("c-1", "zork1.z5", "h", 3, ("policy:mcts",), seed=seed)
    data = wire.encode(hello)
    assert _tree(data)["seed"] == seed
    assert wire.decode(data) == hello


def test_hello_seed_nil_means_not_told() -> None:
    tree = _tree(wire.encode(SIMPLE_MESSAGES[0]))
    tree["seed"] = None
    assert wire.decode(_pack(tree)).seed is None


@pytest.mark.parametrize("value", ["7", 7.0, True, [7]])
def test_hello_seed_must_be_an_int(value: Any) -> None:
    tree = _tree(wire.encode(SIMPLE_MESSAGES[0]))
    tree["seed"] = value
    assert _reason(_pack(tree)) == "bad_field"


def test_reject_names_the_seq_it_answers() -> None:
    reject = wire.Reject(reason="no_credit", detail="seq 9 beyond window", seq=9)
    assert wire.decode(wire.encode(reject)) == reject
    tree = _tree(wire.encode(reject))
    tree["seq"] = -1
    assert _reason(_pack(tree)) == "bad_value"


# ---------------------------------------------------------------- peers' self-reported versions and ids


@pytest.mark.parametrize("name", ["wm_version", "llm_version"])
@pytest.mark.parametrize("value, reason", [(-5, "bad_value"), (-1, "bad_value"), (2**31, "bad_value"),
                                           (2**63, "bad_value"), (1e9, "bad_field"), (True, "bad_field")])
def test_segment_versions_are_checked(name: str, value: Any, reason: str) -> None:
    tree = _tree(wire.encode(_segment()))
    tree["header"][name] = value
    with pytest.raises(WireError) as info:
        wire.decode(_pack(tree))
    assert info.value.reason == reason and name in info.value.detail


def test_segment_versions_at_the_bounds_pass() -> None:
    for value in (0, 2**31 - 1):
        out = wire.decode(wire.encode(_segment(wm_version=value, llm_version=value)))
        assert out.header.wm_version == out.header.llm_version == value


@pytest.mark.parametrize("msg, key", [
    (SIMPLE_MESSAGES[2], "wm_version"), (SIMPLE_MESSAGES[2], "llm_version"), (SIMPLE_MESSAGES[8], "version"),
    (wire.Fetch(model="wm", version=1, offset=0, length=10), "version"),
    (wire.Blob(model="wm", version=1, offset=0, total=3, sha256="ab", data=b"xyz"), "version"),
    (wire.ScoreReply(request_id=1, llm_version=2, logprior=(-0.5,)), "llm_version"),
])
@pytest.mark.parametrize("value", [-5, 2**31])
def test_versions_in_small_messages_are_checked(msg: wire.Message, key: str, value: int) -> None:
    assert wire.decode(wire.encode(msg)) == msg
    tree = _tree(wire.encode(msg))
    tree[key] = value
    assert _reason(_pack(tree)) == "bad_value"


BAD_IDS = {
    "empty": "", "long": "c" * (wire.MAX_ID_CHARS + 1), "200KB": "c" * 200_000, "nul": "c\x00-1",
    "ansi": "\x1b[31mc-1\x1b[0m", "newline": "c-1\nhub: all fine", "del": "c\x7f", "c1-control": "c\x9b1m",
    "bidi-override": "c-\u202e1",
}


@pytest.mark.parametrize("cid", BAD_IDS.values(), ids=BAD_IDS.keys())
def test_bad_collector_ids(cid: str) -> None:
    hello = _tree(wire.encode(SIMPLE_MESSAGES[0]))
    hello["collector_id"] = cid
    seg = _tree(wire.encode(_segment()))
    seg["header"]["collector_id"] = cid
    for data in (_pack(hello), _pack(seg)):
        with pytest.raises(WireError) as info:
            wire.decode(data)
        assert info.value.reason == "bad_value"
        assert "collector_id must be 1 to" in info.value.detail and "control characters" in info.value.detail


def test_good_collector_ids_pass() -> None:
    for cid in ("c", "c" * wire.MAX_ID_CHARS, "prior-node7.cluster.local-4242", "höst-ünïcode-1"):
        assert wire.decode(wire.encode(wire.Hello(cid, "g", "h", 1))).collector_id == cid
        assert wire.decode(wire.encode(_segment(collector_id=cid))).header.collector_id == cid
    with pytest.raises(WireError) as info:
        wire.validate_segment(_segment(collector_id=""))
    assert info.value.reason == "bad_value"


def test_short_frames_and_long_frames_are_judged_alike() -> None:
    # decode skips the length caps for frames too short to break them; every
    # other rule must hold on both paths.  max_string_bytes=200 sends these
    # frames (each over 200 bytes, no string over 60) down the capped path.
    capped = WireLimits(max_string_bytes=200)
    bad = [
        _with_column("reward", wire._array_ext(np.array([0.0, np.inf, 0.0], np.float32))),
        _with_column("action_index", wire._array_ext(np.array([0, 3, 0], np.int32))),
        _with_column("observations", ["a", 1, "c"]),
        _with_column("done", _ext(1, (3,), b"\x00\x02\x01")),
        wire.encode(_segment(wm_version=-5)),
        wire.encode(_segment(collector_id="c\x1b[2J")),
    ]
    for data in bad:
        assert len(data) > capped.max_string_bytes
        assert _reason(data) == _reason(data, capped)
    good = wire.encode(_segment())
    assert wire.decode(good, capped).same_as(wire.decode(good))


def test_error_details_escape_and_bound_what_the_peer_chose() -> None:
    # the hub logs and echoes these details: a hostile key must not reach a terminal raw
    tree = _tree(wire.encode(wire.Credit(n=1, ack=0)))
    tree["\x1b[2J" + "x" * 10_000] = 1
    with pytest.raises(WireError) as info:
        wire.decode(_pack(tree))
    assert info.value.reason == "bad_field"
    assert "\x1b" not in info.value.detail and "\\x1b[2J" in info.value.detail
    assert len(info.value.detail) < 400
    tree = _tree(wire.encode(wire.Credit(n=1, ack=0)))
    tree["kind"] = "\x00" * 5000
    with pytest.raises(WireError) as info:
        wire.decode(_pack(tree))
    assert info.value.reason == "unknown_kind" and "\x00" not in info.value.detail and len(info.value.detail) < 400


def test_hello_role_is_optional_and_checked():
    """A reader (prior/search server) says so in its hello; a hello without a role encodes as before."""
    import msgpack

    plain = wire.Hello(collector_id="c", game="g", host="h", pid=1)
    assert "role" not in msgpack.unpackb(wire.encode(plain))
    reader = wire.Hello(collector_id="p", game="", host="h", pid=1, role="reader")
    assert wire.decode(wire.encode(reader)).role == "reader"
    with pytest.raises(wire.WireError) as e:
        wire.decode(wire.encode(wire.Hello(collector_id="p", game="", host="h", pid=1, role="boss")))
    assert e.value.reason == "bad_value" and "role" in e.value.detail
