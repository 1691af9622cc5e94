"""Soak: the whole system for a long while, with every process's memory and the ingest rate watched.

    python bench/soak.py [--quick] [--minutes 30] [--config FILE] [--every S] [--out FILE] [--plot PNG] [key=value ...]

One ``launch.py --role all`` run (hub, trainer, PPO worker, collectors and their helpers, on the
embedded default game with the tiny models of ``config/debug.yaml``). Every ``--every`` seconds
the RSS of each process in its tree is sampled (psutil). The trainer's replay is made small
(``trainer.replay_capacity_steps``: 200 with --quick, 5000 for the record) so that it fills
early; it counts as full once the trainer reports it within one segment of its capacity (its
``replay N steps`` log line). From that moment to the end of the run, each process's RSS growth
is measured: the median of its first 3 samples after the fill against the median of its last 3
samples before the deadline (a single sample can catch a passing peak; the table's "MB at fill"
and "MB at end" are these medians). ``rss_peak_growth_pct``: the highest RSS in the last fifth of
that window against the highest in its first fifth, for processes whose memory swings with their
work (the PPO worker's episodes); ``rss_series_mb``: each process's samples (minutes, MB), thinned
to 240. Goal (``goal_met``, judged by the peaks, since the ends' medians of a swinging process read a
random phase of its swing): at most 5 % in
every process over the 30-minute run; the short modes report the figure without a goal (a
process still warming its caches grows in its first minute).

Also reported: ``segments`` accepted by the hub; ``lost``: segments the collectors saw
acknowledged (``sent - inflight`` of their closing heartbeats) that the hub neither accepted nor
refused with a reason (0 expected); ``rate_first``/``rate_last``: segments/s over the first and
last fifth of the stream, from the hub's first report that counts a segment to its last report
before the deadline (start-up and shutdown are left out). Segments are 10 steps, so that the
rates count many of them. ``--quick``: 75 s (CI). ``PZSTREAM_BENCH_SMOKE=1``: 40 s without the
LLM and PPO. Overrides go last and win. Every process the run started is stopped on exit, Ctrl-C
included. The last stdout line is one JSON object; ``--out`` also writes it to a file, ``--plot`` draws
every process's RSS and the segment rate over the run into a PNG (``bench/plots.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pzstream.stream.transport import free_base_port  # noqa: E402

SMOKE = os.environ.get("PZSTREAM_BENCH_SMOKE") == "1"
GOAL_RSS_GROWTH_PCT = 5.0
ENDS = 3  # samples averaged (median) at each end of the measured window

HUB_REPORT = re.compile(r"^(\d\d:\d\d:\d\d) \S+\s+learner/hub segments (\d+) \(")
HELPER_STARTED = re.compile(r"(world-model trainer|PPO worker) started \(pid (\d+)\)")
TRAINER_REPLAY = re.compile(r"^(\d\d:\d\d:\d\d) \S+\s+trainer/\S+ wm update \d+ .*replay (\d+) steps")
HELPER_NAMES = {"world-model trainer": "trainer", "PPO worker": "ppo"}


# ---------------------------------------------------------------------------- pure figures


def clock_to_epoch(hms: str, ref: float) -> float:
    """A log line's local ``HH:MM:SS`` as unix seconds, taking the day that puts it nearest ``ref``."""
    h, m, s = (int(x) for x in hms.split(":"))
    day = time.localtime(ref)
    t = time.mktime((day.tm_year, day.tm_mon, day.tm_mday, h, m, s, 0, 0, -1))
    return min((t - 86400, t, t + 86400), key=lambda c: abs(c - ref))


def count_at(points: list[tuple[float, int]], t: float) -> float:
    """The cumulative count at time ``t``, linear between the (time, count) points (sorted by time)."""
    if t <= points[0][0]:
        return float(points[0][1])
    for (t0, c0), (t1, c1) in zip(points, points[1:]):
        if t <= t1:
            return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else float(c1)
    return float(points[-1][1])


def fifth_rates(points: list[tuple[float, int]]) -> tuple[float | None, float | None]:
    """Segments/s over the first and the last fifth of the span the points cover (None: under 2 points)."""
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return None, None
    t0, t1 = points[0][0], points[-1][0]
    fifth = (t1 - t0) / 5
    first = (count_at(points, t0 + fifth) - count_at(points, t0)) / fifth
    last = (count_at(points, t1) - count_at(points, t1 - fifth)) / fifth
    return round(first, 3), round(last, 3)


