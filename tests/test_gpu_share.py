"""schedule.gpu_share=auto: the trainer paced by the search servers' own measured ms a batch
(pzstream/hub/gpu_share.py): the pure rule, the part's outbox, the trainer's limit, and a real run."""
from __future__ import annotations

import json

import pytest
from support import launch

from pzstream.hub.gpu_share import GpuSharePart, PaceState, batch_bucket, next_pace
from pzstream.roles.trainer import update_limit
from pzstream.stream import internal
from pzstream.stream.report_record import SearchLoad
from pzstream.stream.transport import free_base_port


def load(ms: float, batch: float = 6.0) -> SearchLoad:
    return SearchLoad(servers=1, roots_per_s=batch * 1000 / ms, mean_batch=batch, ms_per_batch=ms, prior_share=0.3,
                      gpu_util=None)


def step(state: PaceState, ms: float, updates: float, batch: float = 6.0) -> PaceState:
    return next_pace(state, load(ms, batch), updates, 10.0, slowdown=1.5, min_rate=1.0)


def test_the_rule_learns_the_pace_alone_then_halves_and_releases_the_trainer():
    s = step(PaceState(), 100.0, 0)                 # trainer idle: the pace alone at batches of ~8
    s = step(s, 90.0, 0)                            # the best one is kept
    assert s.alone_ms == {batch_bucket(6.0): 90.0} and s.limit is None
    s = step(s, 200.0, 200)                         # 2.2x slower with the trainer at 20 updates/s
    assert s.limit == 10.0 and "2.22x" in s.why
    s = step(s, 200.0, 100)
    assert s.limit == 5.0                           # still slowed: halved again
    for _ in range(5):
        s = step(s, 200.0, 50)
    assert s.limit == 1.0                           # never below schedule.min_updates_per_s
    s = step(s, 100.0, 10)                          # 1.11x: room, and the limit binds (10 updates in 10 s)
    assert s.limit == 1.25
    s = step(s, 95.0, 5)                            # room, and the trainer runs below its limit: lifted
    assert s.limit is None and "unlimited" in s.why
    s = step(s, 120.0, 200)                         # between room and the bound: kept
    assert s.limit is None and "kept" in s.why


def test_the_rule_compares_like_batches_and_ignores_intervals_without_searches():
    s = step(PaceState(), 50.0, 0, batch=4)
    assert step(s, 400.0, 200, batch=64).limit is None  # no pace alone at batches of ~64: nothing to compare
    assert next_pace(s, None, 200, 10.0, 1.5, 1.0) == s  # no search server reported
    idle = SearchLoad(servers=1, roots_per_s=0.0, mean_batch=None, ms_per_batch=None, prior_share=None, gpu_util=None)
    assert next_pace(s, idle, 200, 10.0, 1.5, 1.0) == s  # a server that searched nothing in the interval
    assert [batch_bucket(b) for b in (0.5, 1, 3, 6, 128)] == [0, 0, 2, 3, 7]


def test_the_part_reads_the_servers_counters_and_sends_only_changes():
    stats = {"roots": 0.0, "batches": 0.0, "search_s": 0.0, "prior_s": 0.0}
    updates = [0.0]
    sent: list[float] = []
    part = GpuSharePart(10.0, 1.5, 1.0, lambda: [dict(stats), {"env_steps": 5.0}], lambda: updates[0],
                        lambda r: sent.append(r) or True)

    def interval(t: float, batches: float, ms: float, new_updates: float) -> None:
        stats["roots"] += 6 * batches
        stats["batches"] += batches
        stats["search_s"] += batches * ms / 1000
        updates[0] += new_updates
        part.step(now=t)

    part.step(now=0.0)
    interval(10.0, 100, 100.0, 0)       # alone
    interval(20.0, 50, 200.0, 200)      # slowed by the trainer: a limit is sent
    interval(30.0, 50, 200.0, 100)      # still slowed: halved
    interval(40.0, 70, 140.0, 50)       # between room and bound: nothing sent
    assert sent == [10.0, 5.0] and part.changes == 2
    interval(50.0, 100, 100.0, 10)      # room and the limit does not bind: lifted (0: no limit)
    assert sent == [10.0, 5.0, 0.0]
    assert part.summary()["alone_ms"] == {"8": 100.0} and part.summary()["limit_updates_per_s"] is None


def test_the_trainer_takes_the_lower_limit_and_pace_crosses_the_helper_channel():
    assert update_limit(0.0, None) == 0.0 and update_limit(5.0, None) == 5.0
    assert update_limit(0.0, 2.5) == 2.5 and update_limit(5.0, 2.5) == 2.5 and update_limit(2.0, 8.0) == 2.0
    msg = internal.Pace(max_updates_per_s=2.5)
    assert internal.decode(internal.encode(msg)) == msg


def test_gpu_share_is_checked_in_the_config():
    from pzstream.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="gpu_share=auto paces the asynchronous schedule"):
        load_config(None, ["schedule.gpu_share=auto", "schedule.mode=alternating"])
    with pytest.raises(ConfigError, match="search_slowdown"):
        load_config(None, ["schedule.search_slowdown=0.9"])


@pytest.mark.slow
def test_a_real_trainer_is_paced_when_it_slows_the_search_server():
    """--role all with a search server and the trainer on this CPU's cores: the search's pace alone is
    measured before the trainer starts (min_replay_steps), the trainer then slows it (the cores are shared)
    and gets a limit, which it reports."""
    addr = f"tcp://127.0.0.1:{free_base_port()}"
    p = launch("--role", "all", "--max-seconds", "60", "--learner", addr, "run.name=test-gpu-share",
               "llm.enabled=false", "ppo.enabled=false", "search_server.start=always", "trainer.min_replay_steps=300",
               "schedule.gpu_share=auto", "schedule.pace_every_s=3", "schedule.search_slowdown=1.05",
               "schedule.min_updates_per_s=0.5", "run.log_level=WARNING")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode(errors="replace")[-3000:]
    s = json.loads(out.decode().strip().splitlines()[-1])
    share = s["gpu_share"]
    assert share["alone_ms"], share                     # the search server's pace before the trainer began
    assert s["wm_updates"] > 0 and share["changes"] >= 1, (s["wm_updates"], share)
    assert s["trainer"]["pace_limit"] >= 0, s["trainer"]   # the trainer reports the limit it plays by
    assert s["segments_rejected"] == 0
