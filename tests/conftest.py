"""Fixtures shared by the tests; the machinery lives in support.py."""
from __future__ import annotations

import subprocess

import pytest

from support import free_base_port


@pytest.fixture
def address() -> str:
    return f"tcp://127.0.0.1:{free_base_port()}"


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)
