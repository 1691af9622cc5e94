"""World-model training beside the hub, in a process of its own.

The hub forwards every accepted segment frame to the trainer (PUSH -> PULL, never blocking the
hub: a full pipe is counted as dropped); the trainer keeps its own bounded replay, trains
continuously, and sends new weights back (PUSH -> PULL, reliable) every ``publish_every``
updates together with its metrics, in the typed messages of ``pzstream.stream.internal``. The
hub numbers the versions: the trainer only says which model the bytes are. Separate processes
keep a slow trainer from stalling ingestion through the GIL, and the reverse.

Checkpoints (``checkpoint.enabled``): on the hub's ``SaveCheckpoint(step)`` the trainer writes
world model, target, optimiser, RNG states, counters and its replay (as wire frames) to
``runs/<name>/checkpoints/trainer/step-N``. A trainer that starts (first start, restart, or a
resumed run) loads the run's newest complete trainer checkpoint T and says it is ready; the hub
then checkpoints (step K) and from there on forwards segments. Before saving K the trainer adds
the segments of the hub's journals T..K-1 (``pzstream.stream.journal``): what the hub accepted
while no trainer was there to take it.

Failures: an update that raises is logged with its traceback, counted (``failed_updates``, sent
to the hub at once) and skipped; training goes on with the next batch. ``MAX_FAILED_IN_A_ROW``
failures one after another mean the process itself is broken (a wedged device, say): it exits
and the hub's supervisor starts a fresh trainer, which resumes from the run's checkpoints.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import random
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from pzstream.config import Config
from pzstream.roles.faults import CRASH_EXIT_CODE, UpdateFault, crashes_now, update_fails
from pzstream.roles.lifecycle import die_with_parent
from pzstream.stream import wire
from pzstream.model.replay import SegmentReplay
from pzstream.stream.internal import (
    BudgetSpent,
    HelperChannel,
    NewWeights,
    Pace,
    SaveCheckpoint,
    SegmentFrame,
    Taken,
    Stop,
    TrainBudget,
    TrainerStats,
    WorkerReady,
)

log = logging.getLogger("pzstream.trainer")

#: Updates failing one after another before the trainer gives up and exits (the hub restarts it).
MAX_FAILED_IN_A_ROW = 5


class LLMTraining:
    """PriorZero's built-in LLM training beside the world model: SFT on what the search chose, or RFT."""

    def __init__(self, cfg: Config):
        from pzstream.llm.factory import prompt_config
        from pzstream.llm.backend import TransformersBackend
        from pzstream.llm.train import LLMTrainer

        lc = cfg.llm
        self.prompt_cfg = prompt_config(lc)
        self.backend = TransformersBackend(model=lc.model, device=lc.device, temperature=lc.temperature,
                                           prompt_config=self.prompt_cfg)
        self.trainer = LLMTrainer(self.backend.model, self.backend.tokenizer, lr=lc.lr, mode=lc.train_mode,
                                  device=lc.device, max_prompt_tokens=lc.max_prompt_tokens,
                                  continuation=self.prompt_cfg.continuation_template)
        self.wm_cfg = cfg.world_model()
        self.batch_size = lc.batch_size
        self.updates = 0
        self.published = 0
        self.last: dict[str, float] = {}

    def step(self, segments: list, rng: random.Random) -> dict[str, float]:
        from pzstream.llm.train import samples_from_segments

        # only what a search chose teaches the LLM something; random play's picks do not
        searched = [s for s in segments[-400:] if not np.isnan(s.root_value).all()]
        if not searched:
            return {}
        picked = [searched[rng.randrange(len(searched))] for _ in range(4)]
        wm = self.wm_cfg  # the root values were searched at the world model's discount: z must use it too
        samples = samples_from_segments(picked, self.prompt_cfg, tokenizer=self.backend.tokenizer,
                                        discount=wm.discount, td_steps=wm.td_steps)
        if not samples:
            return {}
        batch = [samples[rng.randrange(len(samples))] for _ in range(self.batch_size)]
        self.last = self.trainer.step(batch)
        self.updates += 1
        return self.last


