"""The README's quick start on the default config: within a two-minute ``--role all`` run every part
shows that it works (segments, world-model versions, PPO episodes, LLM versions at the collectors),
and the terminal carries only the hub's own reports: helper-process banners and progress bars
go to runs/<name>/helpers.log."""
from __future__ import annotations

import json
import re

import pytest

from support import REPO, free_base_port, launch

HUB_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+learner/hub ")
LAUNCH_LINES = ("helper processes (", "started ", "search: ", "placement: ", "llm: ")  # launch.py's own notices


@pytest.mark.slow
def test_quick_start_shows_every_part_working_and_a_readable_terminal():
    addr = f"tcp://127.0.0.1:{free_base_port()}"
    # the default config as scripts/run.sh runs it, only shorter and on a free port
    p = launch("--role", "all", "--max-seconds", "120", "--learner", addr, "run.name=test-quick-start")
    out, err = p.communicate(timeout=400)
    terminal = err.decode(errors="replace")
    assert p.returncode == 0, terminal[-3000:]
    s = json.loads(out.decode().strip().splitlines()[-1])
    assert s["segments_accepted"] > 0 and s["collector_exit_codes"] == [0, 0]
    assert s["wm_version_published"] >= 2 and s["min_collector_wm_version"] >= 1, s
    assert s["ppo_episodes_fired"] >= 1 and s["ppo_episodes_failed"] == 0, (s["ppo"], terminal[-3000:])
    assert s["llm_version_published"] >= 1, s["ppo"]
    assert s["min_collector_llm_version"] is not None and s["min_collector_llm_version"] >= 1, s

    # every terminal line is the hub's (or launch.py's): Ray, vLLM, DeepSpeed and transformers banners
    # and progress bars come from other processes and can't carry the hub's prefix
    stray = [ln for ln in terminal.splitlines()
             if ln.strip() and not HUB_LINE.match(ln) and not ln.startswith(LAUNCH_LINES)]
    assert not stray, stray[:20]
    # publishes are counted in the periodic report line, not printed one a line (issue 21)
    assert "published wm v" not in terminal and re.search(r"wm v\d+ \(published \d+, \d+ new;", terminal), terminal[-3000:]
    helpers = (REPO / "runs" / "test-quick-start" / "helpers.log").read_text(errors="replace")
    assert "trainer/wm" in helpers and "ppo/orz" in helpers  # the helpers' output went to their log file
