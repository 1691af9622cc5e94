"""The alternating schedule (PriorZero's turns), enforced by the hub: the pure state machine, and a
real hub, trainer and collectors taking turns."""
from __future__ import annotations

import pytest
from support import HubThread, hub_config, launch

from pzstream.config import ScheduleConfig, load_config
from pzstream.hub.schedule import AlternatingSchedule, Phase


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_schedule_cycles_collect_train_ppo_and_times_each_phase():
    clock = Clock()
    s = AlternatingSchedule(ScheduleConfig(mode="alternating", collect_steps=100, train_updates=5), clock)
    assert s.phase is Phase.COLLECT and s.collecting() and not s.ppo_allowed()
    assert s.on_steps(60) is None and s.on_trained() is None and s.on_ppo_over() is None  # out of turn: ignored
    clock.t = 3.0
    assert s.on_steps(50) is Phase.TRAIN and not s.collecting()
    assert s.on_steps(50) is None  # a segment in flight when collection stopped: kept, not counted
    clock.t = 5.0
    assert s.on_trained() is Phase.PPO and s.ppo_allowed() and not s.collecting()
    clock.t = 9.0
    assert s.on_ppo_over() is Phase.COLLECT and s.steps_in_phase == 0 and s.cycles == 2
    assert s.summary()["seconds_by_phase"] == {"collect": 3.0, "train": 2.0, "ppo": 4.0}
    no_ppo = AlternatingSchedule(ScheduleConfig(mode="alternating", collect_steps=1, ppo_episodes=0))
    no_ppo.on_steps(1)
    assert no_ppo.on_trained() is Phase.COLLECT


def test_async_never_gates_anything():
    s = AlternatingSchedule(ScheduleConfig())
    assert s.phase is Phase.ASYNC and s.collecting() and s.ppo_allowed()
    assert s.on_steps(10**6) is None and s.on_trained() is None


def test_schedule_config_is_checked():
    from pzstream.config import ConfigError

    with pytest.raises(ConfigError, match="schedule.mode"):
        load_config(None, ["schedule.mode=sometimes"])
    with pytest.raises(ConfigError, match="collect_steps"):
        load_config(None, ["schedule.collect_steps=0"])


@pytest.mark.slow
def test_a_real_hub_pauses_collectors_while_its_trainer_takes_its_turn(address, procs):
    """Collectors stop after collect_steps (plus what was in flight), the trainer makes exactly its
    budget, then credit returns: cycles go round and updates match the budgets."""
    over = ["llm.enabled=false", "ppo.enabled=false", "trainer.enabled=true", "trainer.min_replay_steps=20",
            "trainer.log_every=1000", "schedule.mode=alternating", "schedule.collect_steps=40", "schedule.train_updates=3",
            "collector.segment_steps=5"]
    hub = HubThread(hub_config(address, *over, "trainer.enabled=true")).start()
    try:
        for i in range(2):
            procs.append(launch("--role", "collector", "--learner", address, f"collector.id=c{i}", f"collector.seed={i}",
                                *over))
        hub.wait_for(lambda h: h.hub.schedule.state.cycles >= 4, 240, "four cycles of the alternating schedule")
        cycles = hub.hub.schedule.state.cycles
        steps = hub.status().env_steps
        updates = hub.hub.trainer.updates
    finally:
        summary = hub.stop()
    # each finished collect phase: 40 steps, plus at most one segment per collector in flight
    assert 40 * (cycles - 1) <= steps <= (40 + 2 * 2 * 5) * cycles
    # each train phase made its 3 updates (the first may find too little replay and make 0)
    assert 3 * (cycles - 2) <= updates <= 3 * cycles
    assert summary["schedule"]["mode"] == "alternating" and summary["segments_rejected"] == 0


def test_the_schedule_part_gates_the_other_parts_and_resends_a_lost_budget():
    """SchedulePart turns phases into its outbox calls: a budget to the trainer when training begins
    (again when a trainer restarts mid-phase), one PPO episode, and a window closed, then reopened."""
    from pzstream.hub.parts import AcceptedSegment
    from pzstream.hub.schedule import SchedulePart

    class Seg:
        n_steps = 50

    budgets: list[int] = []
    fired: list[bool] = []
    part = SchedulePart(ScheduleConfig(mode="alternating", collect_steps=100, train_updates=7),
                        announce_window=lambda: None, train=lambda n: budgets.append(n) or True,
                        fire_ppo=lambda: fired.append(True) or True)
    seg = AcceptedSegment(Seg(), b"", None, "mcts")  # type: ignore[arg-type]
    assert part.window(32) == 32
    part.on_segment(seg)
    part.on_segment(seg)                       # 100 steps: training begins
    assert part.state.phase is Phase.TRAIN and budgets == [7] and part.window(32) == 0
    part.on_trainer_start()                    # the trainer restarted and lost its budget
    assert budgets == [7, 7]
    part.on_trained()
    assert part.state.phase is Phase.PPO and fired == [True]
    part.on_ppo_over()
    assert part.state.phase is Phase.COLLECT and part.window(32) == 32
    refusing = SchedulePart(ScheduleConfig(mode="alternating", collect_steps=50), announce_window=lambda: None,
                            train=lambda n: False, fire_ppo=lambda: False)
    refusing.on_segment(seg)                   # no trainer and no PPO worker: the cycle comes straight back
    assert refusing.state.phase is Phase.COLLECT and refusing.state.cycles == 2
