"""Issue 14, item 3: injected failures under load. A world-model update that raises is logged,
counted and skipped; a trainer process that crashes is started again and resumes from the run's
checkpoints; a PPO episode that raises is counted failed and the next one runs. Through all of
it the hub keeps ingesting, versions keep rising, and no acknowledged segment is lost."""
from __future__ import annotations

import json
import multiprocessing as mp
import re
import signal
import time
from pathlib import Path

import anyio
import pytest
import torch
import zmq
import zmq.asyncio
from support import launch, wait_until as wait

from pzstream.config import ConfigError, load_config
from pzstream.hub.supervisor import HelperSpec, Supervisor
from pzstream.roles.faults import CRASH_EXIT_CODE, InjectedFault, UpdateFault, crashes_now, failing_reward, update_fails
from pzstream.stream import wire
from pzstream.stream.checkpoint import read_checkpoint, unpack_frames
from pzstream.stream.internal import HelperChannel, TrainerStats
from pzstream.stream.journal import SegmentRecord, journal_path, journal_steps, read_journal

# ------------------------------------------------------------------------------ the aids themselves


def test_the_fault_schedules():
    assert [a for a in range(1, 22) if update_fails(a, 7)] == [7, 14, 21]
    assert not any(update_fails(a, 0) for a in range(1, 100)), "0 = never"
    assert crashes_now(40, 40, resumed=False)
    assert not crashes_now(40, 40, resumed=True), "a trainer resumed from a checkpoint does not crash again"
    assert not crashes_now(39, 40, resumed=False) and not crashes_now(40, 0, resumed=False)


def test_an_armed_update_fault_raises_inside_the_forward_pass_and_only_then():
    model = torch.nn.Linear(3, 2)
    fault = UpdateFault(model)
    x = torch.ones(1, 3)
    model(x)
    fault.armed = True
    with pytest.raises(InjectedFault, match="fail_every"):
        model(x)
    fault.armed = False
    assert model(x).shape == (1, 2)
    fault.armed = True
    fault.remove()
    model(x)  # removed: armed or not, it is gone
    with pytest.raises(InjectedFault, match="episode 2"):
        failing_reward(2)(object(), "<answer>look</answer>")


def test_the_testing_aids_read_from_the_command_line_and_bad_values_name_the_key():
    cfg = load_config(None, ["ppo.fail_episodes=2", "trainer.fail_every=7", "trainer.crash_at_update=40"])
    assert cfg.ppo.fail_episodes == [2] and cfg.trainer.fail_every == 7 and cfg.trainer.crash_at_update == 40
    assert load_config(None, ["ppo.fail_episodes=2,5"]).ppo.fail_episodes == [2, 5]
    assert load_config(None, ["ppo.fail_episodes=[3]"]).ppo.fail_episodes == [3]
    assert load_config(None, []).ppo.fail_episodes == [] and load_config(None, []).trainer.fail_every == 0
    for bad, key in (("ppo.fail_episodes=0", "ppo.fail_episodes"), ("ppo.fail_episodes=two", "ppo.fail_episodes"),
                     ("trainer.fail_every=-1", "trainer.fail_every")):
        with pytest.raises(ConfigError, match=re.escape(key)):
            load_config(None, [bad])


# ------------------------------------------------------------------------------ the supervisor


def _talk(inbox: str, outbox: str) -> None:
    """A helper that sends a message its client cannot handle, a frame that is no message, then a good one."""
    channel = HelperChannel(inbox, outbox, linger_ms=2000)
    channel.send(TrainerStats({"poison": 1.0}))
    channel._push.send_multipart([b"\xc1"])  # not msgpack: what a broken helper might send
    channel.send(TrainerStats({"updates": 2.0}))
    time.sleep(30)  # stopped by the supervisor
    channel.close()


def _start_talking(inbox: str, outbox: str) -> mp.process.BaseProcess:
    proc = mp.get_context("spawn").Process(target=_talk, args=(inbox, outbox), daemon=True)
    proc.start()
    return proc


class PickyClient:
    def __init__(self) -> None:
        self.got: list[dict] = []

    async def on_message(self, msg) -> None:
        if "poison" in msg.stats:
            raise OSError("no space left on device")  # e.g. weights that cannot be written to the mirror
        self.got.append(dict(msg.stats))

    def on_start(self, pid: int) -> None:
        pass

    def on_exit(self, why: str) -> None:
        pass


def test_a_helper_message_that_cannot_be_handled_is_counted_and_the_hub_serves_on():
    client = PickyClient()

    async def main() -> Supervisor:
        ctx = zmq.asyncio.Context()
        sup = Supervisor(ctx)
        sup.add(HelperSpec("talker", "test helper", _start_talking, stop_grace_s=0.5), client)
        with anyio.move_on_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sup.run)
                while not client.got:
                    await anyio.sleep(0.1)
                tg.cancel_scope.cancel()
        sup.close()
        ctx.destroy(linger=0)
        return sup

    sup = anyio.run(main)
    assert client.got == [{"updates": 2.0}], "the message after the failures still arrives"
    assert sup.helpers["talker"].message_errors == 2 and sup.helpers["talker"].restarts == 0
    assert sup.summary()["talker"]["message_errors"] == 2


