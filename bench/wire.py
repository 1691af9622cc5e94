"""Pack/unpack speed of pzstream.stream.wire against a plain multipart baseline.

    python bench/wire.py [--quick]

The segment is realistic in size: 50 steps, ~600-character English-like
observations, 20 candidates of 2-5 words per step, random rewards, visits and
priors.  The baseline is what a hand-rolled multipart ZeroMQ send would do: a
msgpack map of the header and string columns (plus each array's dtype and
shape) followed by one raw bytes frame per array; unpacking it is
`msgpack.unpackb` plus `np.frombuffer`, with no validation at all.

Times are microseconds per segment: the median, over repeats, of the mean of
a batch of iterations.  The ratios are also given from the fastest batch of
each case (`*_ratio_min`), which a busy shared machine disturbs less.  The last
stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack  # noqa: E402
import msgspec  # noqa: E402
import numpy as np  # noqa: E402

from pzstream.stream import wire  # noqa: E402

_WORDS = (
    "the a an of to in and with you your is are was there here north south east west up down "
    "door window room hall kitchen cellar attic garden forest path river bridge house lamp "
    "sword key box chest table chair rug trap note leaflet mailbox bottle water food knife rope "
    "small large old brass wooden dark light open closed locked empty full ancient strange "
    "take drop open close read examine look go climb enter push pull turn move light eat "
    "drink wait inventory north-east south-west behind under above beside against through "
    "which that it he she they sees appears seems lies stands hangs leads smells feels quiet"
).split()
_ARRAYS = ("cand_offsets", "action_index", "reward", "score", "done", "visits", "prior", "root_value")
_HEADER = ("game", "collector_id", "seq", "episode_id", "step0", "wm_version", "llm_version",
           "t_start", "t_end")


def _sentence(rng: np.random.Generator, n_chars: int) -> str:
    words: list[str] = []
    length = 0
    while length < n_chars:
        w = _WORDS[rng.integers(len(_WORDS))]
        words.append(w)
        length += len(w) + 1
    return " ".join(words).capitalize() + "."


def build_segment(steps: int = 50, cands: int = 20, seed: int = 0) -> wire.Segment:
    rng = np.random.default_rng(seed)
    observations = [_sentence(rng, 600) for _ in range(steps)]
    candidates = [[" ".join(_WORDS[i] for i in rng.integers(len(_WORDS), size=rng.integers(2, 6)))
                   for _ in range(cands)] for _ in range(steps)]

    def dist() -> list[float]:
        x = rng.random(cands)
        return (x / x.sum()).tolist()

    header = wire.SegmentHeader(
        game="zork1.z5", collector_id="collector-03", seq=1234, episode_id=987654321, step0=100,
        wm_version=17, llm_version=4, t_start=1.7e9, t_end=1.7e9 + 12.5)
    seg = wire.make_segment(
        header, observations, candidates,
        action_index=rng.integers(cands, size=steps).tolist(),
        rewards=rng.choice([0.0, 0.0, 0.0, 5.0, -1.0], size=steps).tolist(),
        scores=np.cumsum(rng.integers(0, 3, size=steps)).tolist(),
        dones=[False] * (steps - 1) + [True],
        visits=[dist() for _ in range(steps)],
        priors=[dist() for _ in range(steps)],
        root_values=[float("nan")] * 5 + rng.normal(size=steps - 5).tolist(),
    )
    wire.validate_segment(seg)
    return seg


def baseline_pack(seg: wire.Segment) -> list[bytes]:
    h = seg.header
    arrays = [getattr(seg, name) for name in _ARRAYS]
    meta = {
        "header": {name: getattr(h, name) for name in _HEADER},
        "observations": seg.observations,
        "candidates": seg.candidates,
        "action_text": seg.action_text,
        "arrays": [[name, a.dtype.str, list(a.shape)] for name, a in zip(_ARRAYS, arrays)],
    }
    return [msgpack.packb(meta, use_bin_type=True)] + [a.tobytes() for a in arrays]


def baseline_unpack(frames: list[bytes]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    meta = msgpack.unpackb(frames[0], raw=False)
    arrays = {name: np.frombuffer(frame, dtype).reshape(shape)
              for (name, dtype, shape), frame in zip(meta["arrays"], frames[1:])}
    return meta, arrays


def _time_us(fn: Callable[[], Any], iterations: int) -> float:
    t0 = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - t0) / iterations * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (< 1 minute)")
    args = ap.parse_args()
    repeats, iterations = (15, 200) if args.quick else (41, 500)

    seg = build_segment()
    data = wire.encode(seg)
    frames = baseline_pack(seg)
    assert wire.decode(data).same_as(seg)

    cases: dict[str, Callable[[], Any]] = {
        "pack": lambda: wire.encode(seg),
        "baseline_pack": lambda: baseline_pack(seg),
        "unpack": lambda: wire.decode(data),
        "baseline_unpack": lambda: baseline_unpack(frames),
    }
    for fn in cases.values():  # warm caches and allocator
        _time_us(fn, iterations // 4)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    # interleaved so clock/thermal drift hits project and baseline alike
    for _ in range(repeats):
        for name, fn in cases.items():
            samples[name].append(_time_us(fn, iterations))
    us = {name: statistics.median(v) for name, v in samples.items()}
    fastest = {name: min(v) for name, v in samples.items()}

    baseline_bytes = sum(len(f) for f in frames)
    print(f"segment: {seg.n_steps} steps, {len(seg.candidates)} candidates, "
          f"{len(data)} bytes (baseline frames {baseline_bytes} bytes)")
    print(f"{'':8} {'project us':>11} {'baseline us':>12} {'ratio':>6} {'ratio (fastest batches)':>24}")
    for op in ("pack", "unpack"):
        print(f"{op:8} {us[op]:11.1f} {us['baseline_' + op]:12.1f} {us[op] / us['baseline_' + op]:6.2f} "
              f"{fastest[op] / fastest['baseline_' + op]:24.2f}")
    print(json.dumps({
        "pack_us": round(us["pack"], 2),
        "unpack_us": round(us["unpack"], 2),
        "baseline_pack_us": round(us["baseline_pack"], 2),
        "baseline_unpack_us": round(us["baseline_unpack"], 2),
        "pack_ratio": round(us["pack"] / us["baseline_pack"], 3),
        "unpack_ratio": round(us["unpack"] / us["baseline_unpack"], 3),
        "pack_ratio_min": round(fastest["pack"] / fastest["baseline_pack"], 3),
        "unpack_ratio_min": round(fastest["unpack"] / fastest["baseline_unpack"], 3),
        "segment_bytes": len(data),
        "baseline_bytes": baseline_bytes,
        "repeats": repeats,
        "iterations": iterations,
        "python": platform.python_version(),
        "msgpack": ".".join(map(str, msgpack.version)),
        "msgspec": msgspec.__version__,
        "numpy": np.__version__,
    }))


if __name__ == "__main__":
    main()
