"""The hub's periodic report as a structured record on the live log stream.

Every ``hub.report_every_s`` the hub publishes one :class:`ReportRecord` as a log record of its
own role (``learner``, which no peer may claim: the log intake drops such records), logger
``REPORT_LOGGER``, level DEBUG, with the record as JSON in its message. A plain monitor (``--level
INFO``) does not print it; ``launch.py --role monitor --dashboard`` reads it
(``pzstream.roles.dashboard``). The typed decode (msgspec) rejects anything that is not a whole
record, so a dashboard shows only figures the hub sent.
"""
from __future__ import annotations

import logging
import math
import os
import subprocess
import time
from dataclasses import dataclass

import msgspec
import zmq

from pzstream.stream import wire
from pzstream.stream.transport import HUB_LOG_ROLE, HUB_OWN_LOGS
from pzstream.stream.wire import Log

REPORT_LOGGER = "pzstream.report"
MAX_PEER_ROWS = 64  # health rows per report (live peers first): a report stays a few kB with any number of peers


@dataclass(frozen=True)
class PeerHealth:
    """One collector (or reader: a prior or search server following weights) as the hub last saw it.

    last_heard_s: seconds since the hub last heard from it (None: not known);
    blocked: it was waiting for credit at its last heartbeat; blocked_s: its total seconds waiting;
    wm_version / llm_version: the versions it played with at its last heartbeat;
    return_mean: its own mean return of its last 20 episodes; rss_bytes: its resident memory.
    """

    peer_id: str
    role: str  # "collector" or "reader"
    game: str
    policy: str
    accepted: int
    rejected: int
    steps: int
    lost: bool
    closed: bool
    last_heard_s: float | None = None
    blocked: bool = False
    blocked_s: float = 0.0
    wm_version: int | None = None
    llm_version: int | None = None
    return_mean: float | None = None
    rss_bytes: int | None = None


@dataclass(frozen=True)
class GameReturns:
    """Finished episodes of one game: episodes counted, and the mean return of the last 10 of each collector."""

    episodes: int
    recent_mean: float
    collectors: int


@dataclass(frozen=True)
class PPOFigures:
    """PPO episodes on the LLM: fired, finished ok, failed; the last good episode's mean reward."""

    fired: int
    ok: int
    failed: int
    running: bool
    reward_mean: float | None
    queue_size: int


@dataclass(frozen=True)
class SearchLoad:
    """The search servers over the last report interval (``pzstream.hub.search_load``): roots answered
    a second, the mean batch, milliseconds a batch (both stages), the LLM prior's share of that time
    and the mean GPU utilisation the servers last sampled (percent). None: not known this interval."""

    servers: int
    roots_per_s: float
    mean_batch: float | None
    ms_per_batch: float | None
    prior_share: float | None
    gpu_util: float | None


def describe_search(load: SearchLoad) -> str:
    """``search 59.3 roots/s, batch 5.9, 489 ms, prior 71%, gpu 43%`` (parts not known are left out)."""
    parts = [f"search {load.roots_per_s:.1f} roots/s" + (f" ({load.servers} servers)" if load.servers > 1 else "")]
    if load.mean_batch is not None:
        parts.append(f"batch {load.mean_batch:.1f}")
    if load.ms_per_batch is not None:
        parts.append(f"{load.ms_per_batch:.0f} ms")
    if load.prior_share is not None:
        parts.append(f"prior {100 * load.prior_share:.0f}%")
    if load.gpu_util is not None:
        parts.append(f"gpu {load.gpu_util:.0f}%")
    return ", ".join(parts)


@dataclass(frozen=True)
class ReportRecord:
    """The hub's figures at one report. Rates (per second) are over the last report interval;
    lag_*: n, mean, p50, p90, max of (published version - version played with); losses: the
    trainer's last loss parts (``total``, ``reward``, ``value``, ``policy``, ``latent``, ...);
    rss_bytes: resident memory of the hub and its helper processes by name."""

    elapsed_s: float
    interval_s: float
    segments_accepted: int
    segments_per_s: float
    env_steps: int
    steps_per_s: float
    wm_updates: int
    wm_updates_per_s: float
    wm_version: int
    llm_version: int
    min_collector_wm_version: int | None
    min_collector_llm_version: int | None
    lag_wm: dict[str, float]
    lag_llm: dict[str, float]
    losses: dict[str, float]
    returns: dict[str, GameReturns]  # by game
    ppo: PPOFigures | None
    rejected_by_reason: dict[str, int]
    connections_rejected: dict[str, int]
    caps: dict[str, int]
    peers: tuple[PeerHealth, ...]
    peers_total: int  # peers the hub knows; rows past MAX_PEER_ROWS are left out
    collectors_live: int
    collectors_lost: int
    trainer_dropped: int
    rss_bytes: dict[str, int]
    search: SearchLoad | None = None  # None: no search server reports to this hub


def finite(x: float | None) -> float | None:
    """``x`` when it is a finite number, else None (JSON has no NaN)."""
    return float(x) if x is not None and math.isfinite(x) else None


def encode_report(record: ReportRecord) -> str:
    return msgspec.json.encode(record).decode()


def decode_report(rec: Log) -> ReportRecord | None:
    """The report a log record carries, or None when it is no hub report (another record, a peer's
    record, or a message that does not decode as a whole record)."""
    if rec.role != HUB_LOG_ROLE or rec.logger != REPORT_LOGGER:
        return None
    try:
        return msgspec.json.decode(rec.message, type=ReportRecord)
    except msgspec.DecodeError:  # ValidationError is a DecodeError
        return None


class ReportPublisher:
    """Publishes reports into the hub's own log records (``HUB_OWN_LOGS``, in this process's
    ``zmq.Context.instance()``), whatever logging the process set up. Never blocks: at the
    high-water mark a report is dropped, as a log record would be."""

    def __init__(self, sender: str = "hub") -> None:
        self.sender = sender
        self._sock = zmq.Context.instance().socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 16)
        self._sock.connect(HUB_OWN_LOGS)

    def publish(self, record: ReportRecord) -> None:
        msg = Log(role=HUB_LOG_ROLE, sender=self.sender, level=logging.DEBUG, time=time.time(),
                  logger=REPORT_LOGGER, message=encode_report(record))
        try:
            self._sock.send_multipart([f"{HUB_LOG_ROLE}/{self.sender}".encode(), wire.encode(msg)], flags=zmq.NOBLOCK)
        except zmq.Again:
            pass

    def close(self) -> None:
        self._sock.close(0)


def gpu_utilization(device: str) -> float | None:
    """The percent of the last sample period that ``device``'s GPU was busy (NVML, through torch or
    ``nvidia-smi``), or None: a CPU device, or no way to ask. ``cuda`` is ``cuda:0``; an index is a
    visible device's (mapped through CUDA_VISIBLE_DEVICES for nvidia-smi, which sees them all)."""
    if not device.startswith("cuda"):
        return None
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    try:
        import torch

        return float(torch.cuda.utilization(index))
    except Exception:  # no CUDA build, no pynvml: ask nvidia-smi
        pass
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    target = visible[index] if index < len(visible) else str(index)
    try:
        out = subprocess.run(["nvidia-smi", f"--id={target}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5)
        value = float(out.stdout.strip().splitlines()[0])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None
    return value if out.returncode == 0 and 0 <= value <= 100 else None


def process_rss_bytes(pid: int | None = None) -> int | None:
    """Resident memory of process ``pid`` (default: this one) from /proc, or None where it cannot be read."""
    try:
        with open(f"/proc/{pid or os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
