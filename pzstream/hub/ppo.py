"""PPO episodes on the hub: prompt samples from accepted segments, a full queue fires an episode
on the PPO worker, and the policy it returns becomes the next LLM version.

The hub never waits for an episode: samples are queued whatever the worker does, one episode is
in flight at a time, and a failed, hung or crashed one is counted and the next threshold fires
a new attempt.
"""
from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import anyio
import msgpack

from pzstream.config import Config
from pzstream.hub.parts import AcceptedSegment
from pzstream.hub.peers import printable
from pzstream.hub.prompt_queue import PromptQueue
from pzstream.hub.publisher import PublishedVersions
from pzstream.stream import internal, wire
from pzstream.stream.internal import (
    EpisodeRequest,
    EpisodeResult,
    WorkerFatal,
    WorkerReady,
)
from pzstream.stream.wire import WireLimits

log = logging.getLogger("pzstream.learner")


class StoredSteps:
    """A segment's lazy prompt samples (``SegmentSteps``) kept as the segment's wire bytes while
    they wait in the queue: one bytes object is far cheaper to hold and to free than the ~1,000
    objects of a decoded segment, and an episode takes only a few. Decoded again on first read."""

    __slots__ = ("_data", "_limits", "_n", "_steps", "nbytes")

    def __init__(self, steps, data, limits: WireLimits):
        self._steps, self._data, self._limits, self._n = replace(steps, seg=None), data, limits, len(steps)
        self.nbytes = len(data)  # what it holds while queued (ppo.queue_capacity_bytes)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, t: int):
        if self._steps.seg is None:  # the hub validated these bytes: decoding them again cannot fail
            self._steps = replace(self._steps, seg=wire.decode(self._data, self._limits))
        return self._steps[t]

    def to_record(self) -> dict:
        """For a checkpoint: the segment's bytes and the episode context its samples are built with."""
        s = self._steps
        return {"data": bytes(memoryview(self._data)), "n": self._n, "seed": s.seed, "history": [list(h) for h in s.history],
                "prefix": None if s.prefix is None else list(s.prefix), "history_len": s.history_len,
                "max_prefix": s.max_prefix}

    @classmethod
    def from_record(cls, rec: dict, limits: WireLimits) -> "StoredSteps":
        from pzstream.orz.samples import SegmentSteps

        steps = SegmentSteps(seg=None, seed=rec["seed"], history=tuple(tuple(h) for h in rec["history"]),
                             prefix=None if rec["prefix"] is None else tuple(rec["prefix"]),
                             history_len=rec["history_len"], max_prefix=rec["max_prefix"])
        out = cls.__new__(cls)
        out._steps, out._data, out._limits, out._n = steps, rec["data"], limits, int(rec["n"])
        return out


