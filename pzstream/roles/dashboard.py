"""A live terminal dashboard of a running hub: ``launch.py --role monitor --dashboard``.

It follows the hub's live log stream like the plain monitor, and reads the structured report the
hub publishes every ``hub.report_every_s`` (``pzstream.stream.report_record``). Three pieces:

- :func:`update` (pure): a :class:`DashboardState` and one log record -> the next state;
- :func:`render` (pure): a state -> one rich renderable (panels: rates, versions and lag, losses,
  returns per game, PPO, rejections and caps, per-collector health, memory, recent warnings);
- :func:`run_dashboard`: subscribes and redraws, with ``rich.live.Live`` about twice a second on a
  terminal, or as a printed frame every ``frame_every_s`` when the output is a file or a pipe.

Everything a peer chose (ids, games, reasons, log text) reaches the screen as plain text: escaped
by ``printable`` and never parsed as rich markup.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, replace
from typing import TextIO

import anyio
import zmq
import zmq.asyncio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from pzstream.stream.logstream import format_record, local_address
from pzstream.stream.report_record import ReportRecord, decode_report, describe_search
from pzstream.stream.text import printable
from pzstream.stream.transport import HUB_LOG_ROLE, CurveKeys, LogSubscriber, endpoints_for
from pzstream.stream.wire import Log

EVENTS_KEPT = 8  # newest warnings and errors shown
RATES_KEPT = 40  # segments/s of the newest reports, for the sparkline
SENDERS_KEPT = 256  # role/sender pairs remembered (the oldest heard go first)
SPARK = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class DashboardState:
    """What the dashboard knows. report: the hub's newest report (None before the first) and
    report_time its unix time; records: log records seen; senders: ``role/sender`` -> (unix time
    last heard, records); events: the newest WARNING-or-worse records, formatted; rates: the
    segments/s of the newest reports, oldest first."""

    hub: str
    report: ReportRecord | None = None
    report_time: float | None = None
    reports: int = 0
    records: int = 0
    senders: tuple[tuple[str, float, int], ...] = ()
    events: tuple[str, ...] = ()
    rates: tuple[float, ...] = ()


def update(state: DashboardState, rec: Log) -> DashboardState:
    """The state after one record of the live log stream."""
    key = f"{printable(rec.role, 32)}/{printable(rec.sender, 128)}"
    seen = {k: (t, n) for k, t, n in state.senders}
    n = seen.pop(key, (0.0, 0))[1]
    seen[key] = (rec.time, n + 1)
    senders = tuple((k, t, c) for k, (t, c) in sorted(seen.items(), key=lambda kv: kv[1][0])[-SENDERS_KEPT:])
    state = replace(state, records=state.records + 1, senders=senders)
    report = decode_report(rec)
    if report is not None:
        return replace(state, report=report, report_time=rec.time, reports=state.reports + 1,
                       rates=(state.rates + (report.segments_per_s,))[-RATES_KEPT:])
    if rec.level >= logging.WARNING:
        return replace(state, events=(state.events + (format_record(rec),))[-EVENTS_KEPT:])
    return state


# ---------------------------------------------------------------------------- rendering


def sparkline(values: tuple[float, ...]) -> str:
    """One block character per value, scaled from 0 to the largest."""
    top = max(values, default=0.0)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1) + 0.5))] for v in values)


def megabytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f} MB"


def ago(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def text(value: object, limit: int = 48, style: str = "") -> Text:
    """A cell from peer-chosen text: escaped, cut, never read as markup."""
    return Text(printable(str(value), limit), style=style)


def figures(rows: list[tuple[str, object]]) -> Table:
    """A two-column table of name -> value."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, value in rows:
        table.add_row(name, value if isinstance(value, Text) else text(value))
    return table


def rates_panel(r: ReportRecord, rates: tuple[float, ...]) -> Panel:
    return Panel(figures([("segments/s", f"{r.segments_per_s:.1f}"), ("env steps/s", f"{r.steps_per_s:.1f}"),
                          ("wm updates/s", f"{r.wm_updates_per_s:.1f}"), ("segments", r.segments_accepted),
                          ("env steps", r.env_steps), ("wm updates", r.wm_updates),
                          ("trend", sparkline(rates[-20:])), *search_rows(r)]), title="rates")


