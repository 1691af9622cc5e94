"""bench/mix.py --quick runs, ends with its JSON line, and agrees with the documented `adaptive`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pzstream.search.mixing import ADAPTIVE_MEANS

BENCH = Path(__file__).resolve().parents[2] / "bench" / "mix.py"


def test_quick_bench_prints_json_last_and_its_winner_is_what_adaptive_means():
    out = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=120, check=True)
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("bench/mix.py") and any(line.startswith("| scenario |") for line in lines)
    figures = json.loads(lines[-1])
    assert figures["adaptive_means"] == ADAPTIVE_MEANS == figures["winner"]
    assert set(figures["return"]) == {"early", "copying", "calibrated", "late"}
    for rules in figures["return"].values():
        assert all(0.0 <= v <= 1.0 for v in rules.values())
