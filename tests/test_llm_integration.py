"""The LLM prior in the running system: built-in training reaches collectors, a prior server serves
several collectors and collectors fall back when it dies, evaluation reports four modes."""
from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from support import HubThread, free_base_port, hub_config, launch

pytestmark = pytest.mark.slow  # whole runs with the LLM: 1-3 minutes each

FAST = ["collector.segment_steps=5", "search.num_simulations=2", "llm.max_prompt_tokens=128"]


def last_json(out: bytes) -> dict:
    return json.loads(out.decode().strip().splitlines()[-1])


def test_role_all_trains_the_llm_and_collectors_use_new_versions():
    addr = f"tcp://127.0.0.1:{free_base_port()}"
    p = launch("--role", "all", "--max-seconds", "60", "--learner", addr, "run.name=test-llm", *FAST,
               "trainer.min_replay_steps=20", "trainer.publish_every=5", "llm.train_every=1", "llm.publish_every=2",
               "llm.batch_size=2", "llm.train=true", "ppo.enabled=false")
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err.decode()[-3000:]
    s = last_json(out)
    assert s["llm_version_published"] >= 1, s["trainer"]
    assert s["min_collector_llm_version"] is not None and s["min_collector_llm_version"] >= 1
    assert "train/llm_sft_loss" in s["trainer"] and np.isfinite(s["trainer"]["train/llm_sft_loss"])
    assert s["wm_version_published"] >= 1
    # a collector starved of CPU may reconnect and resend; the hub drops those duplicates (counted)
    assert set(s["rejected_by_reason"]) <= {"duplicate_seq"}, s["rejected_by_reason"]


def test_prior_server_serves_collectors_and_they_fall_back_when_it_dies(address, procs):
    prior_addr = f"tcp://127.0.0.1:{free_base_port()}"
    hub = HubThread(hub_config(address)).start()
    server = launch("--role", "prior", "--prior", prior_addr, "--learner", address, *FAST)
    procs.append(server)
    for i in range(2):
        procs.append(launch("--role", "collector", "--learner", address, f"collector.id=p{i}", "hub.heartbeat_s=0.2",
                            "--prior", prior_addr, "llm.prior_timeout_s=1.0", *FAST))

    def llm_scored(seg) -> bool:  # a uniform prior column means nobody asked the LLM
        return any(not np.allclose(seg.prior[a:b], 1.0 / (b - a)) for a, b in zip(seg.cand_offsets[:-1], seg.cand_offsets[1:]))

    try:
        hub.wait_for(lambda h: {s.header.collector_id for s in h.segments() if llm_scored(s)} == {"p0", "p1"},
                     timeout=150, what="both collectors playing with the served prior")
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        before = len(hub.segments())
        hub.wait_for(lambda h: all(h.status().collectors[f"p{i}"].stats.get("prior_failures", 0) >= 1 for i in range(2)),
                     timeout=60, what="collectors noticing the prior server is gone")
        hub.wait_for(lambda h: len(h.segments()) >= before + 4, timeout=60, what="play goes on without it")
        # the moves played without the configured prior are counted, per collector and in the summary
        assert all(hub.status().collectors[f"p{i}"].stats.get("prior_fallbacks", 0) >= 1 for i in range(2))
        assert hub.call(hub.hub.summary)["llm_prior"]["fallbacks"] >= 2
        for p in procs[1:]:
            p.send_signal(signal.SIGTERM)
        logs = []
        for p in procs[1:]:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err.decode()[-2000:]
            logs.append(err.decode())
    finally:
        hub.stop()
    assert all("playing with the world model's prior" in log for log in logs)


def test_a_prior_that_cannot_steer_the_search_is_counted_in_the_hubs_summary(address, procs):
    """Issue 21: wm_llm played exactly the moves of wm alone and nothing said so. At root weight 0
    (llm.fixed_weight=0) the LLM is asked at every move and steers none: every move is counted as
    ignored, in the collector's stats and the hub's summary, and logged once."""
    hub = HubThread(hub_config(address)).start()
    try:
        collector = launch("--role", "collector", "--learner", address, "collector.id=muted", "hub.heartbeat_s=0.2",
                           "--max-steps", "10", "llm.fixed_weight=0", *FAST)
        procs.append(collector)
        _, err = collector.communicate(timeout=180)
        assert collector.returncode == 0, err.decode()[-3000:]
        hub.wait_for(lambda h: h.status().collectors["muted"].stats.get("prior_moves", 0) >= 10, timeout=30,
                     what="the collector's last stats")
    finally:
        summary = hub.stop()
    stats = summary["collector_stats"]["muted"]
    assert stats["prior_moves"] == stats["prior_ignored"] == 10 and stats["prior_fallbacks"] == 0, stats
    assert summary["llm_prior"] == {"moves": 10.0, "errors": 0.0, "fallbacks": 0.0, "ignored": 10.0, "shift_mean": 0.0}
    assert err.decode().count("counted as prior_ignored") == 1  # logged once, not per move


def test_eval_reports_four_modes(tmp_path):
    p = launch("--role", "eval", "--episodes", "1", "--weights", str(tmp_path), "collector.max_episode_steps=8", *FAST)
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err.decode()[-3000:]
    result = last_json(out)
    assert set(result["scores"]) == {"random", "wm", "wm_llm", "llm"}
    assert all("tw-default" in result["scores"][m] for m in result["scores"])
    assert result["weights"] == {"wm": 0, "llm": 0, "from": str(tmp_path)}
    assert "wm_llm mean" in out.decode()  # the table
