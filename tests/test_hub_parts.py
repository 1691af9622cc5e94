"""The hub's parts on their own: typed helper messages, the supervisor restarting a helper,
the prompt queue reading only what an episode takes, the returns summary."""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import random

import anyio
import msgpack
import pytest
import zmq
import zmq.asyncio

from pzstream.hub.parts import AcceptedSegment
from pzstream.hub.prompt_queue import PromptQueue
from pzstream.hub.report import SERIES_KEPT, ReturnTracker
from pzstream.hub.supervisor import HelperSpec, Supervisor
from pzstream.stream import internal, wire
from pzstream.stream.internal import (
    EpisodeRequest,
    EpisodeResult,
    InternalError,
    NewWeights,
    SegmentFrame,
    Stop,
    Taken,
    TrainerStats,
    WorkerFatal,
    WorkerReady,
)


@pytest.mark.parametrize("msg", [
    Stop(), SegmentFrame(b"\x81segment bytes"), NewWeights("wm", b"\x00" * 1000), TrainerStats({"updates": 3.0}), Taken(4096),
    EpisodeRequest(7, [{"game": "g", "history": [["o", "a", 1.0]]}]), WorkerReady("inprocess", "torch"),
    WorkerFatal("ImportError: no ray"),
    EpisodeResult(2, True, {"reward_mean": 0.5}, {"g": 8}, [0.0, 1.0], payload=b"weights"),
    EpisodeResult(3, False, error="ValueError: x", traceback="Traceback ..."),
])
def test_helper_messages_round_trip(msg):
    frames = internal.encode(msg)
    assert internal.decode(frames) == msg
    assert len(frames) == (2 if hasattr(msg, "payload") else 1)  # bytes ride in a frame of their own


@pytest.mark.parametrize("frames, words", [
    ([], "no frames"), ([b"\xc1"], "not msgpack"), ([msgpack.packb({"kind": "teleport"})], "unknown"),
    ([internal.encode(NewWeights("wm", b"x"))[0]], "needs 2 frames"),
    ([internal.encode(Stop())[0], b"extra"], "takes 1 frame"),
])
def test_a_broken_helper_message_is_an_error_naming_why(frames, words):
    with pytest.raises(InternalError, match=words):
        internal.decode(frames)


def _exit_at_once(inbox: str, outbox: str) -> None:
    raise SystemExit(3)


def _start_dying(inbox: str, outbox: str) -> mp.process.BaseProcess:
    proc = mp.get_context("spawn").Process(target=_exit_at_once, args=(inbox, outbox), daemon=True)
    proc.start()
    return proc


class Recorder:
    def __init__(self) -> None:
        self.starts: list[int] = []
        self.exits: list[str] = []

    async def on_message(self, msg) -> None:
        pass

    def on_start(self, pid: int) -> None:
        self.starts.append(pid)

    def on_exit(self, why: str) -> None:
        self.exits.append(why)


def test_the_supervisor_restarts_a_helper_that_dies():
    client = Recorder()

    async def main() -> Supervisor:
        ctx = zmq.asyncio.Context()
        sup = Supervisor(ctx)
        sup.add(HelperSpec("dying", "test helper", _start_dying, restart_delay_s=0.1), client)
        with anyio.move_on_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sup.run)
                while len(client.starts) < 3:
                    await anyio.sleep(0.1)
                tg.cancel_scope.cancel()
        sup.close()
        ctx.destroy(linger=0)
        return sup

    sup = anyio.run(main)
    assert len(client.starts) >= 3 and len(set(client.starts)) == len(client.starts), "a new process each time"
    assert sup.helpers["dying"].restarts >= 2
    assert all("test helper died (exit code 3)" in why for why in client.exits)


def _in_a_long_task(inbox: str, outbox: str) -> None:
    """A helper in a task that reads no message for ten minutes (a PPO episode on a slow CPU)."""
    import time

    from pzstream.stream.internal import HelperChannel

    channel = HelperChannel(inbox, outbox, linger_ms=0)
    time.sleep(600)
    channel.close()


