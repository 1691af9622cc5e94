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
