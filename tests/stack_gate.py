"""A pytest plugin for CI: a test skipped because an optional stack that ``scripts/setup.sh``
installs is missing (vLLM, Ray, DeepSpeed, LightZero, the Jericho games, the packaged SmolLM2 and
Gemma models) fails instead, when ``PZSTREAM_REQUIRE_STACKS=1``. On a developer's machine a missing
stack stays a skip; in CI a broken install must not pass as a green run with those tests silently
left out."""
from __future__ import annotations

import os
import re

import pytest

REQUIRED_STACKS = ("vLLM", "Ray", "DeepSpeed", "LightZero", "Jericho", "SmolLM2", "Gemma")  # the last two: packaged models
_NAMES = re.compile(r"\b(" + "|".join(REQUIRED_STACKS) + r")\b", re.IGNORECASE)


def required_stack(reason: str) -> str | None:
    """The optional stack a skip reason names (as spelled in REQUIRED_STACKS), or None."""
    m = _NAMES.search(reason)
    return next(s for s in REQUIRED_STACKS if s.lower() == m.group(1).lower()) if m else None


def skip_reason(report: pytest.TestReport) -> str:
    lr = report.longrepr
    reason = lr[2] if isinstance(lr, tuple) and len(lr) == 3 else str(lr)
    return reason.removeprefix("Skipped: ")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or os.environ.get("PZSTREAM_REQUIRE_STACKS") != "1" or hasattr(report, "wasxfail"):
        return
    reason = skip_reason(report)
    if (stack := required_stack(reason)) is not None:
        report.outcome = "failed"
        report.longrepr = (f"{stack} is required here (PZSTREAM_REQUIRE_STACKS=1: scripts/setup.sh installs it) "
                           f"but the test was skipped: {reason}")