class TrainerState:
    """Everything a trainer checkpoint holds, and the counters the trainer reports.

    added: segments put into the replay (from checkpoints, journals and the channel);
    expired: ``added`` less those still in the replay (evicted by its capacity);
    failed_updates: updates of this process that raised and were skipped (not checkpointed: the
    hub sums them over the trainer processes of a run).
    """

    def __init__(self, trainer, replay: SegmentReplay, rng: random.Random, llm: LLMTraining | None):
        self.trainer, self.replay, self.rng, self.llm = trainer, replay, rng, llm
        self.updates = self.published = self.received = self.added = 0
        self.failed_updates = 0
        self.checkpoint_step: int | None = None

    @property
    def expired(self) -> int:
        return self.added - len(self.replay.segments)

    def add(self, seg: wire.Segment) -> None:
        self.replay.add(seg)
        self.added += 1

    def parts(self) -> tuple[dict[str, bytes], dict[str, int]]:
        import io
        import json

        import torch

        from pzstream.stream.checkpoint import pack_frames
        from pzstream.stream.checkpoint import rng_state

        t = self.trainer
        buf = io.BytesIO()
        torch.save({"model": t.model.state_dict(), "target": t.target.state_dict(), "optimizer": t.opt.state_dict(),
                    "steps": t.steps, "torch_rng": torch.get_rng_state()}, buf)
        counters = {"updates": self.updates, "published": self.published, "received": self.received,
                    "added": self.added, "replay_segments": len(self.replay.segments), "replay_steps": self.replay.steps,
                    "evicted_steps": self.replay.evicted_steps, "expired_segments": self.expired}
        parts = {"world_model.pt": buf.getvalue(),
                 "replay.frames": pack_frames(wire.encode(seg) for seg in self.replay.segments),
                 "state.json": json.dumps({"counters": counters, "rng": rng_state(self.rng)}).encode()}
        if self.llm is not None:
            buf = io.BytesIO()
            torch.save({"weights": self.llm.backend.state_dict_bytes(), "optimizer": self.llm.trainer.opt.state_dict(),
                        "updates": self.llm.updates, "published": self.llm.published}, buf)
            parts["llm.pt"] = buf.getvalue()
        return parts, counters

    def load(self, parts: dict[str, bytes], limits: wire.WireLimits | None = None) -> None:
        import io
        import json

        import torch

        from pzstream.stream.checkpoint import CheckpointError, unpack_frames
        from pzstream.stream.checkpoint import load_rng

        t = self.trainer
        saved = torch.load(io.BytesIO(parts["world_model.pt"]), weights_only=True)
        try:
            t.model.load_state_dict(saved["model"])
            t.target.load_state_dict(saved["target"])
        except RuntimeError as e:  # other shapes: the run was made with another model config
            raise CheckpointError(f"the saved world model does not fit this config's: {str(e)[:300]}") from None
        t.opt.load_state_dict(saved["optimizer"])
        t.steps = int(saved["steps"])
        torch.set_rng_state(saved["torch_rng"])
        state = json.loads(parts["state.json"])
        c = state["counters"]
        self.updates, self.published, self.received = int(c["updates"]), int(c["published"]), int(c["received"])
        self.added = int(c["added"]) - int(c["replay_segments"])  # those expired before; the replay adds the rest
        self.replay.evicted_steps = int(c["evicted_steps"])
        for frame in unpack_frames(parts["replay.frames"]):
            self.add(_segment(frame, limits))
        load_rng(self.rng, state["rng"])
        if self.llm is not None and "llm.pt" in parts:
            llm = torch.load(io.BytesIO(parts["llm.pt"]), weights_only=True)
            self.llm.backend.load_state_dict_bytes(llm["weights"])
            self.llm.trainer.opt.load_state_dict(llm["optimizer"])
            self.llm.updates, self.llm.published = int(llm["updates"]), int(llm["published"])


def _segment(frame: bytes, limits: wire.WireLimits | None) -> wire.Segment:
    msg = wire.decode(frame, limits) if limits is not None else wire.decode(frame)
    if not isinstance(msg, wire.Segment):
        raise ValueError(f"a replay frame holds a {type(msg).__name__}, not a segment")
    return msg


def resume_trainer(state: TrainerState, run_dir: Path) -> int:
    """Load the newest complete trainer checkpoint of the run, if any; the step the journals are
    to be read from (0 without one: every journal)."""
    from pzstream.stream.checkpoint import complete_steps, read_checkpoint
    from pzstream.stream.checkpoint import checkpoint_root

    directory = checkpoint_root(run_dir) / "trainer"
    if not complete_steps(directory):
        return 0
    ckpt = read_checkpoint(directory, fallback_on_corrupt=True)
    state.load(ckpt.parts)
    state.checkpoint_step = ckpt.step
    log.info("trainer resumed from checkpoint %d: %d updates, replay %d segments (%d steps)", ckpt.step,
             state.updates, len(state.replay.segments), state.replay.steps)
    return ckpt.step