def rss_ends(samples: list[tuple[float, int]], start: float, end: float) -> tuple[float, float] | None:
    """One process's RSS at both ends of [start, end]: the median of its first ``ENDS`` samples in
    the window and the median of its last ``ENDS``; None when it has too few samples there (it
    started late or ended early)."""
    inside = [rss for t, rss in samples if start <= t <= end]
    if len(inside) < 2 * ENDS - 1:
        return None
    return float(statistics.median(inside[:ENDS])), float(statistics.median(inside[-ENDS:]))


def peak_ends(samples: list[tuple[float, int]], start: float, end: float) -> tuple[float, float] | None:
    """One process's highest RSS in the first fifth of [start, end] and in the last fifth: a process
    whose memory swings with its work (a PPO episode allocates and frees hundreds of MB) is judged
    by its peaks, which rise only when something is kept; None with too few samples."""
    span = end - start
    first = [rss for t, rss in samples if start <= t <= start + span / 5]
    last = [rss for t, rss in samples if end - span / 5 <= t <= end]
    if not first or not last:
        return None
    return float(max(first)), float(max(last))


def thin(points: list, most: int) -> list:
    """At most ``most`` of ``points``, evenly spaced, the last one kept."""
    if len(points) <= most:
        return points
    step = len(points) / most
    return [points[int(i * step)] for i in range(most - 1)] + [points[-1]]


def growth_pct(first: float, last: float) -> float:
    return round(100.0 * (last - first) / first, 2)


def lost_segments(summary: dict, collector_logs: list[Path]) -> tuple[int, int | None]:
    """(acknowledged at the collectors, lost): lost = acknowledged - accepted - refused with a reason
    (a duplicate is refused *and* counted as accepted once, so it is not subtracted); None when a
    collector left no count (it crashed before its goodbye and its summary: said on stderr).

    A collector's acknowledged count is ``sent - inflight`` of its closing heartbeat, as the hub
    kept it; a collector whose goodbye the hub missed is read from the summary it printed last
    in its log (``segments_sent - segments_unsent``)."""
    acked, uncounted = 0, []
    stats = summary.get("collector_stats", {})
    printed = {}
    for path in collector_logs:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.startswith("{")]
        if lines:
            last = json.loads(lines[-1])
            printed[last.get("collector_id")] = last
    for cid in set(stats) | set(printed):
        s = stats.get(cid, {})
        if s.get("closing") == 1.0:
            acked += int(s["sent"] - s["inflight"])
        elif cid in printed:
            acked += int(printed[cid]["segments_sent"] - printed[cid]["segments_unsent"])
        else:
            uncounted.append(cid)
    if uncounted:
        print(f"[soak] collectors {uncounted} left neither a closing heartbeat nor a summary: lost is unknown",
              file=sys.stderr)
        return acked, None
    refused = sum(n for reason, n in summary["rejected_by_reason"].items() if reason != "duplicate_seq")
    return acked, acked - int(summary["segments_accepted"]) - refused


# ---------------------------------------------------------------------------- watching the run


class LogTail:
    """The complete lines a growing file gained since the last call."""

    def __init__(self, path: Path):
        self.path, self.offset, self.partial = path, 0, b""

    def lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *done, self.partial = (self.partial + data).split(b"\n")
        return [ln.decode("utf-8", "replace") for ln in done]


@dataclass
class Watch:
    """What the soak saw: RSS samples per process, hub reports and the replay's fill."""

    root: psutil.Process
    procs: dict[int, psutil.Process] = field(default_factory=dict)  # every process of the tree ever seen
    cmdlines: dict[int, tuple[list[str], int]] = field(default_factory=dict)  # pid -> (command line, parent pid)
    rss: dict[int, list[tuple[float, int]]] = field(default_factory=dict)  # pid -> [(unix s, bytes)]
    helpers: dict[int, str] = field(default_factory=dict)  # pid -> "trainer" / "ppo", from the hub's log
    reports: list[tuple[float, int]] = field(default_factory=list)  # (unix s, segments accepted)
    replay_steps: int = 0
    replay_full_at: float | None = None

    def sample(self) -> None:
        now = time.time()
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in tree:
            try:
                rss = p.memory_info().rss
                if p.pid not in self.cmdlines:  # read while it lives: the names are given after the run
                    self.cmdlines[p.pid] = (p.cmdline(), p.ppid())
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            self.procs.setdefault(p.pid, p)
            self.rss.setdefault(p.pid, []).append((now, rss))

    def read_hub(self, lines: list[str], ref: float) -> None:
        for ln in lines:
            if m := HELPER_STARTED.search(ln):
                self.helpers[int(m.group(2))] = HELPER_NAMES[m.group(1)]
            elif m := HUB_REPORT.match(ln):
                self.reports.append((clock_to_epoch(m.group(1), ref), int(m.group(2))))

    def read_helpers(self, lines: list[str], ref: float, full_steps: int) -> None:
        for ln in lines:
            if m := TRAINER_REPLAY.match(ln):
                self.replay_steps = int(m.group(2))
                if self.replay_full_at is None and self.replay_steps >= full_steps:
                    self.replay_full_at = clock_to_epoch(m.group(1), ref)