# ------------------------------------------------------------------------------ real processes

HEARTBEAT = ["hub.heartbeat_s=0.2", "hub.peer_timeout_heartbeats=10"]


def learner(run_dir: Path, address: str, *extra: str) -> tuple:
    """A learner (hub + its helpers) writing into ``run_dir``; its stdout and stderr go to files beside it."""
    out, err = run_dir.parent / "learner.out", run_dir.parent / "learner.err"
    proc = launch("--role", "learner", "--learner", address, f"run.out_dir={run_dir.parent}",
                  f"run.name={run_dir.name}", "trainer.tensorboard=false", *HEARTBEAT, *extra,
                  stdout=open(out, "wb"), stderr=open(err, "wb"))
    return proc, err


def collector(tmp_path: Path, address: str, cid: str, *extra: str):
    return launch("--role", "collector", "--learner", address, f"collector.id={cid}", "collector.segment_steps=5",
                  f"collector.seed={int(cid[1:])}", *HEARTBEAT, *extra,
                  stdout=open(tmp_path / f"{cid}.out", "wb"), stderr=open(tmp_path / f"{cid}.err", "wb"))


def text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def last_json(path: Path) -> dict:
    return json.loads(path.read_text().strip().splitlines()[-1])


def published(run_dir: Path, model: str) -> int:
    """The newest version of ``model`` the hub published, from the run's weights mirror (0: none yet)."""
    from pzstream.stream.weights import latest_on_disk

    found = latest_on_disk(run_dir / "weights", model)
    return found[0] if found is not None else 0


def journal_keys(run_dir: Path) -> list[tuple[str, int]]:
    """(collector id, seq) of every segment in the run's journals, in the order the hub accepted them."""
    directory = run_dir / "checkpoints" / "journal"
    keys = []
    for step in journal_steps(directory):
        for rec in read_journal(journal_path(directory, step)):
            if isinstance(rec, SegmentRecord):
                h = wire.decode(rec.data).header
                keys.append((h.collector_id, h.seq))
    return keys


def acked(out: dict) -> int:
    """Segments a collector that stopped cleanly had acknowledged: its seqs 0..acked-1."""
    return out["segments_sent"] - out["segments_unsent"]


def stop_all(collectors, learner_proc, err: Path, run_dir: Path) -> tuple[dict, list[dict], list[tuple[str, int]]]:
    """SIGTERM the collectors (they drain: all they sent is answered), read the hub's journals, then
    SIGTERM the learner. Returns its summary, the collectors' last JSON lines and the journal's keys."""
    for c in collectors:
        c.send_signal(signal.SIGTERM)
    for c in collectors:
        assert c.wait(60) == 0
    keys = journal_keys(run_dir)  # before the learner's last checkpoint may prune old journals
    learner_proc.send_signal(signal.SIGTERM)
    assert learner_proc.wait(120) == 0, text(err)[-3000:]
    outs = [last_json(run_dir.parent / f"c{i}.out") for i in range(len(collectors))]
    return last_json(run_dir.parent / "learner.out"), outs, keys


def assert_every_acked_segment_once(summary: dict, outs: list[dict], keys: list[tuple[str, int]] | None) -> None:
    """Each collector's acknowledged seqs are counted as accepted and, given the run's journal
    ``keys`` (all its journals kept), are in it exactly once."""
    for i, out in enumerate(outs):
        cid = f"c{i}"
        assert out["segments_unsent"] == 0, out
        assert summary["per_collector"][cid]["accepted"] == acked(out)
        if keys is not None:
            assert len(keys) == len(set(keys)), "no segment is stored twice"
            assert sorted(s for c, s in keys if c == cid) == list(range(acked(out))), f"{cid}: journal != acknowledged"
    assert set(summary["rejected_by_reason"]) <= {"duplicate_seq", "hello_required"}, summary["rejected_by_reason"]