def catch_up(state: TrainerState, run_dir: Path, since: int, before: int) -> None:
    """Add the segments of the hub's journals ``since <= step < before`` (accepted while this trainer was not taking them)."""
    from pzstream.stream.checkpoint import checkpoint_root
    from pzstream.stream.journal import journal_segments

    t0, n = time.monotonic(), 0
    for frame in journal_segments(checkpoint_root(run_dir) / "journal", since, before):
        state.add(_segment(frame, None))
        state.received += 1
        n += 1
    log.info("trainer took %d segments from the hub's journals %d..%d (%.1fs); replay %d segments", n, since, before - 1,
             time.monotonic() - t0, len(state.replay.segments))


def save_trainer(state: TrainerState, run_dir: Path, step: int, keep: int) -> None:
    from pzstream.stream.checkpoint import prune_checkpoints, write_checkpoint
    from pzstream.stream.checkpoint import checkpoint_root

    t0 = time.monotonic()
    parts, counters = state.parts()
    directory = checkpoint_root(run_dir) / "trainer"
    write_checkpoint(directory, step, parts, counters)
    prune_checkpoints(directory, keep)
    state.checkpoint_step = step
    log.info("trainer checkpoint %d written in %.2fs: %d updates, replay %d segments, %.1f MB", step,
             time.monotonic() - t0, state.updates, len(state.replay.segments), sum(map(len, parts.values())) / 1e6)


def trainer_stats(state: TrainerState, rate: float, metrics: dict[str, float], pace_limit: float = 0.0) -> dict[str, float]:
    """What a TrainerStats message carries: counters, replay sizes, the limit on updates a second it plays by
    (``update_limit``, 0: none), the last update's metrics."""
    replay = state.replay
    return {"updates": float(state.updates), "updates_per_s": rate, "pace_limit": float(pace_limit),
            "published": float(state.published),
            "failed_updates": float(state.failed_updates),
            "replay_steps": float(replay.steps), "windows": float(len(replay.windows)),
            "replay_bytes": float(replay.nbytes), "replay_bytes_evicted": float(replay.evicted_bytes),
            "replay_evicted_for_bytes": float(replay.evicted_for_bytes),
            "segments_received": float(state.received), "replay_segments": float(len(replay.segments)),
            "expired_segments": float(state.expired),
            "checkpoint_step": float(-1 if state.checkpoint_step is None else state.checkpoint_step),
            **{k: float(v) for k, v in metrics.items()}}


def update_limit(configured: float, pace: float | None) -> float:
    """Updates a second the trainer may make (0: no limit): the lower of ``trainer.max_updates_per_s``
    (0: none) and the hub's ``Pace`` (None: none)."""
    limits = [x for x in (configured, pace) if x is not None and x > 0]
    return min(limits) if limits else 0.0


