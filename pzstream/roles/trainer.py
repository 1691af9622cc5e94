"""World-model training beside the hub, in a process of its own.

The hub forwards every accepted segment frame to the trainer (PUSH -> PULL, never blocking the
hub: a full pipe is counted as dropped); the trainer keeps its own bounded replay, trains
continuously, and sends new weights back (PUSH -> PULL, reliable) every ``publish_every``
updates together with its metrics, in the typed messages of ``pzstream.stream.internal``. The
hub numbers the versions: the trainer only says which model the bytes are. Separate processes
keep a slow trainer from stalling ingestion through the GIL, and the reverse.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import random
import time
from pathlib import Path

import numpy as np

from pzstream.config import Config
from pzstream.roles.lifecycle import die_with_parent
from pzstream.stream import wire
from pzstream.model.replay import SegmentReplay
from pzstream.stream.internal import BudgetSpent, HelperChannel, NewWeights, SegmentFrame, Stop, TrainBudget, TrainerStats

log = logging.getLogger("pzstream.trainer")


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


def run_trainer(cfg_json: str, inbox: str, outbox: str, run_dir: str, logs_in: str | None) -> None:
    """Process entry point: train until the hub sends Stop or goes away."""
    die_with_parent()
    import torch

    from pzstream.stream.logstream import setup_helper_logging
    from pzstream.model.targets import collate
    from pzstream.model.train import Trainer
    from pzstream.model.world_model import WorldModel, weights_bytes

    cfg = Config.model_validate_json(cfg_json)
    setup_helper_logging("trainer", "wm", cfg.run.log_level, logs_in)
    tc = cfg.trainer
    torch.set_num_threads(tc.threads)
    wm_cfg = cfg.world_model()
    torch.manual_seed(0)
    trainer = Trainer(WorldModel(wm_cfg), wm_cfg, device=tc.device)
    llm = LLMTraining(cfg) if cfg.llm.enabled and cfg.llm.train else None
    writer = None
    if tc.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(Path(run_dir) / "tb" / "trainer"))
    channel = HelperChannel(inbox, outbox, linger_ms=2000)
    replay = SegmentReplay(tc.replay_capacity_steps)
    rng = random.Random(0)
    parent = os.getppid()
    updates, published, received = 0, 0, 0
    # schedule.mode=alternating: train only the budgets the hub sends (None = always train)
    budget: int | None = 0 if cfg.schedule.mode == "alternating" else None
    spent = 0
    t0 = time.monotonic()
    last_rebuild = -10**9
    log.info("trainer up on %s: world model %d parameters, batch %d, publish every %d updates", tc.device,
             sum(p.numel() for p in trainer.model.parameters()), wm_cfg.batch_size, tc.publish_every)
    try:
        while True:
            # ingest everything waiting, then one update: data never waits behind training
            for _ in range(1024):
                note = channel.receive()
                if note is None:
                    break
                if isinstance(note, Stop):
                    return
                if isinstance(note, TrainBudget):
                    budget, spent = (budget or 0) + note.updates, 0
                    continue
                if not isinstance(note, SegmentFrame):
                    log.error("trainer got an unexpected %s", type(note).__name__)
                    continue
                try:
                    msg = wire.decode(note.payload)
                except wire.WireError as e:  # the hub validated it; this would be a bug, not input
                    log.error("trainer got an undecodable segment: %s", e)
                    continue
                if isinstance(msg, wire.Segment):
                    replay.add(msg)
                    received += 1
            if os.getppid() != parent:
                log.warning("hub process is gone; trainer exits")
                return
            if budget == 0:
                channel.wait(200)
                continue
            if budget is not None and replay.steps < tc.min_replay_steps:  # too little to train: say so now
                channel.send(BudgetSpent(updates=spent))
                budget, spent = 0, 0
                continue
            if replay.steps < tc.min_replay_steps:
                channel.wait(200)
                continue
            if updates - last_rebuild >= 10 or not replay.windows:
                replay.rebuild(wm_cfg)
                last_rebuild = updates
            if not replay.windows:
                if budget is not None:  # nothing to train on yet (no full window): end the phase, do not stall it
                    channel.send(BudgetSpent(updates=spent))
                    budget, spent = 0, 0
                    continue
                channel.wait(200)
                continue
            t_step = time.monotonic()
            metrics = trainer.step(collate(replay.sample(wm_cfg.batch_size, rng), wm_cfg))
            updates += 1
            budget_done = False
            if budget is not None:
                budget, spent = budget - 1, spent + 1
                budget_done = budget == 0
            if tc.max_updates_per_s > 0:
                time.sleep(max(0.0, 1.0 / tc.max_updates_per_s - (time.monotonic() - t_step)))
            if updates % tc.publish_every == 0 or budget_done:  # a train phase ends on published weights
                published += 1
                channel.send(NewWeights(model="wm", payload=weights_bytes(trainer.model)))
            if llm is not None and updates % cfg.llm.train_every == 0:
                llm_metrics = llm.step(list(replay.segments), rng)
                if llm_metrics and llm.updates % cfg.llm.publish_every == 0:
                    llm.published += 1
                    channel.send(NewWeights(model="llm", payload=llm.backend.state_dict_bytes()))
                if llm_metrics:
                    metrics.update(llm_metrics)
            if budget_done:
                channel.send(BudgetSpent(updates=spent))
                spent = 0
            if updates % tc.log_every == 0 or budget_done:
                rate = updates / (time.monotonic() - t0)
                if llm is not None:
                    metrics.update(llm.last)
                    metrics["llm_updates"] = float(llm.updates)
                    metrics["llm_published"] = float(llm.published)
                stats = {"updates": float(updates), "updates_per_s": rate, "published": float(published),
                         "replay_steps": float(replay.steps), "windows": float(len(replay.windows)),
                         "segments_received": float(received), **{k: float(v) for k, v in metrics.items()}}
                channel.send(TrainerStats(stats=stats))
                log.info("wm update %d (%.1f/s), %d published: loss %.3f (reward %.3f, value %.3f, policy %.3f, latent %.3f), replay %d steps",
                         updates, rate, published, metrics["loss/total"], metrics["loss/reward"], metrics["loss/value"],
                         metrics["loss/policy"], metrics["loss/latent"], replay.steps)
                if writer is not None:
                    for k, v in metrics.items():
                        writer.add_scalar(k if k.startswith("train/") else f"train/{k}", v, updates)
                    writer.add_scalar("train/updates_per_s", rate, updates)
                    writer.add_scalar("train/replay_steps", replay.steps, updates)
    finally:
        if writer is not None:
            writer.close()
        channel.close()


def start_trainer(cfg: Config, inbox: str, outbox: str, run_dir: Path, logs_in: str | None) -> mp.process.BaseProcess:
    proc = mp.get_context("spawn").Process(target=run_trainer, name="pzstream-trainer", daemon=True,
                                           args=(cfg.model_dump_json(), inbox, outbox, str(run_dir), logs_in))
    proc.start()
    return proc
