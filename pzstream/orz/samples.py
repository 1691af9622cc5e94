"""Prompt samples for PPO episodes: from the hub's segments to the ORZ dataset.

The hub's adapter turns every step of every accepted segment into a ``PromptSample``: the
recent history of its episode (observation, action, reward), the observation, the candidate
actions, and as ground truth the action the search chose (its text), with the visit
distribution, the step's reward and the model versions that acted. The sample also carries what
the game-progress reward needs to restore the state: the game, the episode's reset seed and the
actions played before the step (``prefix``).

The dataset side renders a sample as the Open-Reasoner-Zero prompt (``prompts.PromptConfig.orz``,
ending in ``Assistant: <think>``); the ground truth and the rest stay in the sample's extras.

    tracker = EpisodeTracker(history_len=3)
    samples = tracker.add(segment, seed_base=collector_seed)      # one PromptSample per step
    prompt = render_prompt(samples[0], tokenizer, prompt_max_len)
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pzstream.llm.prompts import PromptConfig, fit_prompt
from pzstream.orz.rewards import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE
from pzstream.stream.wire import Segment


@dataclass(frozen=True)
class PromptSample:
    """One decision as a PPO prompt; ``truth`` is the search's action text (ground truth)."""

    game: str
    observation: str
    candidates: list[str]
    truth: str
    history: list[tuple[str, str, float]]
    visits: list[float]
    reward: float
    collector_id: str
    episode_id: int
    step: int
    seed: int | None  # the episode's reset seed; None = unknown (no progress reward)
    prefix: list[str] | None  # actions from reset to this step; None = incomplete (a gap in the stream)
    wm_version: int
    llm_version: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PromptSample":
        d = dict(d)
        d["history"] = [tuple(h) for h in d["history"]]
        return cls(**d)


@dataclass
class _Trace:
    next_step: int
    history: list[tuple[str, str, float]]
    actions: list[str] | None


@dataclass(frozen=True)
class SegmentSteps:
    """The prompt samples of one segment, built only when asked for (``steps[t]``): the hub
    queues every step but an episode takes a few, so most are never built.

    history / prefix: the episode's history and action prefix before the segment's first step.
    """

    seg: Segment
    seed: int | None
    history: tuple[tuple[str, str, float], ...]
    prefix: tuple[str, ...] | None
    history_len: int
    max_prefix: int

    def __len__(self) -> int:
        return self.seg.n_steps

    def __getitem__(self, t: int) -> PromptSample:
        seg, h = self.seg, self.seg.header
        if not 0 <= t < seg.n_steps:
            raise IndexError(t)
        lo, hi = int(seg.cand_offsets[t]), int(seg.cand_offsets[t + 1])
        # the prefix outgrew max_prefix after len(prefix) + t actions: unknown from there on
        prefix = (list(self.prefix) + list(seg.action_text[:t])
                  if self.prefix is not None and len(self.prefix) + t <= self.max_prefix else None)
        k = self.history_len
        history = (list(self.history) + [(seg.observations[s], seg.action_text[s], float(seg.reward[s]))
                                         for s in range(max(0, t - k), t)])[-k:] if k else []
        return PromptSample(
            game=h.game, observation=seg.observations[t], candidates=list(seg.candidates[lo:hi]),
            truth=seg.action_text[t], history=history, visits=[float(v) for v in seg.visits[lo:hi]],
            reward=float(seg.reward[t]), collector_id=h.collector_id, episode_id=h.episode_id,
            step=h.step0 + t, seed=self.seed if prefix is not None else None, prefix=prefix,
            wm_version=h.wm_version, llm_version=h.llm_version)

    def all(self) -> list[PromptSample]:
        return [self[t] for t in range(len(self))]


class EpisodeTracker:
    """Follows every (collector, episode) across its segments to give each step its history and
    action prefix. Bounded: the least recently seen episodes are forgotten beyond ``max_episodes``
    (a later segment of a forgotten episode gets ``prefix=None``)."""

    def __init__(self, history_len: int = 3, max_episodes: int = 4096, max_prefix: int = 1000):
        self.history_len = history_len
        self.max_episodes = max_episodes
        self.max_prefix = max_prefix
        self._traces: OrderedDict[tuple[str, int], _Trace] = OrderedDict()

    def __len__(self) -> int:
        return len(self._traces)

    def add(self, seg: Segment, seed_base: int | None = None) -> list[PromptSample]:
        """One PromptSample per step of ``seg``."""
        return self.advance(seg, seed_base).all()

    def advance(self, seg: Segment, seed_base: int | None = None) -> SegmentSteps:
        """Follow the episode past ``seg``; its samples are built on demand (O(steps) here)."""
        h = seg.header
        key = (h.collector_id, h.episode_id)
        trace = self._traces.pop(key, None)
        if trace is None:
            trace = _Trace(next_step=0, history=[], actions=[])
        if h.step0 != trace.next_step:  # the stream skipped steps: history and prefix are unknown
            trace = _Trace(next_step=h.step0, history=[], actions=None)
        steps = SegmentSteps(seg=seg, seed=None if seed_base is None else seed_base + h.episode_id,
                             history=tuple(trace.history), prefix=None if trace.actions is None else tuple(trace.actions),
                             history_len=self.history_len, max_prefix=self.max_prefix)
        k, n = self.history_len, seg.n_steps
        if k:
            trace.history = (trace.history + [(seg.observations[t], seg.action_text[t], float(seg.reward[t]))
                                              for t in range(max(0, n - k), n)])[-k:]
        if trace.actions is not None:
            trace.actions.extend(seg.action_text)
            if len(trace.actions) > self.max_prefix:
                trace.actions = None
        trace.next_step = h.step0 + n
        if not bool(seg.done[-1]):
            self._traces[key] = trace
            while len(self._traces) > self.max_episodes:
                self._traces.popitem(last=False)
        return steps


def searched(seg: Segment) -> bool:
    """Steps chosen by a search (finite root value) carry a ground truth worth learning."""
    return not bool(np.isnan(seg.root_value).all())


# ---------------------------------------------------------------------------- dataset


def orz_prompt_config(history_len: int, prompt_max_len: int) -> PromptConfig:
    return PromptConfig.orz(history_len=history_len, max_prompt_tokens=prompt_max_len)


def render_prompt(sample: PromptSample, tokenizer: Any, prompt_max_len: int, history_len: int = 3) -> str:
    """The ORZ generation prompt of a sample (candidates listed), fitted to ``prompt_max_len`` tokens."""
    cfg = orz_prompt_config(history_len, prompt_max_len)
    return fit_prompt(tokenizer, cfg, sample.history, sample.observation, sample.candidates, generation=True)


def answer_choices(candidates: list[str]) -> list[str]:
    """The responses allowed in ``choice`` mode: an empty thought, then one candidate as the answer."""
    return [f"{THINK_CLOSE}\n{ANSWER_OPEN}{c}{ANSWER_CLOSE}" for c in candidates]
