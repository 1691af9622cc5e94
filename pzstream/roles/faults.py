"""Failures put in on purpose by the testing aids ``trainer.fail_every``, ``trainer.crash_at_update``
and ``ppo.fail_episodes``, so that tests can show a run living through them (issue 14).

Each aid raises where a real failure would: inside the world model's forward pass in the middle
of an update, or inside an episode's reward, after its generation ran.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

#: A trainer crashed by ``trainer.crash_at_update`` exits with this code (EX_SOFTWARE).
CRASH_EXIT_CODE = 70


class InjectedFault(RuntimeError):
    """A failure that a testing aid raised on purpose."""


def update_fails(attempt: int, fail_every: int) -> bool:
    """Whether update ``attempt`` (counted from 1 in one trainer process) is to fail under ``trainer.fail_every``."""
    return fail_every > 0 and attempt % fail_every == 0


def crashes_now(updates: int, crash_at: int, resumed: bool) -> bool:
    """Whether a trainer at ``updates`` updates exits as a crash under ``trainer.crash_at_update``:
    only one that started without a checkpoint (``resumed`` False), so its successor does not."""
    return crash_at > 0 and not resumed and updates == crash_at


class UpdateFault:
    """Raises InjectedFault from inside ``model``'s forward pass while ``armed``: an update that
    fails half-way, after the target encoder ran and before any gradient."""

    def __init__(self, model: torch.nn.Module):
        self.armed = False
        self._handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, _module: torch.nn.Module, _args: object) -> None:
        if self.armed:
            raise InjectedFault("trainer.fail_every: this world-model update fails on purpose")

    def remove(self) -> None:
        self._handle.remove()


RewardFn = Callable[..., tuple[float, dict[str, float]]]


def failing_reward(episode: int) -> RewardFn:
    """The reward function of an episode that ``ppo.fail_episodes`` names: its first reward raises."""

    def reward(*args: object, **kw: object) -> tuple[float, dict[str, float]]:
        raise InjectedFault(f"ppo.fail_episodes: episode {episode} fails on purpose, inside its reward")

    return reward
