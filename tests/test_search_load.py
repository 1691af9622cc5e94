"""The hub's report tells how busy the search servers are (issue 22, item 5)."""
from __future__ import annotations

import os
import stat

from pzstream.hub.search_load import SearchTotals, search_load, search_totals
from pzstream.stream.report_record import ReportRecord, SearchLoad, decode_report, encode_report, gpu_utilization
from pzstream.stream.report_record import describe_search as describe


def server(roots: float, batches: float, search_s: float, prior_s: float, **more: float) -> dict[str, float]:
    return {"roots": roots, "batches": batches, "search_s": search_s, "prior_s": prior_s, **more}


def quiet_report_fields() -> dict:
    """A ReportRecord's fields for a hub that has seen nothing yet (without ``search``)."""
    return dict(elapsed_s=1.0, interval_s=1.0, segments_accepted=0, segments_per_s=0.0, env_steps=0, steps_per_s=0.0,
                wm_updates=0, wm_updates_per_s=0.0, wm_version=0, llm_version=0, min_collector_wm_version=None,
                min_collector_llm_version=None, lag_wm={}, lag_llm={}, losses={}, returns={}, ppo=None,
                rejected_by_reason={}, connections_rejected={}, caps={}, peers=(), peers_total=0, collectors_live=0,
                collectors_lost=0, trainer_dropped=0, rss_bytes={})


def test_the_load_over_an_interval_is_the_difference_of_two_totals():
    before = search_totals([server(100, 20, 4.0, 3.0), {"env_steps": 5.0}])  # a collector's stats: not a server
    now = search_totals([server(160, 30, 9.0, 7.0, gpu_util=40.0)])
    load = search_load(now, before, interval_s=10.0)
    assert load == SearchLoad(servers=1, roots_per_s=6.0, mean_batch=6.0, ms_per_batch=500.0, prior_share=0.8,
                              gpu_util=40.0)
    assert describe(load) == "search 6.0 roots/s, batch 6.0, 500 ms, prior 80%, gpu 40%"


def test_several_servers_are_summed_and_a_prior_server_is_not_a_search_server():
    prior_server = {"roots": 500.0, "batches": 50.0, "requests": 500.0}  # scores, searches nothing
    now = search_totals([server(10, 2, 1.0, 0.5, gpu_util=20.0), server(30, 3, 2.0, 0.0, gpu_util=60.0), prior_server])
    assert now == SearchTotals(servers=2, roots=40.0, batches=5.0, search_s=3.0, prior_s=0.5, gpu_util=40.0)
    load = search_load(now, SearchTotals(), interval_s=1.0)
    assert load is not None and load.mean_batch == 8.0 and load.prior_share == round(0.5 / 3.0, 3)
    assert describe(load).startswith("search 40.0 roots/s (2 servers), batch 8.0, 600 ms, prior 17%, gpu 40%")


def test_no_server_no_load_and_an_idle_interval_says_what_it_does_not_know():
    assert search_load(search_totals([{"env_steps": 3.0}]), SearchTotals(), 10.0) is None
    same = search_totals([server(10, 2, 1.0, 0.5)])
    idle = search_load(same, same, 10.0)
    assert idle == SearchLoad(servers=1, roots_per_s=0.0, mean_batch=None, ms_per_batch=None, prior_share=None,
                              gpu_util=None)
    assert describe(idle) == "search 0.0 roots/s"


def test_bad_numbers_in_a_peers_stats_count_as_zero_and_a_restarted_server_counts_from_zero():
    weird = search_totals([{"search_s": float("nan"), "roots": -5.0, "batches": float("inf"), "gpu_util": 250.0}])
    assert weird == SearchTotals(servers=1)
    before = search_totals([server(1000, 100, 50.0, 10.0)])
    restarted = search_totals([server(12, 2, 1.0, 0.25)])  # its counters fell: a new process
    load = search_load(restarted, before, 5.0)
    assert load is not None and load.roots_per_s == 2.4 and load.mean_batch == 6.0 and load.prior_share == 0.25


def test_a_report_with_the_load_round_trips_and_an_older_report_without_it_still_decodes():
    import msgspec

    from pzstream.stream.report_record import REPORT_LOGGER
    from pzstream.stream.transport import HUB_LOG_ROLE
    from pzstream.stream.wire import Log

    fields = quiet_report_fields()
    load = SearchLoad(servers=1, roots_per_s=6.0, mean_batch=6.0, ms_per_batch=500.0, prior_share=0.8, gpu_util=None)
    for record in (ReportRecord(**fields, search=load), ReportRecord(**fields)):
        rec = Log(role=HUB_LOG_ROLE, sender="hub", level=10, time=0.0, logger=REPORT_LOGGER, message=encode_report(record))
        assert decode_report(rec) == record
    old = msgspec.json.encode(fields).decode()  # a hub from before the field
    got = decode_report(Log(role=HUB_LOG_ROLE, sender="hub", level=10, time=0.0, logger=REPORT_LOGGER, message=old))
    assert got is not None and got.search is None


def test_gpu_utilization_is_none_on_a_cpu_and_read_from_nvidia_smi_where_torch_cannot(tmp_path, monkeypatch):
    assert gpu_utilization("cpu") is None
    smi = tmp_path / "nvidia-smi"
    smi.write_text('#!/bin/sh\ncase "$*" in *--id=3*) echo 37 ;; *) echo "no such GPU" >&2; exit 6 ;; esac\n')
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpu_utilization("cuda:1") == 37.0  # visible device 1 is the host's GPU 3
    assert gpu_utilization("cuda:0") is None  # nvidia-smi failed for GPU 2: not known, no error
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert gpu_utilization("cuda") is None  # no nvidia-smi at all


def test_the_dashboards_rates_panel_shows_the_search_load_where_a_server_reports():
    from rich.console import Console

    from pzstream.roles.dashboard import rates_panel

    fields = quiet_report_fields()
    load = SearchLoad(servers=1, roots_per_s=6.0, mean_batch=6.0, ms_per_batch=500.0, prior_share=0.8, gpu_util=None)

    def shown(record: ReportRecord) -> str:
        console = Console(width=120, record=True)
        console.print(rates_panel(record, ()))
        return console.export_text()

    assert "6.0 roots/s, batch 6.0, 500 ms, prior 80%" in shown(ReportRecord(**fields, search=load))
    assert "roots/s" not in shown(ReportRecord(**fields))