def process_names(watch: Watch) -> dict[int, str]:
    """A readable, unique name for every pid seen: hub, trainer, ppo, c0, c0/va, ..."""
    names: dict[int, str] = {}
    taken: set[str] = set()
    for pid in sorted(watch.procs, key=lambda p: watch.rss[p][0][0]):  # in order of appearance
        cmd, parent = watch.cmdlines.get(pid, ([], -1))
        joined = " ".join(cmd)
        role = next((cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == "--role"), None)
        cid = next((a.split("=", 1)[1] for a in cmd if a.startswith("collector.id=")), None)
        up = names.get(parent, "hub")
        if pid == watch.root.pid:
            name = "hub"
        elif pid in watch.helpers:
            name = watch.helpers[pid]
        elif role == "collector" and cid:
            name = cid
        elif role:
            name = role
        elif "pzstream.env.va_worker" in joined:
            name = f"{up}/va"
        elif "resource_tracker" in joined:
            name = f"{up}/resource-tracker"
        else:
            name = f"{up}/pid{pid}"
        unique, k = name, 2
        while unique in taken:  # a restarted helper, a second valid-action helper
            unique, k = f"{name}#{k}", k + 1
        names[pid] = unique
        taken.add(unique)
    return names


def stop_tree(launch: subprocess.Popen, watch: Watch, grace_s: float = 60.0) -> None:
    """Stop the run: SIGTERM to ``launch.py`` (it stops its collectors, servers and helpers in
    order), then kill whatever of the tree is left after ``grace_s``, by pid."""
    if launch.poll() is None:
        launch.send_signal(signal.SIGTERM)
        try:
            launch.wait(grace_s)
        except subprocess.TimeoutExpired:
            launch.kill()
            launch.wait(10)
    watch.sample()  # late children too
    for p in watch.procs.values():
        try:
            if p.is_running():  # psutil checks the start time too: a reused pid is not ours
                p.kill()
        except psutil.Error:
            pass


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM to the bench: stop the run like Ctrl-C does


# ---------------------------------------------------------------------------- the run


