"""The learner hub: wires the ingest core, its parts and the helper processes, and serves.

    collectors -> ROUTER -> Ingest -> parts: SegmentJournal (-> disk, before the acknowledgement),
                                             TrainerLink (-> trainer process),
                                             PPOEpisodes (-> PPO worker process),
                                             ReturnTracker, any extra part
    trainer / PPO worker -> Supervisor -> PublishedVersions -> weights notices (PUB) -> collectors

This module only builds and runs; each hop lives in the module named for it. Checkpoints and
``resume`` (``launch.py --resume RUN_DIR``) live in ``pzstream.hub.hub_checkpoint``.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import zmq
import zmq.asyncio

from pzstream.config import Config
from pzstream.hub.hub_checkpoint import HubCheckpointer
from pzstream.hub.ingest import Ingest
from pzstream.hub.parts import SegmentPart
from pzstream.hub.ppo import PPOEpisodes
from pzstream.hub.publisher import PublishedVersions
from pzstream.hub.gpu_share import GpuSharePart
from pzstream.hub.schedule import SchedulePart
from pzstream.hub.report import HubExtras, HubReport, ReturnTracker, ingest_summary
from pzstream.stream.report_record import PPOFigures
from pzstream.hub.status import HubStatus, lag_summary
from pzstream.hub.supervisor import HelperSpec, StartFn, Supervisor
from pzstream.hub.trainer_link import TrainerLink
from pzstream.stream.transport import (
    CurveKeys,
    HubRouter,
    LogRelay,
    NoticePublisher,
    check_bind_security,
    endpoints_for,
)
from pzstream.stream.weights import WeightsStore
from pzstream.stream.wire import WireLimits

log = logging.getLogger("pzstream.learner")


class LearnerHub:
    """Serve collectors until ``stop`` is set; :meth:`status` and :meth:`summary` say what happened.

    helpers: name -> start function of the helper processes to run ("trainer", "ppo"); None
    starts those the config enables. A part whose helper is not started still sees every
    segment (the trainer link forwards nothing, the PPO queue fills and never fires).
    extra_parts: more subscribers to accepted segments (tests record them this way).
    resume: continue the run in ``run_dir`` from its newest checkpoint (CheckpointError if it has
    none); otherwise a run that finds checkpoints there moves them to ``checkpoints.prev``.
    """

    def __init__(self, cfg: Config, curve: CurveKeys | None = None, run_dir: Path | None = None,
                 helpers: dict[str, StartFn] | None = None, extra_parts: Sequence[SegmentPart] = (),
                 resume: bool = False):
        self.cfg = cfg
        self.run_dir = run_dir or Path(cfg.run.out_dir) / cfg.run.name
        self.curve = curve
        self.endpoints = endpoints_for(cfg.hub.address)
        self.hub_id = f"{socket.gethostname()}-{os.getpid()}"
        self.weights = WeightsStore(keep=3, directory=self.run_dir / "weights")
        self.versions = PublishedVersions(self.weights)
        self.trainer = TrainerLink(self.versions, cfg.trainer.pipe_bytes)
        w = cfg.wire
        limits = WireLimits(max_message_bytes=w.max_message_bytes, max_array_elements=w.max_array_elements,
                            max_steps=w.max_steps, max_candidates_per_step=w.max_candidates_per_step)
        self.ppo = PPOEpisodes(cfg, self.versions, self.run_dir, limits) if cfg.ppo.enabled else None
        self.returns = ReturnTracker(max_collectors=cfg.hub.max_peers)
        parts: list[SegmentPart] = [self.trainer, self.returns, *([self.ppo] if self.ppo else []), *extra_parts]
        self.ingest = Ingest(cfg.hub, limits, self.hub_id, self.versions, self.weights, cfg.trainer.max_wm_lag, parts)
        self.checkpoints: HubCheckpointer | None = None
        if cfg.checkpoint.enabled:
            self.checkpoints = HubCheckpointer(cfg, self.run_dir, self)
            self.ingest.parts.insert(0, self.checkpoints.journal)  # on disk before any part acts on it
            self.trainer.hold_until_ready, self.trainer.on_ready = True, self.checkpoints.attach_trainer
            if resume:  # the journal's segments go to the parts that keep state here (the trainer reads the journal)
                self.checkpoints.resume([self.returns, *([self.ppo] if self.ppo else []), *extra_parts], limits)
        elif resume:
            raise ValueError("resume needs checkpoint.enabled=true")
        self.schedule = SchedulePart(cfg.schedule, self.ingest.announce_window, self.trainer.train,
                                     self.ppo.maybe_fire if self.ppo is not None else (lambda: False))
        if self.schedule.active:  # alternating: the schedule gates credit, training and PPO
            self.ingest.parts.append(self.schedule)  # last: the segment that ends a phase reaches the trainer first
            self.ingest.window = lambda: self.schedule.window(cfg.hub.credit_window)
            self.trainer.on_budget_spent = self.schedule.on_trained
            self.trainer.on_helper_start = self.schedule.on_trainer_start
            if self.ppo is not None:
                self.ppo.gate, self.ppo.on_over = self.schedule.state.ppo_allowed, self.schedule.on_ppo_over
        sc = cfg.schedule
        self.gpu_share = GpuSharePart(sc.pace_every_s, sc.search_slowdown, sc.min_updates_per_s,
                                      lambda: [r.stats for r in self.status().readers.values()],
                                      lambda: self.trainer.updates, self.trainer.pace) \
            if sc.gpu_share == "auto" and cfg.trainer.enabled else None
        if self.gpu_share is not None:
            self.trainer.on_helper_start = self.gpu_share.on_trainer_start
        self.helpers = helpers if helpers is not None else self._default_helpers()
        self._t0 = time.monotonic()
        self._t_end: float | None = None
        self._notices: NoticePublisher | None = None
        self.ready = anyio.Event()

    def _default_helpers(self) -> dict[str, StartFn]:
        from pzstream.stream.logstream import local_address

        logs_in = None if self.curve else local_address(self.endpoints.logs_in)
        out: dict[str, StartFn] = {}
        if self.cfg.trainer.enabled:
            from pzstream.roles.trainer import start_trainer

            out["trainer"] = lambda inbox, outbox: start_trainer(self.cfg, inbox, outbox, self.run_dir, logs_in)
        if self.ppo is not None:
            from pzstream.roles.ppo_worker import start_worker

            out["ppo"] = lambda inbox, outbox: start_worker(self.cfg, inbox, outbox, self.run_dir, logs_in)
        return out

    def _supervise(self, ctx: zmq.asyncio.Context) -> Supervisor:
        sup = Supervisor(ctx)
        # a helper stopping writes its last checkpoint first: give it the time that takes
        grace = self.cfg.checkpoint.stop_grace_s if self.checkpoints is not None else 0.0
        if "trainer" in self.helpers:
            self.trainer.helper = sup.add(HelperSpec("trainer", "world-model trainer", self.helpers["trainer"], hwm=2000,
                                                     stop_grace_s=max(5.0, grace)), self.trainer)
        if "ppo" in self.helpers and self.ppo is not None:
            self.ppo.helper = sup.add(HelperSpec("ppo", "PPO worker", self.helpers["ppo"], hwm=4,
                                                 stop_grace_s=max(20.0, grace)), self.ppo)
        return sup

    async def serve(self, stop: anyio.Event) -> dict[str, object]:
        check_bind_security(self.cfg.hub.address, self.curve, self.cfg.security.allow_insecure)
        ctx = zmq.asyncio.Context()
        sync_ctx = zmq.Context.shadow(ctx.underlying)
        auth = self.curve.start_authenticator(sync_ctx) if self.curve else None
        hc = self.cfg.hub
        router = HubRouter(ctx, self.endpoints.segments, self.curve, self.cfg.wire.max_message_bytes,
                           hc.recv_queue_bytes, hc.max_pending_fetches, self.ingest.counters.caps)
        self.versions.notices = NoticePublisher(ctx, self.endpoints.weights, self.curve)
        relay = LogRelay(sync_ctx, self.endpoints.logs_in, self.endpoints.logs_out, self.curve, hc.max_log_bytes,
                         hc.log_queue_bytes, self.ingest.counters.caps)
        if self.checkpoints is not None:
            self.checkpoints.start()
        supervisor = self._supervise(ctx)
        tb = self.run_dir / "tb" / "hub" if self.cfg.trainer.tensorboard else None
        report = HubReport(self.cfg.hub.report_every_s, self.status, self.returns, self.report_extras, tb)
        self._t0 = time.monotonic()
        log.info("hub %s listening: segments %s, weights %s, logs in %s, monitor %s%s", self.hub_id,
                 self.endpoints.segments, self.endpoints.weights, self.endpoints.logs_in, self.endpoints.logs_out,
                 " (CURVE)" if self.curve else "")
        self.ready.set()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.ingest.serve, router)
                tg.start_soon(self.ingest.housekeeping, router)
                tg.start_soon(self.ingest.watch_handshakes, router)
                tg.start_soon(self.versions.run, self.cfg.hub.heartbeat_s)
                tg.start_soon(report.run)
                tg.start_soon(supervisor.run)
                if self.ppo is not None:
                    tg.start_soon(self.ppo.run)
                if self.schedule.active:
                    tg.start_soon(self.schedule.run)
                if self.gpu_share is not None:
                    tg.start_soon(self.gpu_share.run)
                if self.checkpoints is not None:
                    tg.start_soon(self.checkpoints.run)
                await stop.wait()
                tg.cancel_scope.cancel()
        finally:
            self._t_end = time.monotonic()
            if self.checkpoints is not None:
                try:  # a last checkpoint (the helpers save theirs before they stop), then the journal closes
                    self.checkpoints.checkpoint()
                except Exception as e:  # noqa: BLE001 - a failed save must not hide why the hub stopped
                    log.exception("the final checkpoint failed: %s: %s", type(e).__name__, e)
                self.checkpoints.close()
            supervisor.close()  # the parts keep their helpers: the summary reads their restart counts
            router.close()
            self.versions.notices.close()
            self.versions.notices = None
            relay.close()
            if auth is not None:
                auth.stop()
            ctx.destroy(linger=0)
        return self.summary()

    async def publish(self, model: str, data: bytes) -> int:
        """Publish ``data`` as the next version of ``model`` (as the trainer and PPO do); returns the version."""
        return (await self.versions.publish(model, data)).version

    # ------------------------------------------------------------------ results

    def status(self) -> HubStatus:
        c = self.ingest.counters
        return HubStatus(
            segments_accepted=c.accepted, env_steps=c.accepted_steps, accepted_bytes=c.accepted_bytes,
            rejected_by_reason=dict(c.rejected), connections_rejected=dict(c.connections_rejected),
            collectors=self.ingest.collectors(), readers=self.ingest.collectors(readers=True),
            collectors_lost=c.collectors_lost,
            per_game={g: dict(v) for g, v in sorted(c.per_game.items())},
            lag_wm=lag_summary(c.lag_wm), lag_llm=lag_summary(c.lag_llm),
            wm_version=self.versions.wm, llm_version=self.versions.llm,
            elapsed_s=(self._t_end or time.monotonic()) - self._t0, caps=dict(c.caps + self.returns.caps))

    def report_extras(self) -> HubExtras:
        """What the periodic report reads beside :meth:`status`."""
        now, ppo = time.monotonic(), self.ppo
        heard: dict[str, float] = {}
        for p in self.ingest.peers.values():  # an id may have an old connection beside its new one
            heard[p.collector_id] = min(heard.get(p.collector_id, float("inf")), now - p.last_heard)
        figures = None if ppo is None else PPOFigures(
            fired=ppo.state.fired, ok=ppo.state.ok, failed=ppo.state.failed, running=ppo.state.running is not None,
            reward_mean=ppo.state.last.get("reward_mean"), queue_size=len(ppo.queue))
        helpers = {"trainer": self.trainer.helper, "ppo": ppo.helper if ppo else None}
        return HubExtras(wm_updates=self.trainer.updates, trainer_stats=dict(self.trainer.stats),
                         trainer_dropped=self.trainer.dropped, ppo=figures, last_heard_s=heard,
                         pids={name: h.pid for name, h in helpers.items() if h is not None},
                         publishes=dict(self.versions.publishes))

    def summary(self) -> dict[str, object]:
        """The JSON summary ``launch.py`` prints last."""
        ppo = self.ppo
        return {
            **ingest_summary(self.status()),
            "wm_updates": self.trainer.updates,
            "trainer": self.trainer.stats,
            "trainer_dropped": self.trainer.dropped, "trainer_dropped_for_bytes": self.trainer.dropped_for_bytes,
            "hub_stalls": {"count": self.ingest.loop_clock.stalls,  # times its own loop stood still (issue 14)
                           "longest_s": round(self.ingest.loop_clock.longest_stall_s, 2)},
            "trainer_failed_updates": self.trainer.failed_updates,
            "trainer_restarts": self.trainer.restarts,
            "episode_returns": self.returns.summary(),
            "schedule": self.schedule.summary(),
            "gpu_share": self.gpu_share.summary() if self.gpu_share is not None else None,
            "checkpoint": self.checkpoints.summary() if self.checkpoints is not None else {"enabled": False},
            "ppo_episodes_fired": ppo.state.fired if ppo else 0,
            "ppo_episodes_failed": ppo.state.failed if ppo else 0,
            "ppo_episodes_ok": ppo.state.ok if ppo else 0,
            "prompt_queue_size": len(ppo.queue) if ppo else 0,
            "ppo": ppo.summary() if ppo else {"runtime": None, "worker_restarts": 0, "episode_in_flight": None,
                                              "unsearched_steps": 0, "last": {},
                                              "errors": [], "queue": None},
        }
