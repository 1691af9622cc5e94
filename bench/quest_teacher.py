"""Learnable "search" targets on the embedded default game, for measuring LLM training.

Random play's visits are uniform, so there is nothing in them to agree with. Here the
"search" is replaced by a fixed rule over real game states: the **quest teacher** proposes the
first command of TextWorld's winning policy from the current state (``policy_commands()[0]``)
when it is a valid action, else the first valid action. Its segments record a peaked visit
distribution (``peak`` on that action, the rest spread evenly), so the most visited candidate
is the teacher's choice; the action actually executed is the teacher's with probability
1 - ``explore``, else uniform over the valid actions, so play wanders through many states
instead of replaying one walkthrough.

Segments come from the project's real ``GamePlayer`` (the same player ``RandomPlayer`` is),
on the real game; ``samples_from_segments(..., chosen="visits")`` turns them into samples whose
``chosen`` is the teacher's action. Held-out agreement with that choice is above chance only
if the LLM learned which action the state calls for (or at least which candidate texts the
quest uses).
"""
from __future__ import annotations

import threading

import numpy as np

from pzstream.agent import GamePlayer, Move
from pzstream.stream.wire import Segment
from pzstream.llm.train import agreement, chance  # noqa: F401  (re-exported: the measure and its baseline)


class QuestTeacherPolicy:
    """The rule above, as a collector policy (``pzstream.agent.Policy``)."""

    name = "quest"
    wm_version = 0
    llm_version = 0

    def __init__(self, game, seed: int, explore: float = 0.5, peak: float = 0.9):
        self.game, self.explore, self.peak = game, explore, peak
        self.rng = np.random.default_rng(seed)
        self.net_s = 0.0

    def target(self, valid: list[str]) -> int:
        cmds = self.game.policy_commands()
        return valid.index(cmds[0]) if cmds and cmds[0] in valid else 0

    def act(self, history, observation: str, valid: list[str]) -> Move:
        k, j = len(valid), self.target(valid)
        visits = np.full(k, (1.0 - self.peak) / max(k - 1, 1), np.float32) if k > 1 else np.ones(1, np.float32)
        visits[j] = self.peak if k > 1 else 1.0
        visits /= visits.sum()
        idx = int(self.rng.integers(k)) if self.rng.random() < self.explore else j
        return Move(idx, visits, float("nan"))


def open_quest_game():
    """The embedded default game, with TextWorld's winning-policy info switched on."""
    from pzstream.env import ensure_default_game
    from pzstream.env.tw_game import TextWorldGame

    return TextWorldGame(ensure_default_game(), name="tw-default", policy_commands=True)


def collect_quest_segments(steps: int, seed: int = 0, explore: float = 0.5, segment_steps: int = 20,
                           max_episode_steps: int = 40, collector_id: str = "quest") -> list[Segment]:
    """Play ``steps`` real steps of the default game with the quest teacher; returns the segments."""
    game = open_quest_game()
    try:
        return play_segments(GamePlayer(game, QuestTeacherPolicy(game, seed, explore), collector_id, segment_steps,
                                        max_episode_steps, seed), steps)
    finally:
        game.close()


def play_segments(player: GamePlayer, steps: int) -> list[Segment]:
    """Let ``player`` play until it has made ``steps`` env steps; returns the segments it cut."""
    segs, stop = [], threading.Event()
    while player.stats.env_steps < steps:
        seg = player.play_segment(stop, max_steps=steps)
        if seg is not None:
            segs.append(seg)
    return segs


def split_by_episode(segments: list[Segment], held_out_every: int = 4) -> tuple[list[Segment], list[Segment]]:
    """Train / held-out split by episode: every ``held_out_every``-th episode (counted over all
    collectors, in the order they first appear) is held out."""
    order: dict[tuple[str, int], int] = {}
    train, held = [], []
    for s in segments:
        k = order.setdefault((s.header.collector_id, s.header.episode_id), len(order))
        (held if k % held_out_every == held_out_every - 1 else train).append(s)
    return train, held