def mode_overrides(quick: bool) -> list[str]:
    if SMOKE:  # checks that the bench works: no LLM, tiny segments, a replay that fills in seconds
        return ["llm.enabled=false", "ppo.enabled=false", "collector.segment_steps=5", "trainer.min_replay_steps=20",
                "trainer.replay_capacity_steps=100", "hub.report_every_s=1"]
    if quick:
        return ["collector.segment_steps=10", "trainer.min_replay_steps=100", "trainer.replay_capacity_steps=200",
                "hub.report_every_s=2"]
    return ["collector.segment_steps=10", "trainer.replay_capacity_steps=5000", "hub.report_every_s=5"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="75 s with a 200-step replay (CI)")
    ap.add_argument("--minutes", type=float, default=None, help="run length (default 30)")
    ap.add_argument("--config", default=None, help="config file (default config/debug.yaml)")
    ap.add_argument("--every", type=float, default=None, help="seconds between RSS samples (default 2, 5 for 30 min)")
    ap.add_argument("--out", default=None, help="also write the JSON result here")
    ap.add_argument("--plot", default=None, help="also draw each process's RSS and the segment rate over time into "
                    "this PNG file")
    ap.add_argument("overrides", nargs="*", help="config overrides (last, so they win)")
    args = ap.parse_intermixed_args()
    minutes = args.minutes or (40 / 60 if SMOKE else 1.25 if args.quick else 30.0)
    seconds = 60 * minutes
    every = args.every or (1.0 if SMOKE else 2.0 if args.quick or minutes < 10 else 5.0)
    name = f"soak-{os.getpid()}"
    overrides = [*mode_overrides(args.quick), *args.overrides]
    from pzstream.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    if cfg.run.log_level not in ("DEBUG", "INFO"):
        sys.exit(f"error: the soak reads the hub's and trainer's INFO reports; run.log_level={cfg.run.log_level} hides them")
    if not cfg.trainer.enabled:
        sys.exit("error: the soak measures from the trainer's replay being full; trainer.enabled=false has none")
    capacity = cfg.trainer.replay_capacity_steps
    full_steps = capacity - cfg.collector.segment_steps  # eviction keeps it within one segment of capacity
    run_dir = ROOT / cfg.run.out_dir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    address = f"tcp://127.0.0.1:{free_base_port()}"
    cmd = [sys.executable, str(ROOT / "launch.py"), "--role", "all", "--max-seconds", str(seconds),
           *(["--config", args.config] if args.config else []), f"run.name={name}", *overrides, "--learner", address]
    print(f"[soak] {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    hub_log, hub_out = run_dir / "soak-hub.log", run_dir / "soak-hub.out"

    from pzstream.roles.lifecycle import die_with_parent

    signal.signal(signal.SIGTERM, _interrupt)
    with open(hub_log, "wb") as err, open(hub_out, "wb") as out:
        # its own session: Ctrl-C reaches the bench only, which then stops the run in order
        launch = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, start_new_session=True,
                                  preexec_fn=die_with_parent)
    t_start = time.time()
    deadline = t_start + seconds
    watch = Watch(psutil.Process(launch.pid))
    hub_tail, helpers_tail = LogTail(hub_log), LogTail(run_dir / "helpers.log")
    announced = False
    try:
        while launch.poll() is None and time.time() < deadline:
            watch.sample()
            now = time.time()
            watch.read_hub(hub_tail.lines(), now)
            watch.read_helpers(helpers_tail.lines(), now, full_steps)
            if watch.replay_full_at is not None and not announced:
                announced = True
                print(f"[soak] replay full ({watch.replay_steps}/{capacity} steps) at "
                      f"{watch.replay_full_at - t_start:.0f} s", file=sys.stderr, flush=True)
            time.sleep(max(0.0, min(every, deadline - time.time())))
        try:
            launch.wait(120)  # its own deadline stops it; collectors, servers and helpers first
        except subprocess.TimeoutExpired:
            print("[soak] launch.py still running 120 s after its deadline; stopping it", file=sys.stderr)
    finally:
        stop_tree(launch, watch)
    if launch.returncode != 0:
        sys.exit(f"error: launch.py exited {launch.returncode}; the end of {hub_log}:\n"
                 + hub_log.read_text(errors="replace")[-3000:])
    watch.read_hub(hub_tail.lines(), time.time())
    watch.read_helpers(helpers_tail.lines(), time.time(), full_steps)
    summary = json.loads(hub_out.read_text().strip().splitlines()[-1])
    print(report(watch, summary, run_dir, t_start, deadline, minutes, capacity, args, every), flush=True)


def plot(watch: Watch, names: dict[int, str], t_start: float, deadline: float, full_at: float | None,
         path: str) -> Path:
    """RSS of every named process and the hub's segments/s over the run's minutes, into the PNG ``path``."""
    from bench.plots import Panel, rates, write_png

    def minutes(t: float) -> float:
        return (t - t_start) / 60

    rss = {nm: [(minutes(t), r / 2**20) for t, r in watch.rss[pid] if t <= deadline] for pid, nm in names.items()}
    accepted = [(minutes(t), float(n)) for t, n in watch.reports if t <= deadline]
    marks = [(minutes(full_at), "replay full")] if full_at is not None else []
    return write_png(path, f"soak: {minutes(deadline):.0f} min", [
        Panel("RSS (MB)", rss, marks=marks),
        Panel("segments accepted / min", {"hub": rates(accepted)}, marks=marks)])  # minutes on x: per minute