def _idle_then_saves(inbox: str, outbox: str) -> None:
    """An idle helper: on Stop it takes a second (its last checkpoint), then exits cleanly."""
    import time

    from pzstream.stream.internal import HelperChannel, Stop, WorkerReady

    channel = HelperChannel(inbox, outbox, linger_ms=1000)
    channel.send(WorkerReady("test", "listening"))
    while not isinstance(channel.receive() if channel.wait(100) else None, Stop):
        pass
    time.sleep(1.0)
    channel.close()


def _spawner(target):
    def start(inbox: str, outbox: str) -> mp.process.BaseProcess:
        proc = mp.get_context("spawn").Process(target=target, args=(inbox, outbox), daemon=True)
        proc.start()
        return proc
    return start


class BusyRecorder(Recorder):
    def busy(self) -> str | None:
        return "a ten-minute test task" if self.starts else None


class ReadyRecorder(Recorder):
    ready = False

    async def on_message(self, msg) -> None:
        self.ready = self.ready or isinstance(msg, WorkerReady)


def test_stopping_does_not_wait_for_a_busy_helpers_task_and_lets_an_idle_one_finish():
    """Issue 21: a run past its deadline waited 60 s for a PPO worker in an episode. A helper busy with
    a task is stopped within BUSY_STOP_GRACE_S (terminated), an idle one still gets its grace to save,
    and both are waited for side by side."""
    import time

    from pzstream.hub.supervisor import BUSY_STOP_GRACE_S

    busy, idle = BusyRecorder(), ReadyRecorder()

    async def main() -> tuple[Supervisor, float, dict[str, int | None]]:
        ctx = zmq.asyncio.Context()
        sup = Supervisor(ctx)
        sup.add(HelperSpec("busy", "busy helper", _spawner(_in_a_long_task), stop_grace_s=60.0), busy)
        sup.add(HelperSpec("idle", "idle helper", _spawner(_idle_then_saves), stop_grace_s=60.0), idle)
        with anyio.move_on_after(120):  # until the idle one listens (a Stop sent before would be lost)
            async with anyio.create_task_group() as tg:
                tg.start_soon(sup.run)
                while not (idle.ready and busy.starts):
                    await anyio.sleep(0.1)
                tg.cancel_scope.cancel()
        procs = {name: h.proc for name, h in sup.helpers.items()}
        t0 = time.monotonic()
        sup.close()
        took = time.monotonic() - t0
        ctx.destroy(linger=0)
        return sup, took, {name: p.exitcode for name, p in procs.items()}

    sup, took, codes = anyio.run(main)
    assert busy.starts and idle.ready
    assert took < BUSY_STOP_GRACE_S + 5, f"stopping took {took:.1f}s"
    assert codes["busy"] is not None and codes["busy"] < 0, codes  # terminated by a signal
    assert codes["idle"] == 0, codes  # finished by itself after its second's work


class CountingSteps:
    """A sequence that counts how many of its items were built."""

    def __init__(self, n: int, tag: str) -> None:
        self.n, self.tag, self.built = n, tag, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> str:
        self.built += 1
        return f"{self.tag}{i}"


def test_the_prompt_queue_builds_only_the_samples_an_episode_takes():
    q = PromptQueue(capacity=100, fire_threshold=50)
    chunks = [CountingSteps(30, c) for c in "abcde"]  # 150 steps: the oldest 50 are evicted unread
    for c in chunks:
        q.extend(c)
    assert len(q) == 100 and q.evicted == 50 and q.ready()
    got = q.take(8, random.Random(0))
    assert len(got) == 8 and sum(c.built for c in chunks) == 8
    assert all(s[0] in "bcde" for s in got) and not any(s == f"b{i}" for i in range(20) for s in got)
    assert q.taken == 8 and q.skipped == 92 and len(q) == 0


