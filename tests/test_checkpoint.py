"""Checkpoints and resume (issue 14): atomic parts with a manifest, the hub's segment journal, and
a learner killed with ``kill -9`` at a random point and resumed with ``--resume``."""
from __future__ import annotations

import json
import logging
import random
import signal
import time
from pathlib import Path

import msgpack
import pytest
from support import launch, wait_until

from pzstream.stream.checkpoint import (
    MANIFEST,
    CheckpointError,
    complete_steps,
    pack_frames,
    prune_checkpoints,
    read_checkpoint,
    step_dir,
    unpack_frames,
    write_checkpoint,
)
from pzstream.stream.journal import PeerRecord, SegmentJournal, SegmentRecord, journal_path, read_journal
from pzstream.hub.parts import AcceptedSegment
from pzstream.hub.prompt_queue import PromptQueue
from pzstream.stream import wire
from pzstream.stream.weights import latest_on_disk

# ------------------------------------------------------------------------------ atomic parts


def test_a_checkpoint_reads_back_what_was_written(tmp_path):
    m = write_checkpoint(tmp_path, 3, {"a.bin": b"alpha", "b.json": b"{}"}, {"wm_version": 7})
    got = read_checkpoint(tmp_path)
    assert got.step == 3 and got.parts == {"a.bin": b"alpha", "b.json": b"{}"}
    assert got.manifest.counters == {"wm_version": 7} and m.parts["a.bin"].nbytes == 5
    manifest = json.loads((step_dir(tmp_path, 3) / MANIFEST).read_text())
    assert manifest["format"] == 1 and manifest["step"] == 3 and len(manifest["parts"]["a.bin"]["sha256"]) == 64
    assert not list(step_dir(tmp_path, 3).glob(".*.tmp")), "no temporary file is left behind"


def test_a_damaged_part_is_named(tmp_path):
    write_checkpoint(tmp_path, 1, {"model.pt": b"old weights"})
    write_checkpoint(tmp_path, 2, {"model.pt": b"new weights", "replay.frames": b"frames"})
    (step_dir(tmp_path, 2) / "replay.frames").write_bytes(b"frameZ")
    with pytest.raises(CheckpointError, match=r"part 'replay.frames' is damaged"):
        read_checkpoint(tmp_path)
    assert read_checkpoint(tmp_path, fallback_on_corrupt=True).parts == {"model.pt": b"old weights"}
    (step_dir(tmp_path, 1) / "model.pt").unlink()
    with pytest.raises(CheckpointError, match=r"part 'model.pt' is missing"):
        read_checkpoint(tmp_path, step=1)


def test_an_incomplete_newest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
    write_checkpoint(tmp_path, 4, {"x": b"complete"})
    write_checkpoint(tmp_path, 5, {"x": b"killed before its manifest"})
    (step_dir(tmp_path, 5) / MANIFEST).unlink()  # the writer died between the parts and the manifest
    (step_dir(tmp_path, 6)).mkdir()  # ... or before its first part
    with caplog.at_level(logging.WARNING, logger="pzstream.stream.checkpoint"):
        got = read_checkpoint(tmp_path)
    assert got.step == 4 and got.parts == {"x": b"complete"}
    assert "step 6 is incomplete" in caplog.text
    assert complete_steps(tmp_path) == [4]
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        read_checkpoint(tmp_path / "none")


def test_pruning_keeps_the_newest_complete_checkpoints(tmp_path):
    for s in (1, 2, 3):
        write_checkpoint(tmp_path, s, {"x": bytes([s])})
    (step_dir(tmp_path, 0)).mkdir()  # an old incomplete one
    assert prune_checkpoints(tmp_path, keep=2) == [0, 1]
    assert complete_steps(tmp_path) == [2, 3]


def test_frames_pack_and_a_cut_is_refused():
    frames = [b"", b"one", bytes(range(256)) * 10]
    assert unpack_frames(pack_frames(frames)) == frames
    with pytest.raises(CheckpointError, match="cut"):
        unpack_frames(pack_frames(frames)[:-3])


