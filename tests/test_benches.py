"""Every benchmark the README lists runs with its documented command and ends with its JSON line.

The commands are read from README.md's Benchmarks section, so a bench added there is covered
here without a change. ``PZSTREAM_BENCH_SMOKE=1`` makes a bench that honours it tinier than its
--quick mode: this checks that each bench works, not what it measures (bench/RESULTS.md does).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from support import GAMES_DIR, REPO

COMMAND = re.compile(r"^\s+\.venv/bin/python (bench/[\w-]+\.py)([^#\n]*)(#.*)?$")


def readme_bench_commands(readme: str) -> list[list[str]]:
    """The bench commands of README.md's Benchmarks section: [script, arg, ...] each."""
    section = readme.split("\n## Benchmarks", 1)[1].split("\n## ", 1)[0]
    return [[m.group(1), *shlex.split(m.group(2))] for line in section.splitlines() if (m := COMMAND.match(line))]


COMMANDS = readme_bench_commands((REPO / "README.md").read_text())
#: Benches that measure on the Jericho suite and have no game of their own to fall back to.
NEEDS_JERICHO = {"bench/prior_quality.py", "bench/ppo.py", "bench/llm.py", "bench/play.py", "bench/learn_llm.py",
                 "bench/prompt_reuse.py"}


def test_the_readme_lists_every_bench():
    listed = {c[0] for c in COMMANDS}
    benches = {f"bench/{p.name}" for p in (REPO / "bench").glob("*.py") if '__name__ == "__main__"' in p.read_text()}
    assert listed and benches - listed == set(), f"benches missing from README's Benchmarks: {sorted(benches - listed)}"
    assert all(c[1:2] == ["--quick"] for c in COMMANDS), "each README bench command runs its --quick mode"


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[c[0].removeprefix("bench/") for c in COMMANDS])
def test_bench_runs_with_its_readme_command_and_prints_json_last(command):
    if command[0] in NEEDS_JERICHO and not GAMES_DIR.is_dir():
        pytest.skip(f"Jericho suite not found at {GAMES_DIR} (set PZSTREAM_GAMES_DIR)")
    env = {**os.environ, "PZSTREAM_BENCH_SMOKE": "1", "PYTHONUNBUFFERED": "1"}
    try:
        p = subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(command)} ran past 300 s:\n{(e.stderr or b'')[-2000:]!r}")
    assert p.returncode == 0, f"{' '.join(command)} exited {p.returncode}:\n{p.stderr[-3000:]}"
    lines = p.stdout.strip().splitlines()
    assert len(lines) >= 2, f"no table before the JSON line:\n{p.stdout[-2000:]}"
    figures = json.loads(lines[-1])
    assert isinstance(figures, dict) and figures, lines[-1][:500]


def test_learn_bench_names_a_story_file_that_does_not_exist(tmp_path):
    missing = tmp_path / "story.z5"
    p = subprocess.run([sys.executable, "bench/learn.py", "--quick", "--game", str(missing)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "not found" in p.stderr and str(missing) in p.stderr


@pytest.mark.slow
def test_learn_bench_plays_a_story_file_path_at_the_hub_address_it_is_given():
    from pzstream.env.sources import ensure_default_game
    from pzstream.stream.transport import free_base_port

    story = ensure_default_game()  # a story file on disk (the default game's), named by its path as launch.py takes it
    address = f"tcp://127.0.0.1:{free_base_port()}"
    env = {**os.environ, "PZSTREAM_BENCH_SMOKE": "1"}
    p = subprocess.run([sys.executable, "bench/learn.py", "--quick", "--game", str(story), f"hub.address={address}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["game"] == str(story) and result["games"][0]["hub_address"] == address
    assert result["games"][0]["env_steps"] > 0 and result["episodes"]["random"] > 0, result


@pytest.mark.slow
def test_a_bench_shows_the_hubs_report_while_it_runs_and_a_stopped_bench_stops_its_run():
    """bench/e2e.py passes the hub's report lines on as they come (not only at the end), and SIGTERM to the
    bench stops the whole launch.py run it started: no role process outlives it."""
    import psutil

    env = {**os.environ, "PZSTREAM_BENCH_SMOKE": "1", "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "bench/e2e.py", "--minutes", "5"], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stderr is not None
        seen: list[str] = []
        for line in p.stderr:
            seen.append(line)
            if " collectors live " in line:
                break
        assert seen and seen[-1].startswith("[e2e ") and " collectors live " in seen[-1], \
            "no report line while the run ran:\n" + "".join(seen[-20:])
        run = psutil.Process(p.pid).children(recursive=True)
        assert len(run) >= 3, f"the run's processes (launch.py, its collectors): {[c.cmdline()[:4] for c in run]}"
        p.send_signal(15)
        assert p.wait(90) != 0  # stopped, not finished
        _, alive = psutil.wait_procs(run, timeout=30)
        assert not alive, f"role processes outlived the stopped bench: {[c.cmdline()[:4] for c in alive]}"
    finally:
        if p.poll() is None:
            p.kill()