class TrainerLoop:
    """The trainer process's loop, one method per step: ``ingest`` what the hub sent (segments,
    budgets, checkpoint requests), ``ready`` to train (data, a budget), one ``update``, then
    ``after_update`` (publish, the LLM's own training, budgets, stats)."""

    def __init__(self, cfg: Config, state: TrainerState, channel: HelperChannel, run_dir: Path,
                 journal_from: int | None, writer=None):
        self.cfg, self.tc, self.wm_cfg = cfg, cfg.trainer, cfg.world_model()
        self.state, self.channel, self.run_dir, self.writer = state, channel, run_dir, writer
        self.journal_from = journal_from  # the hub's journals to catch up from, at the first SaveCheckpoint
        self.resumed = state.checkpoint_step is not None
        self.fault = UpdateFault(state.trainer.model) if self.tc.fail_every else None
        # schedule.mode=alternating: train only the budgets the hub sends (None = always train)
        self.budget: int | None = 0 if cfg.schedule.mode == "alternating" else None
        self.spent = 0
        self.t0 = time.monotonic()
        self.updates0 = state.updates  # a resumed trainer counts on; its rate counts this process's updates
        self.attempts = self.failed_in_a_row = 0
        self.metrics: dict[str, float] = {}
        self.last_rebuild = -10**9
        self.pace: float | None = None  # the hub's limit (schedule.gpu_share=auto), updates a second

    @property
    def limit(self) -> float:
        """Updates a second this trainer may make now (0: no limit)."""
        return update_limit(self.tc.max_updates_per_s, self.pace)

    @property
    def rate(self) -> float:
        return (self.state.updates - self.updates0) / max(1e-9, time.monotonic() - self.t0)

    def ingest(self) -> bool:
        """Everything waiting on the channel (data never waits behind training); False: stop."""
        taken = 0
        for _ in range(1024):
            note = self.channel.receive()
            if note is None:
                break
            if isinstance(note, Stop):
                return False
            if isinstance(note, TrainBudget):
                self.budget, self.spent = (self.budget or 0) + note.updates, 0
            elif isinstance(note, Pace):
                self.pace = note.max_updates_per_s if note.max_updates_per_s > 0 else None
            elif isinstance(note, SaveCheckpoint):
                if self.journal_from is not None:
                    catch_up(self.state, self.run_dir, self.journal_from, note.step)
                    self.journal_from = None
                save_trainer(self.state, self.run_dir, note.step, self.cfg.checkpoint.keep)
            elif not isinstance(note, SegmentFrame):
                log.error("trainer got an unexpected %s", type(note).__name__)
            else:
                try:
                    msg = wire.decode(note.payload)
                except wire.WireError as e:  # the hub validated it; this would be a bug, not input
                    log.error("trainer got an undecodable segment: %s", e)
                    continue
                taken += len(note.payload)
                if isinstance(msg, wire.Segment):
                    self.state.add(msg)
                    self.state.received += 1
        if taken:  # the hub's byte credit for this pipe
            self.channel.send(Taken(nbytes=taken))
        return True

    def _idle(self) -> None:
        """Nothing to train on: an alternating schedule's train phase ends here (said at once), an
        asynchronous trainer waits a little for data."""
        if self.budget is None:
            self.channel.wait(200)
            return
        self.channel.send(BudgetSpent(updates=self.spent))
        self.budget, self.spent = 0, 0

    def ready(self) -> bool:
        """Whether to train now; when not, it has waited a little or ended a budget that cannot be spent."""
        replay = self.state.replay
        if self.budget == 0:
            self.channel.wait(200)
            return False
        if replay.steps < self.tc.min_replay_steps:  # too little to train: a budget says so now
            self._idle()
            return False
        if self.state.updates - self.last_rebuild >= 10 or not replay.windows:
            replay.rebuild(self.wm_cfg)
            self.last_rebuild = self.state.updates
        if not replay.windows:  # no full window yet: end the phase, do not stall it
            self._idle()
            return False
        return True

    def update(self) -> bool:
        """One world-model update; False when it raised (counted, logged and skipped)."""
        from pzstream.model.targets import collate

        state, fault = self.state, self.fault
        self.attempts += 1
        try:
            if fault is not None:
                fault.armed = update_fails(self.attempts, self.tc.fail_every)
            self.metrics = state.trainer.step(collate(state.replay.sample(self.wm_cfg.batch_size, state.rng), self.wm_cfg))
        except Exception as e:  # noqa: BLE001 - one bad update must not end training: skip it, say so
            state.failed_updates += 1
            self.failed_in_a_row += 1
            log.error("world-model update %d failed (%d failed in this trainer, %d in a row); skipped: %s: %s\n%s",
                      state.updates + 1, state.failed_updates, self.failed_in_a_row, type(e).__name__, e,
                      traceback.format_exc(limit=-8))
            self.channel.send(TrainerStats(stats=trainer_stats(state, self.rate, self.metrics, self.limit)))
            if self.failed_in_a_row >= MAX_FAILED_IN_A_ROW:
                log.error("%d world-model updates failed in a row: this trainer exits and the hub starts another",
                          self.failed_in_a_row)
                raise
            return False
        finally:
            if fault is not None:
                fault.armed = False
        self.failed_in_a_row = 0
        state.updates += 1
        return True

    def after_update(self, t_step: float) -> None:
        """Publish, train the LLM, spend the budget, report: what follows a successful update."""
        from pzstream.model.world_model import weights_bytes

        state, tc, llm, updates = self.state, self.tc, self.state.llm, self.state.updates
        if crashes_now(updates, tc.crash_at_update, self.resumed):
            log.error("trainer.crash_at_update=%d: the trainer exits now, as a crash (code %d)", updates,
                      CRASH_EXIT_CODE)
            sys.stderr.flush()
            os._exit(CRASH_EXIT_CODE)
        budget_done = False
        if self.budget is not None:
            self.budget, self.spent = self.budget - 1, self.spent + 1
            budget_done = self.budget == 0
        if (limit := self.limit) > 0:
            time.sleep(max(0.0, 1.0 / limit - (time.monotonic() - t_step)))
        if updates % tc.publish_every == 0 or budget_done:  # a train phase ends on published weights
            state.published += 1
            self.channel.send(NewWeights(model="wm", payload=weights_bytes(state.trainer.model)))
        if llm is not None and updates % self.cfg.llm.train_every == 0:
            llm_metrics = llm.step(list(state.replay.segments), state.rng)
            if llm_metrics and llm.updates % self.cfg.llm.publish_every == 0:
                llm.published += 1
                self.channel.send(NewWeights(model="llm", payload=llm.backend.state_dict_bytes()))
            if llm_metrics:
                self.metrics.update(llm_metrics)
        if budget_done:
            self.channel.send(BudgetSpent(updates=self.spent))
            self.spent = 0
        if updates % tc.log_every == 0 or budget_done:
            self.report()

    def report(self) -> None:
        state, llm, metrics, updates, rate = self.state, self.state.llm, self.metrics, self.state.updates, self.rate
        if llm is not None:
            metrics.update(llm.last)
            metrics["llm_updates"] = float(llm.updates)
            metrics["llm_published"] = float(llm.published)
        self.channel.send(TrainerStats(stats=trainer_stats(state, rate, metrics, self.limit)))
        log.info("wm update %d (%.1f/s), %d published: loss %.3f (reward %.3f, value %.3f, policy %.3f, latent %.3f), replay %d steps",
                 updates, rate, state.published, metrics["loss/total"], metrics["loss/reward"], metrics["loss/value"],
                 metrics["loss/policy"], metrics["loss/latent"], state.replay.steps)
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(k if k.startswith("train/") else f"train/{k}", v, updates)
            self.writer.add_scalar("train/updates_per_s", rate, updates)
            self.writer.add_scalar("train/replay_steps", state.replay.steps, updates)

    def run(self) -> None:
        """Until the hub sends Stop or goes away."""
        parent = os.getppid()
        while self.ingest():
            if os.getppid() != parent:
                log.warning("hub process is gone; trainer exits")
                return
            if not self.ready():
                continue
            t_step = time.monotonic()
            if self.update():
                self.after_update(t_step)