def test_a_bad_part_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="part name"):
        write_checkpoint(tmp_path, 1, {"../escape": b"x"})

# ------------------------------------------------------------------------------ the journal


def _segment(cid: str, seq: int, steps: int = 3) -> wire.Segment:
    header = wire.SegmentHeader(game="tw-default", collector_id=cid, seq=seq, episode_id=0, step0=3 * seq,
                                wm_version=0, llm_version=0, t_start=1.0, t_end=2.0)
    return wire.make_segment(header, [f"room {t}" for t in range(steps)], [["north", "south", "look"]] * steps,
                             [t % 3 for t in range(steps)], [0.5] * steps, [0] * steps, [False] * steps)


def test_the_journal_keeps_every_segment_and_its_connection_and_drops_a_cut_tail(tmp_path):
    hello = wire.Hello(collector_id="c0", game="tw-default", host="h", pid=42, capabilities=("reject_seq",), seed=5)
    journal = SegmentJournal(tmp_path, lambda cid: (b"id-c0", hello) if cid == "c0" else None)
    journal.open(7)
    frames = [wire.encode(_segment("c0", i)) for i in range(4)]
    for data in frames:
        journal.on_segment(AcceptedSegment(wire.decode(data), data, 5, "random"))
    journal.close()
    path = journal_path(tmp_path, 7)
    records = list(read_journal(path))
    assert records[0] == PeerRecord(b"id-c0", hello), "the connection is written once, before its first segment"
    assert [r.data for r in records[1:]] == frames and all(isinstance(r, SegmentRecord) for r in records[1:])
    full = path.read_bytes()
    path.write_bytes(full[:-10])  # killed inside the last write: that segment was never acknowledged
    assert [r.data for r in read_journal(path) if isinstance(r, SegmentRecord)] == frames[:3]


def test_the_prompt_queue_snapshot_restores_the_same_queue():
    q = PromptQueue(capacity=10, fire_threshold=4)
    q.extend(list("abcdef"))
    q.extend(list("ghijk"))  # 11 > 10: "a" is evicted
    chunks, counters = q.snapshot()
    again = PromptQueue(capacity=10, fire_threshold=4)
    again.restore(chunks, counters)
    assert again.summary() == q.summary() and len(again) == 10
    assert again.take(10, random.Random(0)) == list("bcdefghijk")

# ------------------------------------------------------------------------------ the PPO worker's state


