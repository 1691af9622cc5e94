"""Fixtures shared by the tests; the machinery lives in support.py."""
from __future__ import annotations

import subprocess

import pytest
import torch

from orphan_guard import pytest_configure, pytest_sessionfinish  # noqa: F401  (hooks: nothing outlives the suite)
from stack_gate import pytest_runtest_makereport  # noqa: F401  (a hook: skips of required stacks fail in CI)
from support import free_base_port


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # the project's models are tiny: intra-op threads gain nothing, and on a busy 2-core
    # machine two spinning threads make a step ~10x slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def address() -> str:
    return f"tcp://127.0.0.1:{free_base_port()}"


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:  # a clean stop first: a role stops what it started (a vLLM engine, helpers)
        if p.poll() is None:
            p.terminate()
    for p in started:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
