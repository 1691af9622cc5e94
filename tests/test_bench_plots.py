"""The benches' PNG curves (bench/plots.py, ``bench/soak.py --plot``): real files, drawn off-screen."""
from __future__ import annotations

import sys

import psutil
import pytest

from support import REPO

sys.path.insert(0, str(REPO))

from bench.plots import Panel, rates, write_png  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_rates_are_the_slopes_between_points():
    assert rates([(0.0, 0.0), (2.0, 10.0), (2.0, 11.0), (4.0, 11.0)]) == [(2.0, 5.0), (4.0, 0.0)]
    assert rates([(1.0, 3.0)]) == []


def test_write_png_draws_panels_into_a_png_file(tmp_path):
    out = write_png(tmp_path / "sub" / "curves.png", "two panels", [
        Panel("RSS (MB)", {"hub": [(0, 280.0), (1, 281.5)], "trainer": [(0, 540.0), (1, 538.0)]},
              marks=[(0.5, "replay full")]),
        Panel("segments / min", {"hub": [(0.5, 60.0), (1.0, 63.0)]})])
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    with pytest.raises(ValueError, match="no panels"):
        write_png(tmp_path / "empty.png", "none", [])


def _soak():
    import importlib.util

    spec = importlib.util.spec_from_file_location("soak_bench", REPO / "bench" / "soak.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_the_soak_draws_every_process_and_the_rate(tmp_path):
    soak = _soak()
    watch = soak.Watch(root=psutil.Process())
    t0 = 1_000_000.0
    watch.rss = {11: [(t0 + 5 * i, (280 + i) * 2**20) for i in range(30)],
                 12: [(t0 + 5 * i, (540 - i) * 2**20) for i in range(30)]}
    watch.reports = [(t0 + 5 * i, 12 * i) for i in range(30)]
    out = soak.plot(watch, {11: "hub", 12: "trainer"}, t0, t0 + 150, t0 + 60, str(tmp_path / "soak.png"))
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_the_soak_judges_a_swinging_process_by_its_peaks():
    soak = _soak()
    # a sawtooth between 700 and 900 MB with no trend: its ends can differ by 20 %, its peaks do not
    samples = [(float(t), (700 + 200 * ((t % 60) / 60)) * 2**20) for t in range(0, 1500, 5)]
    first, last = soak.peak_ends(samples, 0.0, 1495.0)
    assert soak.growth_pct(first, last) < 1.0
    leaking = [(t, r + t * 2**20 / 10) for t, r in samples]  # +150 MB over the run
    assert soak.growth_pct(*soak.peak_ends(leaking, 0.0, 1495.0)) > 10.0
    assert soak.peak_ends(samples, 2000.0, 3000.0) is None
    assert soak.thin(list(range(1000)), 10) == [0, 100, 200, 300, 400, 500, 600, 700, 800, 999]
