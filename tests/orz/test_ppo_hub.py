"""PPO episodes fired by the hub's prompt queue during a real run (hub, trainer, PPO worker and
collector processes on loopback), the new LLM versions reaching the collectors, and isolation:
a PPO worker killed mid-episode fails that episode only."""
from __future__ import annotations

import json
import os
import re
import signal
import threading
import time

import pytest

from pzstream.orz.runtime import ray_stack_available
from support import free_base_port, launch

pytestmark = pytest.mark.slow  # whole --role all runs with PPO episodes, 1.5-4 minutes each

PPO = ["collector.segment_steps=5", "search.num_simulations=2", "llm.max_prompt_tokens=128", "trainer.min_replay_steps=20",
       "trainer.publish_every=5", "ppo.fire_threshold=16", "ppo.rollout_batch_size=8", "ppo.n_samples_per_prompt=4",
       "ppo.micro_train_batch_size=16", "ppo.prompt_max_len=192"]


def _summary(out: bytes) -> dict:
    return json.loads(out.decode().strip().splitlines()[-1])


@pytest.mark.skipif(not ray_stack_available()[0], reason="PPO Ray stack not installed")
def test_role_all_fires_ray_ppo_episodes_and_collectors_get_new_llm_versions():
    addr = f"tcp://127.0.0.1:{free_base_port()}"
    p = launch("--role", "all", "--max-seconds", "240", "--learner", addr, "run.name=test-ppo-ray", "ppo.runtime=ray", "collector.count=1", "trainer.max_updates_per_s=5",
               "ppo.ray_num_cpus=2", *PPO)
    out, err = p.communicate(timeout=540)
    assert p.returncode == 0, err.decode()[-3000:]
    s = _summary(out)
    log = err.decode()
    assert s["ppo"]["runtime"] == "ray+vllm+deepspeed", log[-3000:]
    assert s["ppo_episodes_fired"] >= 1 and s["ppo_episodes_failed"] == 0, (s["ppo"], log[-3000:])
    assert isinstance(s["prompt_queue_size"], int)
    assert s["llm_version_published"] >= 1
    assert s["min_collector_llm_version"] is not None and s["min_collector_llm_version"] >= 1
    assert s["wm_version_published"] >= 1  # world-model training went on beside the episodes
    assert "PPO episode 1 done: reward" in log and "time generate" in log


def test_a_ppo_worker_killed_mid_episode_fails_that_episode_and_the_run_goes_on():
    addr = f"tcp://127.0.0.1:{free_base_port()}"
    p = launch("--role", "all", "--max-seconds", "90", "--learner", addr, "run.name=test-ppo-kill",
               "ppo.runtime=inprocess", *PPO)
    lines: list[str] = []
    killed = threading.Event()

    def read_stderr() -> None:
        pid = None
        for raw in p.stderr:
            line = raw.decode(errors="replace")
            lines.append(line)
            m = re.search(r"PPO worker started \(pid (\d+)\)", line)
            if m and pid is None:
                pid = int(m.group(1))
            if pid and not killed.is_set() and "PPO episode 1 fired" in line:
                time.sleep(0.5)
                os.kill(pid, signal.SIGKILL)
                killed.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    out = p.stdout.read()
    p.wait(timeout=300)
    reader.join(timeout=10)
    log = "".join(lines)
    assert p.returncode == 0, log[-3000:]
    assert killed.is_set(), log[-3000:]
    s = _summary(out)
    assert s["ppo_episodes_failed"] >= 1 and s["ppo"]["worker_restarts"] >= 1, s["ppo"]
    assert s["ppo_episodes_ok"] >= 1, (s["ppo"], log[-3000:])  # the next threshold fired a new attempt
    assert s["llm_version_published"] >= 1
    assert "worker died" in log
    assert s["segments_accepted"] > 0 and s["wm_version_published"] >= 1