def _episode_end(cid: str, episode: int, reward: float) -> AcceptedSegment:
    header = wire.SegmentHeader(game="g", collector_id=cid, seq=episode, episode_id=episode, step0=0,
                                wm_version=0, llm_version=0, t_start=1.0, t_end=2.0)
    seg = wire.make_segment(header, ["room", "hall"], [["north", "look"]] * 2, [0, 1], [0.0, reward], [0, 1], [False, True])
    return AcceptedSegment(seg, b"", None, "random")


def test_the_returns_summary_says_when_its_series_is_cut():
    """Issue 10: the summary kept the newest 200 returns of a collector without saying so."""
    tracker = ReturnTracker()
    for k in range(SERIES_KEPT + 50):
        tracker.on_segment(_episode_end("long", k, float(k)))
    for k in range(3):
        tracker.on_segment(_episode_end("short", k, 1.0))
    s = tracker.summary()
    assert s["long"]["episodes"] == SERIES_KEPT + 50 and len(s["long"]["series"]) == SERIES_KEPT
    assert s["long"]["series_truncated_to"] == SERIES_KEPT and s["long"]["series"][-1][1] == SERIES_KEPT + 49
    assert s["long"]["mean"] == round(sum(range(SERIES_KEPT + 50)) / (SERIES_KEPT + 50), 3)  # over every episode
    assert s["short"]["series_truncated_to"] is None and len(s["short"]["series"]) == 3
    assert s["short"]["policy"] == "random"


def test_queued_steps_kept_as_bytes_give_the_samples_the_tracker_gives():
    from pzstream.hub.ppo import StoredSteps
    from pzstream.orz.samples import EpisodeTracker

    def part(step0: int, done: bool) -> wire.Segment:
        header = wire.SegmentHeader(game="g", collector_id="c", seq=step0, episode_id=4, step0=step0,
                                    wm_version=0, llm_version=0, t_start=1.0, t_end=2.0)
        return wire.make_segment(header, [f"room {step0 + t}" for t in range(3)], [["north", "south", "look"]] * 3,
                                 [t % 3 for t in range(3)], [0.5] * 3, [0] * 3, [False, False, done])

    segs = [part(0, False), part(3, True)]
    eager, lazy = EpisodeTracker(history_len=2), EpisodeTracker(history_len=2)
    want = [s for seg in segs for s in eager.add(seg, seed_base=10)]
    stored = [StoredSteps(lazy.advance(seg, seed_base=10), wire.encode(seg), wire.DEFAULT_LIMITS) for seg in segs]
    got = [chunk[t] for chunk in stored for t in range(len(chunk))]
    assert got == want and [s.prefix for s in got][-1] == ["north", "south", "look", "north", "south"]


def test_the_hub_numbers_every_weights_version(tmp_path):
    """One authority: helpers hand over bytes, PublishedVersions says which version they are."""
    from pzstream.hub.publisher import PublishedVersions
    from pzstream.stream.weights import WeightsStore, read_mirrored

    versions = PublishedVersions(WeightsStore(keep=2, directory=tmp_path))

    async def publish() -> list[int]:
        return [(await versions.publish(m, d)).version for m, d in [("wm", b"a"), ("llm", b"b"), ("wm", b"c")]]

    assert anyio.run(publish) == [1, 1, 2]
    assert (versions.wm, versions.llm) == (2, 1)
    assert read_mirrored(tmp_path, "wm") == (2, b"c")
    with pytest.raises(ValueError, match="unknown model"):
        anyio.run(versions.publish, "critic", b"x")


