"""The dashboard (``--role monitor --dashboard``): its state built from the records of a real hub
with a real collector, rendered headless, and the role run as a process against a real hub."""
from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import time

import anyio
import pytest
import zmq.asyncio
from rich.console import Console
from support import HubThread, dealer, free_base_port, hub_config, launch

from pzstream.roles.dashboard import DashboardState, render, update
from pzstream.stream.logstream import local_address
from pzstream.stream.report_record import REPORT_LOGGER, PeerHealth, ReportRecord, decode_report, encode_report
from pzstream.stream.transport import LogSubscriber, endpoints_for
from pzstream.stream.wire import Log

CID = "dash0"


def collector(address: str, cid: str) -> subprocess.Popen:
    return launch("--role", "collector", "--learner", address, f"collector.id={cid}", "hub.heartbeat_s=0.2",
                  "collector.segment_steps=10", "collector.max_episode_steps=20", "collector.policy=random")


def send_malformed(address: str) -> None:
    """One frame that is no message: the hub rejects it as ``malformed``."""
    sock = dealer(address)
    sock.send(b"\xc1\xc1 not msgpack")
    time.sleep(0.3)
    sock.close(0)


async def capture(address: str, until, timeout: float) -> list[Log]:
    """The hub's live log stream until ``until(records)`` holds (or ``timeout``)."""
    ctx = zmq.asyncio.Context()
    sub = LogSubscriber(ctx, local_address(endpoints_for(address).logs_out))
    records: list[Log] = []
    try:
        with anyio.move_on_after(timeout):
            while not until(records):
                records.append(await sub.recv())
    finally:
        sub.close()
        ctx.destroy(linger=0)
    return records


def report_shows_all(records: list[Log]) -> bool:
    """The newest report has accepted segments of ``CID``, a finished episode and the malformed frame."""
    reports = [r for r in map(decode_report, records) if r is not None]
    if not reports:
        return False
    r = reports[-1]
    return (r.segments_accepted > 0 and "malformed" in r.rejected_by_reason and bool(r.returns)
            and any(p.peer_id == CID and p.accepted > 0 for p in r.peers))


@pytest.fixture(scope="module")
def hub_records() -> list[Log]:
    """Records of a real hub's stream: its reports (every 0.5 s), a collector playing, one malformed frame."""
    address = f"tcp://127.0.0.1:{free_base_port()}"
    hub = HubThread(hub_config(address, "hub.report_every_s=0.5")).start()
    proc = None
    try:
        async def run() -> list[Log]:
            async with anyio.create_task_group() as tg:
                async def start_peers() -> None:
                    nonlocal proc
                    await anyio.sleep(0.5)  # PUB/SUB: subscribed before the collector's first records
                    proc = collector(address, CID)
                    await anyio.to_thread.run_sync(send_malformed, address)
                tg.start_soon(start_peers)
                return await capture(address, report_shows_all, timeout=90)

        records = anyio.run(run)
    finally:
        err = b""
        if proc is not None:
            proc.terminate()
            err = proc.communicate(timeout=15)[1]
        hub.stop()
    reports = [r for r in map(decode_report, records) if r is not None]
    assert report_shows_all(records), (f"no complete report in {len(records)} records; last report: "
                                       f"{reports[-1] if reports else None}; collector: {err.decode()[-2000:]}")
    return records


def state_of(records: list[Log]) -> DashboardState:
    state = DashboardState(hub="tcp://test")
    for rec in records:
        state = update(state, rec)
    return state


def shown(renderable, width: int = 120) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_update_builds_the_state_from_a_real_hubs_records(hub_records):
    state = state_of(hub_records)
    reports = [r for r in map(decode_report, hub_records) if r is not None]
    assert state.records == len(hub_records)
    assert state.reports == len(reports) >= 1
    assert state.report == reports[-1]
    assert state.rates == tuple(r.segments_per_s for r in reports)[-len(state.rates):]
    senders = {k for k, _, _ in state.senders}
    assert "learner/hub" in senders
    assert f"collector/{CID}@127.0.0.1" in senders  # attributed to its connection by the hub
    r = state.report
    peer = next(p for p in r.peers if p.peer_id == CID)
    assert peer.role == "collector" and not peer.lost and peer.last_heard_s is not None and peer.last_heard_s < 5
    assert peer.rss_bytes is not None and peer.rss_bytes > 10 * 2**20  # the collector's heartbeat carries its RSS
    assert r.rss_bytes["hub"] > 10 * 2**20
    assert r.rejected_by_reason["malformed"] >= 1
    assert r.returns["tw-default"].episodes >= 1


