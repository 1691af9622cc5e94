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
        h = seg.header
        key = (h.collector_id, h.episode_id)
        trace = self._traces.pop(key, None)
        if trace is None:
            trace = _Trace(next_step=0, history=[], actions=[])
        if h.step0 != trace.next_step:  # the stream skipped steps: history and prefix are unknown
            trace = _Trace(next_step=h.step0, history=[], actions=None)
        seed = None if seed_base is None else seed_base + h.episode_id
        out = []
        for t in range(seg.n_steps):
            lo, hi = int(seg.cand_offsets[t]), int(seg.cand_offsets[t + 1])
            prefix = list(trace.actions) if trace.actions is not None else None
            out.append(PromptSample(
                game=h.game, observation=seg.observations[t], candidates=list(seg.candidates[lo:hi]),
                truth=seg.action_text[t], history=list(trace.history), visits=[float(v) for v in seg.visits[lo:hi]],
                reward=float(seg.reward[t]), collector_id=h.collector_id, episode_id=h.episode_id,
                step=h.step0 + t, seed=seed if prefix is not None else None, prefix=prefix,
                wm_version=h.wm_version, llm_version=h.llm_version))
            trace.history = (trace.history + [(seg.observations[t], seg.action_text[t], float(seg.reward[t]))])[
                -self.history_len:] if self.history_len else []
            if trace.actions is not None:
                trace.actions.append(seg.action_text[t])
                if len(trace.actions) > self.max_prefix:
                    trace.actions = None
        trace.next_step = h.step0 + seg.n_steps
        if not bool(seg.done[-1]):
            self._traces[key] = trace
            while len(self._traces) > self.max_episodes:
                self._traces.popitem(last=False)
        return out


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