def test_the_ppo_policy_and_optimiser_survive_a_checkpoint(tmp_path):
    """In-process runtime: weights and AdamW state of policy and critic come back bit for bit."""
    import torch

    from pzstream.config import load_config
    from pzstream.llm.tiny import resolve_model
    from pzstream.orz.runtime import InProcessRuntime
    from pzstream.roles.ppo_worker import load_runtime_state, runtime_state

    cfg = load_config(None, []).ppo
    first = InProcessRuntime(cfg, resolve_model("tiny"))
    for p in first.policy.model.parameters():  # a trained policy: weights moved, Adam moments filled
        p.grad = torch.ones_like(p)
    first.policy.trainable.optimizer.step()
    parts = runtime_state(first, episodes=3)
    write_checkpoint(tmp_path, 1, parts, {"episodes": 3})
    second = InProcessRuntime(cfg, resolve_model("tiny"))
    assert load_runtime_state(second, read_checkpoint(tmp_path).parts) == 3
    for a, b in zip(first.policy.model.state_dict().values(), second.policy.model.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = first.policy.trainable.optimizer.state_dict(), second.policy.trainable.optimizer.state_dict()
    assert len(s1["state"]) == len(s2["state"]) > 0
    for k, v in s1["state"].items():
        assert torch.equal(v["exp_avg"], s2["state"][k]["exp_avg"])

# ------------------------------------------------------------------------------ real processes


def _learner(run_dir: Path, address: str, *extra: str, resume: bool = False, log_name: str = "learner"):
    args = ["--role", "learner", "--learner", address, f"run.out_dir={run_dir.parent}", f"run.name={run_dir.name}",
            "trainer.min_replay_steps=20", "trainer.publish_every=5", "llm.enabled=false", "ppo.enabled=false",
            "hub.heartbeat_s=0.2", "hub.peer_timeout_heartbeats=10", "trainer.tensorboard=false", *extra]
    if resume:
        args += ["--resume", str(run_dir)]
    out = open(run_dir.parent / f"{log_name}.out", "wb")
    err = open(run_dir.parent / f"{log_name}.err", "wb")
    return launch(*args, stdout=out, stderr=err)


def _collector(tmp_path: Path, address: str, cid: str):
    out, err = open(tmp_path / f"{cid}.out", "wb"), open(tmp_path / f"{cid}.err", "wb")
    return launch("--role", "collector", "--learner", address, f"collector.id={cid}", "collector.policy=random",
                  "collector.segment_steps=5", "hub.heartbeat_s=0.2", "hub.peer_timeout_heartbeats=10",
                  "llm.enabled=false", "ppo.enabled=false", f"collector.seed={int(cid[1:])}", stdout=out, stderr=err)


def _last_json(path: Path) -> dict:
    return json.loads(path.read_text().strip().splitlines()[-1])


def _replay_keys(ckpt) -> list[tuple[str, int]]:
    return [(s.header.collector_id, s.header.seq) for s in map(wire.decode, unpack_frames(ckpt.parts["replay.frames"]))]


def _newest(run_dir: Path, proc: str):
    return read_checkpoint(run_dir / "checkpoints" / proc)


@pytest.mark.slow
def test_sigterm_writes_a_final_checkpoint_of_hub_and_trainer(tmp_path, address, procs):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    learner = _learner(run_dir, address, "checkpoint.every_s=1000")
    procs.append(learner)
    helpers = run_dir / "helpers.log"
    wait_until(lambda: helpers.exists() and "trainer checkpoint" in helpers.read_text(), 90,
          "the trainer's first checkpoint (it is ready)", learner, tmp_path / "learner.err")
    first = complete_steps(run_dir / "checkpoints" / "trainer")
    learner.send_signal(signal.SIGTERM)
    assert learner.wait(60) == 0, (tmp_path / "learner.err").read_text()[-3000:]
    hub, trainer = _newest(run_dir, "hub"), _newest(run_dir, "trainer")
    assert hub.step == trainer.step > first[-1], "the stop wrote one more checkpoint, for the hub and the trainer"
    assert _last_json(tmp_path / "learner.out")["checkpoint"]["step"] == hub.step


@pytest.mark.slow
def test_kill_9_at_a_random_point_then_resume_loses_no_acknowledged_segment(tmp_path, address, procs):
    """A learner (hub + trainer) with two collectors is killed with SIGKILL at a random moment after
    a checkpoint and resumed with --resume: versions and counters continue above the saved ones,
    the collectors reconnect and stream on, and every segment the hub acknowledged is in the
    resumed replay (or counted as expired or dropped), none twice."""
    rng = random.Random()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    learner = _learner(run_dir, address, "checkpoint.every_s=2")
    procs.append(learner)
    collectors = [_collector(tmp_path, address, f"c{i}") for i in range(2)]
    procs.extend(collectors)
    trainer_dir = run_dir / "checkpoints" / "trainer"

    def saved_with_data() -> bool:
        steps = complete_steps(trainer_dir)
        return bool(steps) and json.loads((step_dir(trainer_dir, steps[-1]) / MANIFEST).read_text())[
            "counters"]["replay_segments"] >= 40 and _newest(run_dir, "hub").manifest.counters["wm_version"] >= 1

    wait_until(saved_with_data, 150, "a trainer checkpoint with data and a published world model", learner,
          tmp_path / "learner.err")
    time.sleep(rng.uniform(0.0, 4.0))  # somewhere in the next checkpoint interval(s)
    before = _newest(run_dir, "hub")  # the last complete checkpoint before the kill (it may grow one more)
    learner.send_signal(signal.SIGKILL)
    learner.wait(10)
    saved = _newest(run_dir, "hub")
    assert saved.step >= before.step
    trainer_saved = _newest(run_dir, "trainer").manifest.counters
    saved_peers = {p["hello"]: p for p in msgpack.unpackb(saved.parts["peers.msgpack"])}
    acked_at_checkpoint = {(wire.decode(h).collector_id, p["last_seq"]) for h, p in saved_peers.items()}
    mirror_wm = max(int(p.stem.split("-v")[1]) for p in (run_dir / "weights").glob("wm-v*.pt"))

    resumed = _learner(run_dir, address, "checkpoint.every_s=2", resume=True, log_name="resumed")
    procs.append(resumed)
    err = tmp_path / "resumed.err"
    wait_until(lambda: err.exists() and "resumed from checkpoint" in err.read_text(), 60, "the resume", resumed, err)
    assert f"resumed from checkpoint {saved.step}" in err.read_text()
    wait_until(lambda: latest_on_disk(run_dir / "weights", "wm")[0] > mirror_wm, 120,
          "the resumed trainer's first version, above the saved ones", resumed, err)
    accepted_then = saved.manifest.counters["segments_accepted"]
    wait_until(lambda: "collector c0 joined" in err.read_text() and "collector c1 joined" in err.read_text(), 60,
          "both collectors back", resumed, err)
    time.sleep(4.0)  # they stream on
    for c in collectors:
        c.send_signal(signal.SIGTERM)
    for c in collectors:
        assert c.wait(60) == 0
    resumed.send_signal(signal.SIGTERM)
    assert resumed.wait(90) == 0, err.read_text()[-3000:]

    summary = _last_json(tmp_path / "resumed.out")
    assert summary["checkpoint"]["resumed_from"]["hub"] == saved.step
    assert summary["segments_accepted"] > accepted_then, "counters continue above the saved ones"
    assert summary["wm_version_published"] > mirror_wm
    final = _newest(run_dir, "trainer")
    assert final.manifest.counters["updates"] > trainer_saved["updates"], "the trainer's updates continue"
    assert "trainer resumed from checkpoint" in (run_dir / "helpers.log").read_text()
    assert set(summary["rejected_by_reason"]) <= {"duplicate_seq", "hello_required"}, summary["rejected_by_reason"]
    keys = _replay_keys(final)
    assert len(keys) == len(set(keys)), "no segment is in the replay twice"
    in_replay = set(keys)
    expired = final.manifest.counters["expired_segments"] + summary["trainer_dropped"]
    for i, c in enumerate(collectors):
        out = _last_json(tmp_path / f"c{i}.out")
        assert out["reconnects"] >= 1, "the collector noticed the kill and reconnected"
        acked = set(range(out["segments_sent"] - out["segments_unsent"]))  # answered before the exit's drain gave up
        # The hub may accept a segment whose acknowledgement the collector no longer heard (the drain gives up
        # after 3 x heartbeat + 2 s on a loaded host): it counts as unsent there, but never more than were sent.
        accepted = summary["per_collector"][f"c{i}"]["accepted"]
        assert len(acked) <= accepted <= out["segments_sent"], ("per-collector counts continue", accepted, out)
        missing = {(f"c{i}", s) for s in acked} - in_replay
        assert len(missing) <= expired, f"c{i}: {len(missing)} acknowledged segments lost: {sorted(missing)[:10]}"
    print(f"killed after checkpoint {saved.step}; replay {len(keys)} segments, expired or dropped {expired}, "
          f"accepted {summary['segments_accepted']} (saved {accepted_then}), wm v{mirror_wm} -> "
          f"v{summary['wm_version_published']}, rejected {summary['rejected_by_reason']}")
    before_checkpoint = {(cid, s) for cid, last in acked_at_checkpoint for s in range(last + 1)}
    assert before_checkpoint and len(before_checkpoint - in_replay) <= expired, "acknowledged before the checkpoint"
