"""``--role all --game a,b`` deals the games round-robin over its collectors; one hub counts them per game."""
from __future__ import annotations

import json

import pytest

from support import GAMES_DIR, launch

import launch as launch_module  # the repo root is on sys.path (tests/conftest.py's rootdir)


def test_games_are_dealt_round_robin():
    assert [launch_module.collector_game("zork1,detective", i) for i in range(4)] == \
        ["zork1", "detective", "zork1", "detective"]
    assert launch_module.collector_game("default", 3) == "default"


@pytest.mark.slow
def test_two_games_stream_to_one_hub(address):
    if not (GAMES_DIR / "zork1.z5").is_file() or not any(GAMES_DIR.glob("detective.z*")):
        pytest.skip(f"Jericho games not found in {GAMES_DIR}")
    p = launch("--role", "all", "--game", "zork1,detective", "--collectors", "2", "--max-seconds", "35",
               "--learner", address, "llm.enabled=false", "ppo.enabled=false", "run.name=test-two-games",
               "collector.max_episode_steps=20", "collector.segment_steps=10", f"env.games_dir={GAMES_DIR}")
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err.decode()[-3000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert set(summary["per_game"]) == {"zork1", "detective"}
    assert all(g["steps"] > 0 for g in summary["per_game"].values())