@pytest.mark.slow
def test_failed_updates_and_a_crashed_trainer_do_not_stop_training_or_lose_segments(tmp_path, address, procs):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc, err = learner(run_dir, address, "trainer.fail_every=7", "trainer.crash_at_update=40",
                        "trainer.min_replay_steps=20", "trainer.publish_every=5", "trainer.log_every=5",
                        "checkpoint.every_s=2", "llm.enabled=false", "ppo.enabled=false")
    procs.append(proc)
    collectors = [collector(tmp_path, address, f"c{i}", "collector.policy=random", "llm.enabled=false",
                            "ppo.enabled=false") for i in range(2)]
    procs.extend(collectors)
    helpers = run_dir / "helpers.log"

    wait(lambda: "world-model update 7 failed" in text(helpers), 180, "the injected update failure", proc, err)
    assert "InjectedFault" in text(helpers), "logged with what raised"
    v_failed, t_failed = published(run_dir, "wm"), time.monotonic()
    wait(lambda: published(run_dir, "wm") >= v_failed + 2, 90, "new versions after the failed update", proc, err)
    after_failure_s = time.monotonic() - t_failed

    wait(lambda: f"world-model trainer died (exit code {CRASH_EXIT_CODE})" in text(err), 120, "the trainer's crash",
         proc, err)
    v_crash, t_crash = published(run_dir, "wm"), time.monotonic()
    wait(lambda: published(run_dir, "wm") > v_crash, 150, "the restarted trainer's first version", proc, err)
    restart_s = time.monotonic() - t_crash
    wait(lambda: published(run_dir, "wm") >= v_crash + 3, 90, "versions rising after the restart", proc, err)
    resumed = re.search(r"trainer resumed from checkpoint (\d+): (\d+) updates", text(helpers))
    assert resumed, "the restarted trainer resumed from the run's checkpoints"
    summary, outs, _ = stop_all(collectors, proc, err, run_dir)

    assert summary["trainer_restarts"] == 1, "crash_at_update crashes only a trainer that did not resume"
    assert summary["trainer_failed_updates"] >= 5, summary  # attempts 7, 14, ..., 35 of the first trainer at least
    assert summary["wm_version_published"] >= v_crash + 3
    final = read_checkpoint(run_dir / "checkpoints" / "trainer")
    assert final.manifest.counters["updates"] >= int(resumed.group(2)) + 10, "the resumed trainer's updates continue"
    assert_every_acked_segment_once(summary, outs, None)  # checkpoints every 2 s prune the journals: the replay tells
    replay = [(s.header.collector_id, s.header.seq) for s in map(wire.decode, unpack_frames(final.parts["replay.frames"]))]
    assert len(replay) == len(set(replay)), "no segment is in the replay twice"
    expired = final.manifest.counters["expired_segments"] + summary["trainer_dropped"]
    missing = {(f"c{i}", s) for i, out in enumerate(outs) for s in range(acked(out))} - set(replay)
    assert len(missing) <= expired, f"{len(missing)} acknowledged segments missing from the trainer's replay"
    print(f"trainer faults: {summary['trainer_failed_updates']} failed updates skipped (2 newer versions "
          f"{after_failure_s:.1f}s after the first), crash at update 40 -> restarted trainer resumed at update "
          f"{resumed.group(2)} and published v{v_crash + 1} {restart_s:.1f}s after the crash was seen; "
          f"wm v{summary['wm_version_published']}, accepted {summary['segments_accepted']}, replay {len(replay)}")


@pytest.mark.slow
def test_a_failed_ppo_episode_is_counted_and_the_next_one_runs(tmp_path, address, procs):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ppo = ["ppo.enabled=true", "ppo.runtime=inprocess", "ppo.fire_threshold=8", "ppo.rollout_batch_size=4",
           "ppo.n_samples_per_prompt=2", "ppo.micro_train_batch_size=4", "ppo.policy_update_steps=2",
           "ppo.critic_update_steps=2"]
    proc, err = learner(run_dir, address, "ppo.fail_episodes=2", "trainer.enabled=false", *ppo)
    procs.append(proc)
    collectors = [collector(tmp_path, address, f"c{i}", "collector.policy=mcts", "search.num_simulations=4")
                  for i in range(2)]
    procs.extend(collectors)

    wait(lambda: "PPO episode 1 done" in text(err), 240, "the first episode", proc, err)
    wait(lambda: "PPO episode 2 failed" in text(err), 180, "the injected episode failure", proc, err)
    t_failed = time.monotonic()
    wait(lambda: "PPO episode 3 done" in text(err), 180, "the episode after the failed one", proc, err)
    next_ok_s = time.monotonic() - t_failed
    wait(lambda: published(run_dir, "llm") >= 2, 30, "the LLM versions of episodes 1 and 3", proc, err)
    summary, outs, keys = stop_all(collectors, proc, err, run_dir)

    assert summary["ppo_episodes_failed"] == 1 and summary["ppo_episodes_ok"] >= 2, summary
    assert summary["ppo_episodes_fired"] >= 3
    assert summary["ppo"]["worker_restarts"] == 0, "a failed episode does not cost the worker"
    assert any("InjectedFault" in e for e in summary["ppo"]["errors"]), summary["ppo"]["errors"]
    assert summary["llm_version_published"] == summary["ppo_episodes_ok"], "each episode that ran publishes, the failed one not"
    assert_every_acked_segment_once(summary, outs, keys)
    print(f"PPO faults: episode 2 failed on purpose, episode 3 done {next_ok_s:.1f}s later; fired "
          f"{summary['ppo_episodes_fired']}, ok {summary['ppo_episodes_ok']}, llm v{summary['llm_version_published']}, "
          f"accepted {summary['segments_accepted']}")
