"""The hub's checkpoints and its resume: what the hub holds, saved with its helpers' state at
one step, and put back after a restart (``launch.py --resume RUN_DIR``).

    runs/<name>/checkpoints/hub/step-N/       counters, versions, collectors' acknowledgement
                                             state, episode returns, the PPO prompt queue
    runs/<name>/checkpoints/trainer/step-N/   world model, optimiser, replay, RNG (the trainer writes it)
    runs/<name>/checkpoints/ppo/step-N/       the PPO policy (and optimiser) (the PPO worker writes it)
    runs/<name>/checkpoints/journal/journal-N.seg   segments accepted from step N on

Every ``checkpoint.every_s`` (and once more at a clean stop) the hub, in one go on its event
loop: asks the trainer and the PPO worker to save step N (in-band, after every segment sent to
them before), starts journal file N, and writes its own state as step N. Each process writes
its own step directory atomically (``pzstream.stream.checkpoint``).

Policy for acknowledged segments (the resume guarantee): the hub acknowledges a segment only
after it is in the journal. After a crash, the trainer loads its newest complete checkpoint T
and every journal from T on, so each acknowledged segment is in the resumed replay, or counted
as expired: evicted by the replay's capacity (``trainer.replay_capacity_steps``, counted by the
trainer as ``expired_segments``), or not delivered to the trainer because its pipe was full
(``trainer_dropped``, counted by the hub) when that happened before step T.
The hub loads its newest complete checkpoint H and replays the journals from H on through its
counters, its acknowledgement state and its parts (returns, PPO prompt queue), so counters and
acknowledgements continue where the old hub stopped and a collector that outlived it resends
only what was not acknowledged. Versions continue from the run's weights mirror (newest
published bytes served again), so collectors holding old versions accept the new ones.
Limits: lag histograms count only segments accepted up to H; an episode in progress at H loses
its PPO action prefix; a PPO episode in flight at the crash is counted failed; the alternating
schedule starts a new cycle.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from pzstream.stream.checkpoint import (
    CHECKPOINTS,
    PROCESSES,
    CheckpointError,
    all_steps,
    checkpoint_root,
    complete_steps,
    prune_checkpoints,
    read_checkpoint,
    write_checkpoint,
)
from pzstream.config import Config
from pzstream.stream.journal import PeerRecord, SegmentJournal, SegmentRecord, journal_path, journal_steps, prune_journals, read_journal
from pzstream.hub.parts import AcceptedSegment, SegmentPart
from pzstream.hub.peers import Peer, policy_of, seed_of
from pzstream.hub.status import HubCounters
from pzstream.stream import wire
from pzstream.stream.internal import SaveCheckpoint
from pzstream.stream.weights import WeightsError, read_mirrored

log = logging.getLogger("pzstream.learner")

def newest_steps(run_dir: Path) -> dict[str, int | None]:
    """Newest complete checkpoint step of each process of a run (None: none)."""
    root = checkpoint_root(run_dir)
    return {p: (complete_steps(root / p) or [None])[-1] for p in PROCESSES}


# ------------------------------------------------------------------------------ pure state


def counters_state(c: HubCounters) -> dict:
    return {"accepted": c.accepted, "accepted_steps": c.accepted_steps, "accepted_bytes": c.accepted_bytes,
            "rejected": dict(c.rejected), "connections_rejected": dict(c.connections_rejected),
            "per_game": {g: dict(v) for g, v in c.per_game.items()},
            "lag_wm": {str(k): v for k, v in c.lag_wm.items()}, "lag_llm": {str(k): v for k, v in c.lag_llm.items()},
            "collectors_lost": c.collectors_lost}


def load_counters(c: HubCounters, d: dict) -> None:
    c.accepted, c.accepted_steps, c.accepted_bytes = int(d["accepted"]), int(d["accepted_steps"]), int(d["accepted_bytes"])
    c.rejected, c.connections_rejected = Counter(d["rejected"]), Counter(d["connections_rejected"])
    c.per_game = {g: Counter(v) for g, v in d["per_game"].items()}
    c.lag_wm = Counter({int(k): v for k, v in d["lag_wm"].items()})
    c.lag_llm = Counter({int(k): v for k, v in d["lag_llm"].items()})
    c.collectors_lost = int(d["collectors_lost"])


def count_replayed(c: HubCounters, seg: wire.Segment, nbytes: int) -> None:
    """Count a segment replayed from the journal as ingest counted it when it was accepted (lag aside)."""
    n = seg.n_steps
    c.accepted += 1
    c.accepted_steps += n
    c.accepted_bytes += nbytes
    game = c.per_game.setdefault(seg.header.game, Counter())
    game["segments"] += 1
    game["steps"] += n
    game["episodes_ended"] += int(seg.done.sum())


@dataclass
class PeerState:
    """What the hub must remember of a collector connection to acknowledge it correctly after a restart."""

    identity: bytes
    hello: wire.Hello
    last_seq: int = -1
    accepted: int = 0
    rejected: int = 0
    steps: int = 0

    def to_dict(self) -> dict:
        return {"identity": self.identity, "hello": wire.encode(self.hello), "last_seq": self.last_seq,
                "accepted": self.accepted, "rejected": self.rejected, "steps": self.steps}

    @classmethod
    def from_dict(cls, d: dict) -> "PeerState":
        hello = wire.decode(d["hello"])
        if not isinstance(hello, wire.Hello):
            raise CheckpointError(f"a saved collector holds a {type(hello).__name__}, not a hello")
        return cls(identity=bytes(d["identity"]), hello=hello, last_seq=int(d["last_seq"]), accepted=int(d["accepted"]),
                   rejected=int(d["rejected"]), steps=int(d["steps"]))


# ------------------------------------------------------------------------------ the checkpointer


@dataclass
class ResumeReport:
    """What a resume found: the hub step it loaded, the journal segments it replayed after it."""

    hub_step: int
    trainer_step: int | None
    ppo_step: int | None
    journal_segments: int = 0
    journal_files: list[int] = field(default_factory=list)


class HubCheckpointer:
    """Saves the hub's state with its helpers' on an interval and at stop; restores it on resume.

    hub: the LearnerHub (its ingest, versions, weights store, trainer link, PPO part and return
    tracker are read and, on resume, written); replay_parts: parts that see journal segments on
    resume (not the trainer link: the trainer reads the journal itself).
    """

    def __init__(self, cfg: Config, run_dir: Path, hub) -> None:
        self.cfg, self.cc, self.hub = cfg, cfg.checkpoint, hub
        self.root = checkpoint_root(run_dir)
        self.hub_dir, self.journal_dir = self.root / "hub", self.root / "journal"
        self.journal = SegmentJournal(self.journal_dir, self._owner)
        self.step: int | None = None  # the newest checkpoint step this hub began
        self.written = 0
        self.trainer_told = False  # the last checkpoint reached the trainer
        self.resumed: ResumeReport | None = None

    def _owner(self, cid: str) -> tuple[bytes, wire.Hello] | None:
        ingest = self.hub.ingest
        identity = ingest.by_collector.get(cid)
        peer = ingest.peers.get(identity) if identity is not None else None
        return (identity, peer.hello) if peer is not None else None

    # -- start ---------------------------------------------------------------------------

    def start(self) -> None:
        """The hub begins serving: journal the segments from here on. A fresh run (no ``resume``)
        that finds an earlier run's checkpoints here moves them to ``checkpoints.prev`` first."""
        if self.resumed is None and self.root.exists() and any(self.root.iterdir()):
            prev = self.root.with_name(CHECKPOINTS + ".prev")
            shutil.rmtree(prev, ignore_errors=True)
            self.root.rename(prev)
            log.warning("a fresh run in %s: the earlier run's checkpoints moved to %s (resume it with --resume)",
                        self.root.parent, prev)
        self._begin(self.next_step())

    def _begin(self, step: int) -> None:
        self.step = step
        self.journal.open(step)

    def next_step(self) -> int:
        seen = [s for p in PROCESSES for s in all_steps(self.root / p)] + journal_steps(self.journal_dir)
        return max(seen, default=-1) + 1

    # -- save ----------------------------------------------------------------------------

    def state_parts(self) -> dict[str, bytes]:
        h = self.hub
        hub_state = {
            "hub_id": h.hub_id, "counters": counters_state(h.ingest.counters),
            "trainer": {"dropped": h.trainer.dropped, "forwarded": h.trainer.forwarded},
            "versions": {"wm": h.versions.wm, "llm": h.versions.llm},
            "returns": {"returns": h.returns.returns, "policies": h.returns.policies,
                        "game_steps": dict(h.returns.game_steps)},
            "model": self.cfg.model, "llm_model": self.cfg.llm.model,
        }
        peers = [PeerState(p.identity, p.hello, p.last_seq, p.accepted, p.rejected, p.steps).to_dict()
                 for p in h.ingest.peers.values() if not p.is_reader]
        parts = {"hub.json": json.dumps(hub_state).encode(), "peers.msgpack": msgpack.packb(peers)}
        if h.ppo is not None:
            parts["ppo.msgpack"] = h.ppo.checkpoint_state()
        return parts

    def checkpoint(self) -> int:
        """Checkpoint step N now: helpers asked to save N, journal N started, the hub's state written."""
        h = self.hub
        step = self.next_step()
        self.trainer_told = False
        for name, helper in (("trainer", h.trainer.helper), ("PPO worker", h.ppo.helper if h.ppo else None)):
            if helper is None:
                continue
            if helper.send(SaveCheckpoint(step=step)):
                self.trainer_told |= name == "trainer"
            else:
                log.info("checkpoint %d: the %s is not taking messages; it keeps its older checkpoint", step, name)
        self._begin(step)  # the same loop turn: segments from here on are journal N's
        t0 = time.monotonic()
        c = h.ingest.counters
        write_checkpoint(self.hub_dir, step, self.state_parts(),
                         {"wm_version": h.versions.wm, "llm_version": h.versions.llm, "segments_accepted": c.accepted,
                          "env_steps": c.accepted_steps, "trainer_dropped": h.trainer.dropped})
        self.written += 1
        prune_checkpoints(self.hub_dir, self.cc.keep)
        self._prune_journals()
        log.info("checkpoint %d: hub state written in %.2fs (%d segments accepted, wm v%d, llm v%d)", step,
                 time.monotonic() - t0, c.accepted, h.versions.wm, h.versions.llm)
        return step

    def attach_trainer(self) -> bool:
        """A (re)started trainer is ready: checkpoint now. It reads the journals before this step
        and gets every later segment through its channel; False if it could not be told."""
        try:
            self.checkpoint()
        except OSError as e:
            log.error("checkpoint for the starting trainer failed: %s", e)
        if not self.trainer_told:
            log.warning("the trainer could not be told where the journal starts; it gets no segments until it restarts")
        return self.trainer_told

    def _prune_journals(self) -> None:
        """Journals older than every checkpoint a resume may fall back to are no longer needed."""
        oldest = []
        for proc in ("hub", "trainer") if self.cfg.trainer.enabled else ("hub",):
            kept = complete_steps(self.root / proc)[-self.cc.keep:]
            if not kept:
                return  # that process has no checkpoint: it would replay every journal
            oldest.append(kept[0])
        prune_journals(self.journal_dir, min(oldest))

    async def run(self) -> None:
        import anyio

        while True:
            await anyio.sleep(self.cc.every_s)
            try:
                self.checkpoint()
            except OSError as e:  # a full disk must not stop ingestion: say it, try again next time
                log.error("checkpoint failed: %s", e)

    def close(self) -> None:
        self.journal.close()

    # -- resume --------------------------------------------------------------------------

    def resume(self, replay_parts: Sequence[SegmentPart], limits: wire.WireLimits) -> ResumeReport:
        """Put back the newest complete hub checkpoint and everything journalled after it."""
        newest = newest_steps(self.root.parent)
        ckpt = read_checkpoint(self.hub_dir)
        state = json.loads(ckpt.parts["hub.json"])
        if state.get("model") != self.cfg.model or state.get("llm_model") != self.cfg.llm.model:
            raise CheckpointError(f"{ckpt.directory}: saved with model={state.get('model')} llm.model="
                                  f"{state.get('llm_model')}; this config has model={self.cfg.model} llm.model="
                                  f"{self.cfg.llm.model}: resume with the run's config")
        h = self.hub
        load_counters(h.ingest.counters, state["counters"])
        h.trainer.dropped, h.trainer.forwarded = int(state["trainer"]["dropped"]), int(state["trainer"]["forwarded"])
        h.returns.returns = {k: [tuple(x) for x in v] for k, v in state["returns"]["returns"].items()}
        h.returns.policies = dict(state["returns"]["policies"])
        h.returns.game_steps.update(state["returns"].get("game_steps", {}))  # absent before 2026-12-06
        if h.ppo is not None and "ppo.msgpack" in ckpt.parts:
            h.ppo.restore_state(ckpt.parts["ppo.msgpack"])
        peers = {p.identity: p for p in map(PeerState.from_dict, msgpack.unpackb(ckpt.parts["peers.msgpack"]))}
        report = ResumeReport(hub_step=ckpt.step, trainer_step=newest["trainer"], ppo_step=newest["ppo"])
        self._replay_journals(ckpt.step, peers, replay_parts, limits, report)
        self._install_peers(peers)
        self._serve_mirrored_weights(state["versions"])
        self.resumed = report
        log.info("resumed from checkpoint %d (trainer %s, PPO %s): %d segments replayed from %d journal file(s); "
                 "%d segments accepted so far, wm v%d, llm v%d", ckpt.step, report.trainer_step, report.ppo_step,
                 report.journal_segments, len(report.journal_files), h.ingest.counters.accepted, h.versions.wm,
                 h.versions.llm)
        return report

    def _replay_journals(self, since: int, peers: dict[bytes, PeerState], parts: Sequence[SegmentPart],
                         limits: wire.WireLimits, report: ResumeReport) -> None:
        owner: dict[str, bytes] = {}  # collector id -> identity, as the journal's peer records say
        for step in journal_steps(self.journal_dir):
            if step < since:
                continue
            report.journal_files.append(step)
            for rec in read_journal(journal_path(self.journal_dir, step)):
                if isinstance(rec, PeerRecord):
                    owner[rec.hello.collector_id] = rec.identity
                    if rec.identity not in peers:
                        peers[rec.identity] = PeerState(rec.identity, rec.hello)
                    continue
                assert isinstance(rec, SegmentRecord)
                seg = wire.decode(rec.data, limits)
                if not isinstance(seg, wire.Segment):
                    raise CheckpointError(f"journal {step}: a segment record holds a {type(seg).__name__}")
                count_replayed(self.hub.ingest.counters, seg, len(rec.data))
                peer = peers.get(owner.get(seg.header.collector_id, b""))
                if peer is not None:
                    peer.last_seq = max(peer.last_seq, seg.header.seq)
                    peer.accepted += 1
                    peer.steps += seg.n_steps
                hello = peer.hello if peer is not None else None
                accepted = AcceptedSegment(seg, rec.data, seed_of(hello) if hello else None,
                                           policy_of(hello) if hello else "unknown")
                for part in parts:
                    part.on_segment(accepted)
                report.journal_segments += 1

    def _install_peers(self, peers: dict[bytes, PeerState]) -> None:
        """Each saved connection comes back as a lost peer: the same process saying hello again
        continues at its last acknowledged seq; its id stays free for a new process."""
        ingest, now = self.hub.ingest, time.monotonic()
        for p in peers.values():
            peer = Peer(identity=p.identity, hello=p.hello, last_heard=now, last_seq=p.last_seq, granted=p.last_seq,
                        accepted=p.accepted, rejected=p.rejected, steps=p.steps, lost=True)
            ingest.peers[p.identity] = peer
            ingest.by_collector[p.hello.collector_id] = p.identity  # its hello carries the counts on (ingest)

    def _serve_mirrored_weights(self, saved: dict[str, int]) -> None:
        """The newest weights of the run's mirror are served again under their versions."""
        h = self.hub
        for model in ("wm", "llm"):
            try:
                found = read_mirrored(h.weights.directory, model) if h.weights.directory is not None else None
            except WeightsError as e:
                raise CheckpointError(f"the run's weights mirror: {e}") from None
            if found is not None and found[0] == h.versions.published(model):
                h.weights.put(model, found[0], found[1])
            if h.versions.published(model) < int(saved[model]):
                log.warning("the weights mirror holds %s v%d, the checkpoint saw v%d: versions number on from v%d",
                            model, h.versions.published(model), saved[model], h.versions.published(model))

    def summary(self) -> dict[str, object]:
        r = self.resumed
        return {"enabled": True, "step": self.step, "written": self.written,
                "resumed_from": None if r is None else {"hub": r.hub_step, "trainer": r.trainer_step, "ppo": r.ppo_step,
                                                        "journal_segments": r.journal_segments}}