def test_render_shows_the_real_figures(hub_records):
    state = state_of(hub_records)
    r = state.report
    text = shown(render(state, now=state.report_time))
    for title in ("rates", "versions and lag", "world-model losses", "returns per game", "PPO episodes",
                  "rejections and caps", "memory (RSS)", "log stream"):
        assert title in text, title
    peer = next(p for p in r.peers if p.peer_id == CID)
    health = next(line for line in text.splitlines() if CID in line and "collector" in line)
    assert str(peer.accepted) in health and "live" in health and "tw-default" in health
    assert f"collectors: {r.collectors_live} live" in text
    assert "malformed" in text
    assert f"{r.segments_per_s:.1f}" in text and str(r.segments_accepted) in text
    assert "tw-default" in text and str(r.returns["tw-default"].episodes) in text
    assert "PPO off" in text  # the test hub runs without PPO
    assert "hub" in text and "MB" in text


def test_render_before_the_first_report():
    rec = Log(role="collector", sender="c9@127.0.0.1", level=logging.WARNING, time=time.time(), logger="x",
              message="valid actions past the budget")
    text = shown(render(update(DashboardState(hub="tcp://h:5555"), rec)))
    assert "waiting for the hub's first report (1 log records so far)" in text
    assert "valid actions past the budget" in text and "collector/c9@127.0.0.1" in text


def a_report(peer_id: str = "c1") -> ReportRecord:
    return ReportRecord(
        elapsed_s=10.0, interval_s=1.0, segments_accepted=5, segments_per_s=0.5, env_steps=50, steps_per_s=5.0,
        wm_updates=0, wm_updates_per_s=0.0, wm_version=0, llm_version=0, min_collector_wm_version=None,
        min_collector_llm_version=None, lag_wm={"n": 0}, lag_llm={"n": 0}, losses={}, returns={}, ppo=None,
        rejected_by_reason={}, connections_rejected={}, caps={},
        peers=(PeerHealth(peer_id=peer_id, role="collector", game="g", policy="random", accepted=5, rejected=0,
                          steps=50, lost=False, closed=False),),
        peers_total=1, collectors_live=1, collectors_lost=0, trainer_dropped=0, rss_bytes={})


def report_log(role: str, message: str) -> Log:
    return Log(role=role, sender="hub", level=logging.DEBUG, time=time.time(), logger=REPORT_LOGGER, message=message)


def test_only_the_hubs_whole_reports_count():
    good = encode_report(a_report())
    state = DashboardState(hub="h")
    state = update(state, report_log("collector", good))  # a peer's record (the intake never lets it claim "learner")
    state = update(state, report_log("learner", json.dumps({"segments_accepted": 1})))  # not a whole record
    state = update(state, report_log("learner", "not json"))
    assert state.report is None and state.reports == 0 and state.records == 3
    state = update(state, report_log("learner", good))
    assert state.report == a_report() and state.reports == 1


def test_peer_text_is_shown_escaped_never_as_markup():
    state = update(DashboardState(hub="h"), report_log("learner", encode_report(a_report("[red]x\x1b[2Jy[/red]"))))
    text = shown(render(state))
    assert "[red]x\\x1b[2Jy[/red]" in text  # markup shown literally, the escape sequence escaped
    assert "\x1b" not in text


def test_dashboard_flag_is_for_the_monitor_only():
    p = launch("--role", "collector", "--dashboard")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and b"--dashboard is for --role monitor" in err


@pytest.mark.slow  # two Python processes starting on a busy machine: about 20 s
def test_monitor_dashboard_prints_frames_and_stops_on_sigterm(address, procs):
    hub = HubThread(hub_config(address, "hub.report_every_s=0.5")).start()
    try:
        mon = launch("--role", "monitor", "--learner", address, "--dashboard")  # stdout: a pipe, not a terminal
        procs.append(mon)
        time.sleep(1.0)
        procs.append(collector(address, CID))
        hub.wait_for(lambda h: h.status().segments_accepted > 0, timeout=60, what="segments")
        time.sleep(3.0)  # a few frames that show the collector
        mon.send_signal(signal.SIGTERM)
        out, err = mon.communicate(timeout=30)
    finally:
        hub.stop()
    assert mon.returncode == 0, err.decode()[-2000:]
    frames = out.decode().split("pzstream dashboard: hub ")
    assert len(frames) >= 3, out.decode()[-3000:]
    last = frames[-1]
    assert "rates" in last and CID in last and "collectors: 1 live" in last
    assert "Traceback" not in err.decode()