def test_a_restarted_hub_numbers_on_from_its_mirror(tmp_path):
    """Versions only grow within a run: collectors that outlived a hub hold versions it published."""
    from pzstream.hub.publisher import PublishedVersions
    from pzstream.stream.weights import WeightsStore

    first = PublishedVersions(WeightsStore(directory=tmp_path))
    for data in (b"a", b"b", b"c"):
        anyio.run(first.publish, "wm", data)
    again = PublishedVersions(WeightsStore(directory=tmp_path))
    assert (again.wm, again.llm) == (3, 0)
    assert anyio.run(again.publish, "wm", b"d").version == 4
    assert PublishedVersions(WeightsStore(directory=tmp_path / "fresh")).wm == 0


class PipeRecorder:
    """The trainer's inbox as the hub's TrainerLink sees it (the supervisor's Helper.send): takes all."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, msg) -> bool:
        self.sent.append(msg.payload)
        return True


def test_the_trainer_link_forwards_at_most_pipe_bytes_not_yet_taken(tmp_path):
    from pzstream.hub.parts import AcceptedSegment
    from pzstream.hub.publisher import PublishedVersions
    from pzstream.hub.trainer_link import TrainerLink
    from pzstream.stream.weights import WeightsStore

    link = TrainerLink(PublishedVersions(WeightsStore(directory=tmp_path)), pipe_bytes=1000)
    link.helper, link.attached = PipeRecorder(), True
    frame = AcceptedSegment(segment=None, data=b"x" * 300, seed=None, policy="random")
    for _ in range(5):
        link.on_segment(frame)
    assert (link.forwarded, link.dropped, link.dropped_for_bytes, link.inflight_bytes) == (3, 2, 2, 900)
    anyio.run(link.on_message, Taken(600))  # the trainer read two of them
    link.on_segment(frame)
    link.on_segment(frame)
    assert (link.forwarded, link.dropped_for_bytes, link.inflight_bytes) == (5, 2, 900)
    link.on_start(pid=1)  # a new trainer process starts with an empty pipe
    assert link.inflight_bytes == 0


def test_ppo_episodes_are_paced_by_min_interval(tmp_path, monkeypatch):
    """ppo.min_interval_s: a full queue waits until the interval since the last start has passed."""
    from pzstream.config import load_config
    from pzstream.hub import ppo as ppo_part
    from pzstream.hub.publisher import PublishedVersions
    from pzstream.stream.weights import WeightsStore

    class Helper:
        def __init__(self):
            self.sent: list[EpisodeRequest] = []

        def send(self, msg) -> bool:
            self.sent.append(msg)
            return True

    now = [1000.0]
    monkeypatch.setattr(ppo_part.time, "monotonic", lambda: now[0])
    cfg = load_config(None, ["ppo.enabled=true", "ppo.fire_threshold=8", "ppo.rollout_batch_size=8",
                             "ppo.min_interval_s=30"])
    part = ppo_part.PPOEpisodes(cfg, PublishedVersions(WeightsStore(directory=tmp_path)), tmp_path, wire.DEFAULT_LIMITS)
    part.helper, part.state.ready = Helper(), True
    header = wire.SegmentHeader(game="g", collector_id="c", seq=0, episode_id=1, step0=0, wm_version=0,
                                llm_version=0, t_start=1.0, t_end=2.0)

    def segment(seq: int) -> AcceptedSegment:
        seg = wire.make_segment(dataclasses.replace(header, seq=seq, step0=8 * seq), [f"room {t}" for t in range(8)],
                                [["north", "look"]] * 8, [t % 2 for t in range(8)], [0.0] * 8, [0] * 8, [False] * 8,
                                root_values=[0.5] * 8)  # searched steps: each one a prompt sample
        return AcceptedSegment(segment=seg, data=wire.encode(seg), seed=0, policy="mcts")

    part.on_segment(segment(0))
    assert len(part.helper.sent) == 1  # the first episode fires at once
    part.state.running = None  # it ended
    now[0] += 10
    part.on_segment(segment(1))
    assert len(part.helper.sent) == 1 and not part.due()  # 10 s < 30 s: the full queue waits
    now[0] += 20
    assert part.maybe_fire() and len(part.helper.sent) == 2  # the watch's next tick fires it


def test_each_return_carries_its_games_env_steps_so_far():
    """A learning curve against env steps: every finished episode records how many steps its game
    has had from all collectors at that moment (2 steps a segment here)."""
    tracker = ReturnTracker()
    tracker.on_segment(_episode_end("a", 0, 1.0))
    tracker.on_segment(_episode_end("b", 0, 2.0))
    tracker.on_segment(_episode_end("a", 1, 3.0))
    s = tracker.summary()
    assert [tuple(x[1:]) for x in s["a"]["series"]] == [(1.0, 2), (3.0, 6)]
    assert [tuple(x[1:]) for x in s["b"]["series"]] == [(2.0, 4)]


def test_the_report_reads_returns_per_game_from_the_series_with_env_steps():
    """The periodic report's returns per game read the (time, return, env steps) series: every hub
    report of a run whose collectors had finished an episode raised before this was fixed."""
    from pzstream.hub.report import returns_by_game

    tracker = ReturnTracker()
    tracker.on_segment(_episode_end("a", 0, 1.0))
    tracker.on_segment(_episode_end("a", 1, 3.0))
    tracker.on_segment(_episode_end("b", 0, 5.0))
    got = returns_by_game(tracker, {"a": "zork1", "b": "zork1"})
    assert got["zork1"].episodes == 3 and got["zork1"].recent_mean == 3.0 and got["zork1"].collectors == 2
    assert tracker.recent_means() == {"a": 2.0, "b": 5.0}


def test_the_report_line_counts_publishes_and_no_line_is_logged_per_publish(caplog):
    """Issue 21: the quick start printed one line per world-model publish (about one a second),
    burying the periodic report. Publishes are counted in the report line (newest version, how many
    in all and since the report before) and each publish logs at DEBUG only."""
    import logging
    import time

    from support import HubThread, free_base_port, hub_config

    address = f"tcp://127.0.0.1:{free_base_port()}"
    with caplog.at_level(logging.INFO, logger="pzstream.learner"):
        hub = HubThread(hub_config(address, "hub.report_every_s=0.3")).start()
        try:
            for _ in range(3):
                hub.call(hub.hub.publish, "wm", b"world-model weights")
            hub.call(hub.hub.publish, "llm", b"llm weights")

            def lines() -> list[str]:
                return [r.getMessage() for r in caplog.records if r.name == "pzstream.learner"]

            deadline = time.monotonic() + 30
            while not any("published 3, 0 new" in line for line in lines()) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            hub.stop()
    reports = [line for line in lines() if line.startswith("segments ")]
    assert any("wm v3 (published 3, 3 new;" in line and "llm v1 (published 1, 1 new)" in line for line in reports), reports
    assert any("wm v3 (published 3, 0 new;" in line for line in reports), reports  # the next report: none new
    assert not any(line.startswith("published ") for line in lines())


def test_the_summarys_llm_prior_sums_the_peers_counts_and_weights_the_shift_by_moves():
    from pzstream.hub.report import llm_prior_summary

    peers = [{"prior_moves": 30.0, "prior_errors": 1.0, "prior_fallbacks": 2.0, "prior_ignored": 30.0, "prior_shift_mean": 0.0},
             {"prior_moves": 10.0, "prior_errors": 0.0, "prior_fallbacks": 0.0, "prior_ignored": 0.0, "prior_shift_mean": 0.2},
             {"env_steps": 50.0},  # random play, or no LLM: not counted
             {"prior_moves": float("nan"), "prior_ignored": float("inf")}]  # a peer's stats may say anything
    assert llm_prior_summary(peers) == {"moves": 40.0, "errors": 1.0, "fallbacks": 2.0, "ignored": 30.0,
                                        "shift_mean": 0.05}