def run_trainer(cfg_json: str, inbox: str, outbox: str, run_dir: str, logs_in: str | None) -> None:
    """Process entry point: train until the hub sends Stop or goes away."""
    die_with_parent()
    import torch

    from pzstream.stream.logstream import setup_helper_logging
    from pzstream.model.train import Trainer
    from pzstream.model.world_model import WorldModel

    cfg = Config.model_validate_json(cfg_json)
    setup_helper_logging("trainer", "wm", cfg.run.log_level, logs_in)
    tc = cfg.trainer
    torch.set_num_threads(tc.threads)
    wm_cfg = cfg.world_model()
    torch.manual_seed(0)
    trainer = Trainer(WorldModel(wm_cfg), wm_cfg, device=tc.device, autocast=tc.autocast)
    llm = LLMTraining(cfg) if cfg.llm.enabled and cfg.llm.train else None
    writer = None
    if tc.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(Path(run_dir) / "tb" / "trainer"))
    state = TrainerState(trainer, SegmentReplay(tc.replay_capacity_steps, tc.replay_capacity_bytes),
                         random.Random(0), llm)
    # with checkpoints: the journals to read from, at the first SaveCheckpoint (None: nothing to catch up)
    journal_from = resume_trainer(state, Path(run_dir)) if cfg.checkpoint.enabled else None
    channel = HelperChannel(inbox, outbox, linger_ms=2000)
    channel.send(WorkerReady(runtime="trainer", describe=f"checkpoint {state.checkpoint_step}"))
    log.info("trainer up on %s: world model %d parameters, batch %d, publish every %d updates", tc.device,
             sum(p.numel() for p in trainer.model.parameters()), wm_cfg.batch_size, tc.publish_every)
    try:
        TrainerLoop(cfg, state, channel, Path(run_dir), journal_from, writer).run()
    finally:
        if writer is not None:
            writer.close()
        channel.close()


def start_trainer(cfg: Config, inbox: str, outbox: str, run_dir: Path, logs_in: str | None) -> mp.process.BaseProcess:
    proc = mp.get_context("spawn").Process(target=run_trainer, name="pzstream-trainer", daemon=True,
                                           args=(cfg.model_dump_json(), inbox, outbox, str(run_dir), logs_in))
    proc.start()
    return proc