def test_report_record_rates_losses_and_health_rows():
    from pzstream.hub.report import HubExtras, ReturnTracker, report_record
    from pzstream.hub.status import CollectorStatus, HubStatus
    from pzstream.stream.report_record import MAX_PEER_ROWS

    def peer(cid: str, lost: bool = False, **stats: float) -> CollectorStatus:
        return CollectorStatus(collector_id=cid, game="g", policy="random", accepted=3, rejected=0, steps=30, lost=lost,
                               closed=False, stats=dict(stats))

    collectors = {f"z{i:03d}": peer(f"z{i:03d}", lost=True) for i in range(MAX_PEER_ROWS + 5)}
    collectors["a-live"] = peer("a-live", blocked=1.0, blocked_s=2.5, wm_version=4.0, rss_bytes=3e8, return_mean=float("nan"))
    s = HubStatus(segments_accepted=110, env_steps=1100, accepted_bytes=0, rejected_by_reason={"stale": 2},
                  connections_rejected={}, collectors=collectors, readers={}, collectors_lost=MAX_PEER_ROWS + 5,
                  per_game={}, lag_wm={"n": 0}, lag_llm={"n": 0}, wm_version=5, llm_version=0, elapsed_s=20.0,
                  caps={"stats_trimmed": 1})
    x = HubExtras(wm_updates=40, trainer_stats={"loss/total": 1.5, "loss/value": float("nan"), "updates": 40.0},
                  trainer_dropped=0, ppo=None, last_heard_s={"a-live": 0.25}, pids={})
    r = report_record(s, x, ReturnTracker(), interval_s=2.0, previous=(100, 1000, 30), rss_bytes={"hub": 1})
    assert (r.segments_per_s, r.steps_per_s, r.wm_updates_per_s) == (5.0, 50.0, 5.0)
    assert r.losses == {"total": 1.5}  # a NaN loss is left out (JSON has none), other stats are no loss
    assert r.peers_total == MAX_PEER_ROWS + 6 and len(r.peers) == MAX_PEER_ROWS
    live = r.peers[0]  # live peers first
    assert (live.peer_id, live.blocked, live.blocked_s, live.wm_version, live.rss_bytes, live.last_heard_s) == \
        ("a-live", True, 2.5, 4, 300_000_000, 0.25)
    assert live.return_mean is None
    assert decode_report(report_log("learner", encode_report(r))) == r  # what the dashboard reads back


class TerminalOut(io.StringIO):
    """An output that says it is a terminal: the dashboard draws with rich.live.Live."""

    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_dashboard_redraws_live(address):
    out = TerminalOut()

    async def run() -> int:
        from pzstream.roles.dashboard import run_dashboard

        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            async def stop_soon() -> None:
                await anyio.sleep(1.6)
                stop.set()
            tg.start_soon(stop_soon)
            return await run_dashboard(address, stop, out=out, refresh_s=0.2)

    frames = anyio.run(run)
    assert frames >= 5  # about 1.6 s / 0.2 s redraws, no hub needed
    assert "waiting for the hub's first" in out.getvalue()
    assert "\x1b[?25l" in out.getvalue() and out.getvalue().endswith("\x1b[?25h")  # cursor hidden while live, shown after


@pytest.mark.parametrize("level, shown", [("INFO", False), ("DEBUG", True)])
def test_the_plain_monitor_shows_reports_only_at_debug(address, level, shown):
    from pzstream.stream.logstream import run_monitor
    from pzstream.stream.transport import ZmqLogHandler

    hub = HubThread(hub_config(address, "hub.report_every_s=0.2")).start()
    peer_log = ZmqLogHandler(local_address(endpoints_for(address).logs_in), "collector", "t1")
    out = io.StringIO()

    async def run() -> None:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            async def log_then_stop() -> None:
                for _ in range(8):  # an INFO record of a peer's now and then, beside the hub's reports
                    await anyio.sleep(0.2)
                    peer_log.emit(logging.LogRecord("test", logging.INFO, __file__, 0, "still playing", None, None))
                stop.set()
            tg.start_soon(log_then_stop)
            await run_monitor(address, stop, level=level, out=out)

    try:
        anyio.run(run)
    finally:
        peer_log.close()
        hub.stop()
    assert "collector/t1@127.0.0.1 still playing" in out.getvalue()  # the stream flowed
    assert ('"segments_accepted":0' in out.getvalue()) == shown, out.getvalue()[-1000:]