def report(watch: Watch, summary: dict, run_dir: Path, t_start: float, deadline: float, minutes: float,
           capacity: int, args: argparse.Namespace, every: float) -> str:
    """Print the table; return the JSON line (also written to ``--out``)."""
    names = process_names(watch)
    full = watch.replay_full_at is not None
    if not full:
        print(f"[soak] the replay never filled ({watch.replay_steps}/{capacity} steps): growth is measured from "
              "half time instead", file=sys.stderr)
    start = watch.replay_full_at if full else (t_start + deadline) / 2
    growth: dict[str, float] = {}
    peak_growth: dict[str, float] = {}
    rss_mb: dict[str, dict[str, float]] = {}
    late = []
    print(f"{'process':>22} {'pid':>8} {'MB at fill':>12} {'MB at end':>10} {'MB peak':>8} {'growth %':>9} "
          f"{'peak growth %':>14}")
    for pid, nm in sorted(names.items(), key=lambda kv: kv[1]):
        samples = [(t, r) for t, r in watch.rss[pid] if t <= deadline]
        if not samples:
            continue
        ends = rss_ends(samples, start, deadline)
        peak = round(max(r for _, r in samples) / 2**20, 1)
        if ends is None:
            late.append(nm)
            rss_mb[nm] = {"fill": None, "end": None, "peak": peak}
            print(f"{nm:>22} {pid:>8} {'-':>12} {'-':>10} {peak:>8} {'-':>9}")
            continue
        growth[nm] = growth_pct(*ends)
        if (peaks := peak_ends(samples, start, deadline)) is not None:
            peak_growth[nm] = growth_pct(*peaks)
        rss_mb[nm] = {"fill": round(ends[0] / 2**20, 1), "end": round(ends[1] / 2**20, 1), "peak": peak}
        print(f"{nm:>22} {pid:>8} {rss_mb[nm]['fill']:>12} {rss_mb[nm]['end']:>10} {peak:>8} {growth[nm]:>9.2f} "
              f"{peak_growth.get(nm, float('nan')):>14.2f}")
    worst = max(growth.values()) if growth else None
    worst_peak = max(peak_growth.values()) if peak_growth else None
    reports = [(t, n) for t, n in watch.reports if t <= deadline]
    first_seg = next((i for i, (_, n) in enumerate(reports) if n > 0), None)
    stream = reports[first_seg:] if first_seg is not None else []
    rate_first, rate_last = fifth_rates(stream)
    acked, lost = lost_segments(summary, sorted(run_dir.glob("collector-*.log")))
    result = {
        "minutes": round(minutes, 3), "segments": summary["segments_accepted"], "lost": lost, "acked": acked,
        "segments_rejected": summary["segments_rejected"], "rejected_by_reason": summary["rejected_by_reason"],
        "rss_growth_pct": {**growth, "max": worst},
        "rss_peak_growth_pct": {**peak_growth, "max": worst_peak},
        "rss_mb": rss_mb, "rss_unmeasured": late,
        "rss_series_mb": {nm: thin([(round((t - t_start) / 60, 2), round(r / 2**20, 1)) for t, r in watch.rss[pid]
                                    if t <= deadline], 240) for pid, nm in names.items()},
        "rate_first": rate_first, "rate_last": rate_last,
        "rate_window_s": round(stream[-1][0] - stream[0][0], 1) if len(stream) > 1 else None,
        "replay_capacity_steps": capacity, "replay_full": full,
        "replay_full_s": round(watch.replay_full_at - t_start, 1) if full else None,
        "measured_s": round(deadline - start, 1), "samples_every_s": every,
        "goal_rss_growth_pct": GOAL_RSS_GROWTH_PCT,
        # the goal is for the 30-minute record; a short run's figure includes its processes warming up
        # judged by the peaks: the ends' medians read a random phase of a process whose memory swings with its
        # work (the PPO worker: 680-900 MB with its episodes, 2026-11-26), while rising peaks are what a leak shows
        "goal_met": (worst_peak is not None and worst_peak <= GOAL_RSS_GROWTH_PCT and lost == 0) if minutes >= 30 else None,
        "env_steps": summary["env_steps"], "wm_updates": summary["wm_updates"],
        "trainer_dropped": summary["trainer_dropped"], "collectors_lost": summary["collectors_lost"],
        "ppo_episodes_ok": summary["ppo_episodes_ok"], "collector_exit_codes": summary["collector_exit_codes"],
        "config": args.config or "debug", "quick": bool(args.quick), "smoke": SMOKE,
        "python": platform.python_version(), "cpus": os.cpu_count(),
    }
    rows = [("minutes", result["minutes"]),
            ("replay full at s", f"{result['replay_full_s']} ({capacity} steps)"),
            ("RSS measured over s", result["measured_s"]), ("max RSS growth %", worst),
            ("max RSS peak growth %", result["rss_peak_growth_pct"]["max"]),
            ("segments accepted", result["segments"]), ("acknowledged", acked), ("lost", lost),
            ("segments/s first fifth", rate_first), ("segments/s last fifth", rate_last),
            ("env steps", result["env_steps"]), ("wm updates", result["wm_updates"]),
            ("PPO episodes ok", result["ppo_episodes_ok"])]
    print()
    for label, value in rows:
        print(f"{label:>26} {value}")
    if args.plot:
        print(f"[soak] curves: {plot(watch, names, t_start, deadline, start if full else None, args.plot)}",
              file=sys.stderr)
    line = json.dumps(result)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(line + "\n")
    return line


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("[soak] interrupted; every process of the run is stopped", file=sys.stderr)
        sys.exit(130)