def search_rows(r: ReportRecord) -> list[tuple[str, object]]:
    """The search servers' load (issue 22): where a run's time goes, shown where any server reports."""
    return [] if r.search is None else [("search", describe_search(r.search).removeprefix("search "))]


def lag_panel(r: ReportRecord) -> Panel:
    rows: list[tuple[str, object]] = []
    for model, version, slowest, lag in (("wm", r.wm_version, r.min_collector_wm_version, r.lag_wm),
                                         ("llm", r.llm_version, r.min_collector_llm_version, r.lag_llm)):
        rows += [(f"{model} version", version), (f"{model} slowest collector", "-" if slowest is None else slowest),
                 (f"{model} lag mean", f"{lag['mean']:.1f}" if lag.get("n") else "-"),
                 (f"{model} lag p90 / max", f"{lag['p90']:.0f} / {lag['max']:.0f}" if lag.get("n") else "-")]
    return Panel(figures(rows), title="versions and lag")


def losses_panel(r: ReportRecord) -> Panel:
    rows: list[tuple[str, object]] = [(k, f"{v:.4f}") for k, v in sorted(r.losses.items())]
    return Panel(figures(rows or [("no trainer stats yet", "")]), title="world-model losses")


def returns_panel(r: ReportRecord) -> Panel:
    table = Table(box=None, pad_edge=False, collapse_padding=True)
    table.add_column("game", overflow="fold")
    for name in ("episodes", "recent", "coll."):  # recent: mean of each collector's last 10
        table.add_column(name, justify="right")
    for game, g in r.returns.items():
        table.add_row(text(game, 32), str(g.episodes), f"{g.recent_mean:.2f}", str(g.collectors))
    return Panel(table if r.returns else Text("no episode finished yet"), title="returns per game")


def ppo_panel(r: ReportRecord) -> Panel:
    p = r.ppo
    if p is None:
        return Panel(Text("PPO off (ppo.enabled=false)"), title="PPO episodes")
    reward = "-" if p.reward_mean is None else f"{p.reward_mean:.3f}"
    return Panel(figures([("fired", p.fired), ("ok", p.ok), ("failed", Text(str(p.failed), style="red" if p.failed else "")),
                          ("running", "yes" if p.running else "no"), ("last reward", reward), ("prompt queue", p.queue_size)]),
                 title="PPO episodes")


def rejections_panel(r: ReportRecord) -> Panel:
    rows: list[tuple[str, object]] = [(printable(k, 32), v) for k, v in sorted(r.rejected_by_reason.items())]
    rows += [(f"connection: {printable(k, 32)}", v) for k, v in sorted(r.connections_rejected.items())]
    caps = [(printable(k, 32), v) for k, v in r.caps.items() if v]
    body = Group(Text("rejected segments", style="underline"), figures(rows or [("none", "")]),
                 Text("caps that bit", style="underline"), figures(caps or [("none", "")]))
    return Panel(body, title="rejections and caps")


def health_panel(r: ReportRecord) -> Panel:
    table = Table(box=None, pad_edge=False, collapse_padding=True, expand=True)
    table.add_column("id", overflow="fold", min_width=12)  # ids are cut by printable(), never hidden by an ellipsis
    table.add_column("role")
    table.add_column("game", overflow="fold", min_width=10)
    for name in ("policy", "state", "heard", "accepted", "rejected", "steps", "blocked", "wm v", "return", "rss MB"):
        table.add_column(name, justify="left" if name in ("policy", "state") else "right")
    for p in r.peers:
        state = "lost" if p.lost else "closed" if p.closed else "live"
        blocked = f"{'now ' if p.blocked else ''}{p.blocked_s:.1f}s"
        table.add_row(text(p.peer_id, 24), p.role, text(p.game, 20), text(p.policy, 12),
                      Text(state, style={"lost": "red", "closed": "dim"}.get(state, "green")), ago(p.last_heard_s),
                      str(p.accepted), str(p.rejected), str(p.steps), Text(blocked, style="yellow" if p.blocked else ""),
                      "-" if p.wm_version is None else str(p.wm_version),
                      "-" if p.return_mean is None else f"{p.return_mean:.2f}",
                      "-" if p.rss_bytes is None else f"{p.rss_bytes / 2**20:.0f}")
    more = r.peers_total - len(r.peers)
    title = f"collectors: {r.collectors_live} live, {r.collectors_lost} lost" + (f" ({more} more not shown)" if more else "")
    return Panel(table if r.peers else Text("no collector has connected"), title=title)