@dataclass
class PPOState:
    """Episode counters and the one episode in flight."""

    fired: int = 0
    ok: int = 0
    failed: int = 0
    unsearched_steps: int = 0  # steps of random play: no search decision to learn, not queued
    running: int | None = None  # episode number in flight
    started: float = 0.0
    runtime: str | None = None
    ready: bool = False
    last: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class PPOEpisodes:
    """Part (segments -> prompt queue) and helper client (the PPO worker)."""

    def __init__(self, cfg: Config, versions: PublishedVersions, run_dir: Path, limits: WireLimits):
        from pzstream.orz.samples import EpisodeTracker

        pc = cfg.ppo
        self.cfg, self.versions, self.run_dir, self.limits = cfg, versions, run_dir, limits
        self.queue = PromptQueue(pc.queue_capacity, pc.fire_threshold, capacity_bytes=pc.queue_capacity_bytes)
        self.state = PPOState()
        self.helper = None  # the supervisor's Helper; without one, samples queue and nothing fires
        self._tracker = EpisodeTracker(cfg.llm.history_len)
        self._rng = random.Random(pc.seed)
        self._writer = None
        self.gate: Callable[[], bool] = lambda: True   # may an episode fire now (the schedule's say)
        self.on_over: Callable[[], None] = lambda: None  # an episode ended, ok or not (the schedule's inbox)

    # -- the part ----------------------------------------------------------------------

    def on_segment(self, accepted: AcceptedSegment) -> None:
        """Every searched step becomes a prompt sample; a full queue fires an episode (never waits)."""
        from pzstream.orz.samples import searched

        seg = accepted.segment
        steps = self._tracker.advance(seg, seed_base=accepted.seed)  # samples are built when an episode takes them
        if not searched(seg):
            self.state.unsearched_steps += len(steps)
            return
        self.queue.extend(StoredSteps(steps, accepted.data, self.limits))
        self.maybe_fire()

    def maybe_fire(self) -> bool:
        """Fire an episode if one can fire now; whether it did."""
        st = self.state
        if (self.helper is None or not st.ready or st.running is not None or not self.queue.ready()
                or not self.gate() or not self.due()):
            return False
        samples = self.queue.take(self.cfg.ppo.rollout_batch_size, self._rng)
        k = st.fired + 1
        if not self.helper.send(EpisodeRequest(episode=k, samples=[s.to_dict() for s in samples])):
            log.warning("PPO worker is not taking requests; episode %d not fired", k)
            return False
        st.fired, st.running, st.started = k, k, time.monotonic()
        games = Counter(s.game for s in samples)
        log.info("PPO episode %d fired: %d prompts (%s), queue %s", k, len(samples),
                 ", ".join(f"{printable(g)} {100 * n / len(samples):.0f}%" for g, n in sorted(games.items())), self.queue.summary())
        return True

    def due(self) -> bool:
        """Whether ``ppo.min_interval_s`` has passed since the last episode started (the watch asks again every second)."""
        return self.state.fired == 0 or time.monotonic() - self.state.started >= self.cfg.ppo.min_interval_s

    # -- the helper client ---------------------------------------------------------------

    def busy(self) -> str | None:
        """The episode the worker is in (it reads no message until the episode ends), or None."""
        st = self.state
        return None if st.running is None else f"PPO episode {st.running} ({time.monotonic() - st.started:.0f}s in)"

    def on_start(self, pid: int) -> None:
        self.state.ready = False
        log.info("PPO worker pid %d: runtime %s", pid, self.cfg.ppo.runtime)

    def on_exit(self, why: str) -> None:
        self.state.ready = False
        if self.state.running is not None:
            self.failed(why)

    async def on_message(self, msg: internal.Internal) -> None:
        st = self.state
        if isinstance(msg, WorkerReady):
            st.ready, st.runtime = True, msg.runtime
            log.info("PPO runtime %s: %s", msg.runtime, msg.describe)
        elif isinstance(msg, WorkerFatal):
            self.failed(f"runtime did not start: {msg.error}")
            if self.helper is not None:
                self.helper.restart("its runtime did not start", delay_s=5.0)  # a broken setup: retry, slowly
        elif isinstance(msg, EpisodeResult):
            await self._result(msg)
        self.maybe_fire()

    def failed(self, why: str) -> None:
        st = self.state
        st.failed += 1
        st.errors = (st.errors + [why])[-5:]
        log.error("PPO episode %s failed (%d failed so far): %s; ingestion and world-model training go on",
                  st.running if st.running is not None else "-", st.failed, why.splitlines()[0] if why else "")
        st.running = None
        self.on_over()

    async def _result(self, msg: EpisodeResult) -> None:
        st = self.state
        if not msg.ok:
            self.failed(msg.error or "unknown error")
            return
        if not msg.payload:
            self.failed("result without weights")
            return
        st.ok += 1
        st.running = None
        m = {k: float(v) for k, v in msg.metrics.items()}
        st.last = m
        notice = await self.versions.publish("llm", msg.payload)
        self.on_over()
        log.info("PPO episode %d done: reward %.3f (std %.3f, >0 %.0f%%), response %.1f tokens, policy loss %.4f, "
                 "value loss %.4f, kl %.4f; time generate %.2fs reward %.2fs forward %.2fs train %.2fs sync %.2fs; "
                 "games %s; published llm v%d", msg.episode, m["reward_mean"], m["reward_std"],
                 100 * m["reward_frac_positive"], m["response_length"], m.get("policy_loss", 0.0), m.get("value_loss", 0.0),
                 m.get("kl", 0.0), m["time_generate"], m["time_reward"], m["time_forward"], m["time_train"], m["time_sync"],
                 msg.games, notice.version)
        if self._writer is not None:
            for k, v in m.items():
                self._writer.add_scalar(f"orz/{k}", v, st.ok)
            if msg.rewards:
                import numpy as np

                self._writer.add_histogram("orz/rewards", np.asarray(msg.rewards, dtype=np.float32), st.ok)
            self._writer.flush()

    # -- the watch -----------------------------------------------------------------------

    async def run(self) -> None:
        """Fire when the worker becomes free; restart a worker whose episode runs past its timeout."""
        if self.cfg.trainer.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tb" / "orz"))
        try:
            while True:
                await anyio.sleep(1.0)
                st = self.state
                timeout = self.cfg.ppo.episode_timeout_s
                if self.helper is not None and st.running is not None and time.monotonic() - st.started > timeout:
                    log.error("PPO episode %d ran past ppo.episode_timeout_s=%.0f; restarting the worker", st.running, timeout)
                    self.failed("timeout")
                    self.helper.restart("episode timeout")
                else:
                    self.maybe_fire()
        finally:
            if self._writer is not None:
                self._writer.close()

    # -- checkpoints ---------------------------------------------------------------------

    def checkpoint_state(self) -> bytes:
        """The episode counters, the prompt queue (as segment bytes) and the sampling RNG."""
        from pzstream.stream.checkpoint import rng_state

        st = self.state
        chunks, counters = self.queue.snapshot()
        return msgpack.packb({
            "state": {"fired": st.fired, "ok": st.ok, "failed": st.failed, "unsearched_steps": st.unsearched_steps,
                      "running": st.running, "last": st.last, "errors": st.errors},
            "queue": [[items.to_record(), first] for items, first in chunks], "queue_counters": counters,
            "rng": rng_state(self._rng)})

    def restore_state(self, data: bytes) -> None:
        """Put back ``checkpoint_state``; an episode that was in flight then is counted failed (it is lost)."""
        from pzstream.stream.checkpoint import load_rng

        d = msgpack.unpackb(data)
        s, st = d["state"], self.state
        st.fired, st.ok, st.failed = int(s["fired"]), int(s["ok"]), int(s["failed"])
        st.unsearched_steps, st.last, st.errors = int(s["unsearched_steps"]), dict(s["last"]), list(s["errors"])
        if s["running"] is not None:
            st.failed += 1
            st.errors = (st.errors + [f"episode {s['running']} was in flight when the hub stopped"])[-5:]
        self.queue.restore([(StoredSteps.from_record(rec, self.limits), first) for rec, first in d["queue"]],
                           d["queue_counters"])
        load_rng(self._rng, d["rng"])

    def summary(self) -> dict[str, object]:
        st = self.state
        return {"runtime": st.runtime, "worker_restarts": self.helper.restarts if self.helper is not None else 0,
                "episode_in_flight": st.running,  # at the stop: abandoned (counted failed on --resume)
                "unsearched_steps": st.unsearched_steps, "last": st.last, "errors": st.errors,
                "queue": self.queue.summary()}