def memory_panel(r: ReportRecord) -> Panel:
    rows: list[tuple[str, object]] = [(printable(k, 32), megabytes(v)) for k, v in r.rss_bytes.items()]
    collectors = [p.rss_bytes for p in r.peers if p.rss_bytes is not None and not (p.lost or p.closed)]
    if collectors:
        rows += [(f"collectors ({len(collectors)})", megabytes(sum(collectors))), ("largest collector", megabytes(max(collectors)))]
    rows.append(("trainer dropped", r.trainer_dropped))
    return Panel(figures(rows), title="memory (RSS)")


def events_panel(state: DashboardState, now: float) -> Panel:
    roles = Text(", ".join(f"{k} {now - t:.0f}s ago" for k, t, _ in state.senders[-6:]) or "none yet", style="dim")
    events = Text("\n".join(state.events) if state.events else "none")
    return Panel(Group(Text("heard from", style="underline"), roles, Text("warnings and errors", style="underline"), events),
                 title=f"log stream ({state.records} records)")


def row(*panels: RenderableType) -> Table:
    grid = Table.grid(expand=True, padding=(0, 1))
    for _ in panels:
        grid.add_column(ratio=1)
    grid.add_row(*panels)
    return grid


def render(state: DashboardState, now: float | None = None) -> RenderableType:
    """The whole dashboard for ``state`` (``now``: unix time, for the ages shown)."""
    now = time.time() if now is None else now
    r = state.report
    head = Text(f"pzstream dashboard: hub {printable(state.hub, 128)}", style="bold")
    if r is None:
        head.append(f"   waiting for the hub's first report ({state.records} log records so far)")
        return Group(head, events_panel(state, now))
    head.append(f"   up {r.elapsed_s:.0f}s, report {now - (state.report_time or now):.1f}s ago, "
                f"{state.reports} reports, every {r.interval_s:.1f}s")
    return Group(head,
                 row(rates_panel(r, state.rates), lag_panel(r), losses_panel(r)),
                 row(returns_panel(r), ppo_panel(r), rejections_panel(r)),
                 health_panel(r),
                 row(memory_panel(r), events_panel(state, now)))


# ---------------------------------------------------------------------------- the loop


async def run_dashboard(hub_address: str, stop: anyio.Event, roles: tuple[str, ...] = (),
                        curve: CurveKeys | None = None, out: TextIO = sys.stdout,
                        refresh_s: float = 0.5, frame_every_s: float = 2.0) -> int:
    """Follow the hub at ``hub_address`` and draw until ``stop``; the frames drawn.

    On a terminal: ``rich.live.Live`` redrawn every ``refresh_s``. Otherwise (a file, a pipe):
    one frame printed every ``frame_every_s`` and a last one at the end. ``roles``: the roles
    heard (the hub's, which carries its reports, always is).
    """
    console = Console(file=out, width=None if out.isatty() else 120)
    subscribed = tuple(dict.fromkeys((*roles, HUB_LOG_ROLE))) if roles else ()
    ctx = zmq.asyncio.Context()
    sub = LogSubscriber(ctx, local_address(endpoints_for(hub_address).logs_out), subscribed, curve)
    current = [DashboardState(hub=hub_address)]
    frames = 0

    async def follow() -> None:
        while True:
            current[0] = update(current[0], await sub.recv())

    def frame() -> None:
        nonlocal frames
        console.print(render(current[0]))
        console.print()
        out.flush()
        frames += 1

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            if console.is_terminal:
                with Live(render(current[0]), console=console, auto_refresh=False) as live:
                    while not stop.is_set():
                        with anyio.move_on_after(refresh_s):
                            await stop.wait()
                        live.update(render(current[0]), refresh=True)
                        frames += 1
            else:
                while not stop.is_set():
                    frame()
                    with anyio.move_on_after(frame_every_s):
                        await stop.wait()
                frame()
            tg.cancel_scope.cancel()
    finally:
        sub.close()
        ctx.destroy(linger=0)
    return frames
