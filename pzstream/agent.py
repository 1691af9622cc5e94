"""How a collector plays: a policy picks each move, a player turns moves into segments.

Policies: ``RandomPolicy`` (uniform over the valid actions) and ``MctsPolicy`` (batched MCTS
over the latest world model it has; new weights are swapped in between moves). The player is
blocking (Jericho, the network) and runs in a worker thread of the collector.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pzstream.env import Game
from pzstream.llm.factory import History, PriorSource
from pzstream.stream.wire import Segment, SegmentHeader

log = logging.getLogger("pzstream.agent")


@dataclass(frozen=True)
class Move:
    """One decision: index into the valid actions, the policy it came from [K], the root value (NaN: none),
    and the LLM prior over the valid actions [K] (None: no LLM was asked)."""

    index: int
    policy: np.ndarray
    root_value: float
    prior: np.ndarray | None = None


class Policy(Protocol):
    name: str
    wm_version: int
    llm_version: int
    net_s: float

    def act(self, history: History, observation: str, valid: list[str]) -> Move: ...


class RandomPolicy:
    """Uniform over the valid actions; its segments carry that uniform distribution as 'visits'."""

    name = "random"
    wm_version = 0

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.net_s = 0.0

    llm_version = 0

    def act(self, history: History, observation: str, valid: list[str]) -> Move:
        k = len(valid)
        return Move(int(self.rng.integers(k)), np.full(k, 1.0 / k, np.float32), float("nan"))


class MctsPolicy:
    """MCTS over the world model (one root per move); root prior = the world model's policy.

    ``offer(model, version)`` may be called from another thread; the swap happens at the
    start of the next move, never during a search.
    """

    name = "mcts"

    def __init__(self, wm_cfg, search_cfg, seed: int, threads: int = 1, prior: PriorSource | None = None,
                 mix: str = "fixed", fixed_weight: float = 0.5, adaptive_range: tuple[float, float] = (0.3, 0.7)):
        import torch

        from pzstream.model.inference import SearchAdapter
        from pzstream.model.world_model import untrained_world_model

        torch.set_num_threads(threads)
        self.wm_cfg, self.search_cfg = wm_cfg, search_cfg
        self.adapter = SearchAdapter(untrained_world_model(wm_cfg).eval())
        self.rng = np.random.default_rng(seed)
        self.wm_version = 0
        self.net_s = 0.0
        self._pending: tuple[object, int] | None = None
        self._lock = threading.Lock()
        self.prior_source = prior
        self.prior_errors = 0
        self.mix, self.fixed_weight, self.adaptive_range = mix, fixed_weight, adaptive_range

    @property
    def llm_version(self) -> int:
        return self.prior_source.version if self.prior_source is not None else 0

    def offer(self, model, version: int) -> None:
        with self._lock:
            self._pending = (model, version)

    def _swap(self) -> None:
        from pzstream.model.inference import SearchAdapter

        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None and pending[1] > self.wm_version:
            self.adapter = SearchAdapter(pending[0].eval())
            self.wm_version = pending[1]

    def root_prior(self, root_logits: np.ndarray, legal: np.ndarray, history: History, observation: str,
                   valid: list[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(mixed root prior [1, K] or None, LLM probs over the valid actions or None)."""
        from pzstream.search import mix_root_prior, root_llm_weight, softmax_masked

        if self.prior_source is None:
            return None, None
        try:
            got = self.prior_source.prior([history], [observation], [valid])
        except Exception as e:  # an LLM fault costs this move its prior, never the collector
            self.prior_errors += 1
            if self.prior_errors == 1:
                log.exception("LLM prior failed (%s); playing with the world model's prior for such moves", e)
            return None, None
        if got is None:
            return None, None
        llm = np.zeros_like(root_logits, dtype=np.float32)
        k = min(len(valid), llm.shape[1])
        llm[0, :k] = got[0][:k]
        wm = softmax_masked(root_logits, legal)
        weight = root_llm_weight(self.mix, wm, legal, self.fixed_weight, *self.adaptive_range)
        return mix_root_prior(wm, llm, weight, legal), got[0]

    def act(self, history: History, observation: str, valid: list[str]) -> Move:
        import torch

        from pzstream.search import RecurrentFnOutput, RootFnOutput, run_search

        self._swap()
        t0 = time.perf_counter()
        net = 0.0

        def recurrent(handles: np.ndarray, actions: np.ndarray) -> RecurrentFnOutput:
            nonlocal net
            t = time.perf_counter()
            with torch.inference_mode():
                out = self.adapter.recurrent(handles, actions)
            net += time.perf_counter() - t
            return RecurrentFnOutput(reward=out.reward, value=out.value, prior_logits=out.prior_logits, handle=out.handle)

        try:
            with torch.inference_mode():
                root = self.adapter.root([[(o, a) for o, a, _ in history]], [observation], [valid])
            net += time.perf_counter() - t0
            mixed, llm_probs = self.root_prior(root.prior_logits, root.legal, history, observation, valid)
            result = run_search(RootFnOutput(prior_logits=root.prior_logits, value=root.value, handle=root.handle),
                                recurrent, root.legal, self.search_cfg, self.rng, root_prior=mixed)
        finally:
            self.adapter.reset()
            self.net_s += net
        k = len(valid)
        probs = np.zeros(k, np.float32)
        kk = min(k, result.visit_probs.shape[1])  # candidates past the model's cap get no visits
        probs[:kk] = result.visit_probs[0, :kk]
        probs /= probs.sum()
        return Move(int(result.action[0]), probs, float(result.root_value[0]), llm_probs)


def mcts_policy(cfg, seed: int, prior: PriorSource | None = None, search_cfg=None) -> MctsPolicy:
    """An MctsPolicy with the config's world model, search and LLM mixing (``search_cfg`` overrides the search)."""
    lc = cfg.llm
    return MctsPolicy(cfg.world_model(), search_cfg or cfg.search_config(), seed, prior=prior, mix=lc.mix,
                      fixed_weight=lc.fixed_weight, adaptive_range=(lc.adaptive_low, lc.adaptive_high))


class LlmPolicy:
    """The LLM alone: the candidate with the highest prior (evaluation mode 'llm')."""

    name = "llm"
    wm_version = 0

    def __init__(self, prior: PriorSource):
        self.prior_source = prior
        self.net_s = 0.0

    @property
    def llm_version(self) -> int:
        return self.prior_source.version

    def act(self, history: History, observation: str, valid: list[str]) -> Move:
        got = self.prior_source.prior([history], [observation], [valid])
        probs = got[0] if got is not None else np.full(len(valid), 1.0 / len(valid), np.float32)
        return Move(int(np.argmax(probs)), probs.astype(np.float32), float("nan"), probs)


@dataclass
class PlayerStats:
    env_steps: int = 0
    episodes: int = 0
    returns: list[float] = field(default_factory=list)
    scores: list[int] = field(default_factory=list)
    play_s: float = 0.0
    env_s: float = 0.0
    valid_s: float = 0.0
    policy_s: float = 0.0


class GamePlayer:
    """Plays ``game`` with ``policy`` and cuts the play into segments (one episode chunk each)."""

    def __init__(self, game: Game, policy: Policy, collector_id: str, segment_steps: int,
                 max_episode_steps: int, seed: int):
        self.game = game
        self.policy = policy
        self.collector_id = collector_id
        self.segment_steps = segment_steps
        self.max_episode_steps = max_episode_steps
        self.seed = seed
        self.stats = PlayerStats()
        self._obs: str | None = None
        self._history: History = []
        self._episode = -1
        self._t = 0
        self._return = 0.0

    def play_segment(self, stop: threading.Event, max_steps: int | None = None) -> Segment | None:
        """Play up to ``segment_steps`` steps (fewer at an episode end or on ``stop``)."""
        t_start = time.time()
        if self._obs is None:
            self._episode += 1
            self._obs = self.game.reset(seed=self.seed + self._episode)
            self._t, self._return, self._history = 0, 0.0, []
        episode, step0 = self._episode, self._t
        wm_version, llm_version = self.policy.wm_version, self.policy.llm_version
        obs, cands, idx, texts, rewards, scores, dones, visits, values, priors = [], [], [], [], [], [], [], [], [], []
        s = self.stats
        while len(obs) < self.segment_steps and not stop.is_set():
            if max_steps is not None and s.env_steps >= max_steps:
                break
            t0 = time.perf_counter()
            valid = self.game.valid_actions()
            t1 = time.perf_counter()
            move = self.policy.act(self._history, self._obs, valid)
            wm_version = min(wm_version, self.policy.wm_version)
            llm_version = min(llm_version, self.policy.llm_version)
            t2 = time.perf_counter()
            res = self.game.step(valid[move.index])
            t3 = time.perf_counter()
            s.valid_s += t1 - t0
            s.policy_s += t2 - t1
            s.env_s += t3 - t2
            self._t += 1
            s.env_steps += 1
            self._return += res.reward
            ended = res.done or self._t >= self.max_episode_steps
            obs.append(self._obs)
            cands.append(valid)
            idx.append(move.index)
            texts.append(valid[move.index])
            rewards.append(res.reward)
            scores.append(res.score)
            dones.append(ended)
            visits.append(move.policy)
            values.append(move.root_value)
            priors.append(move.prior if move.prior is not None and len(move.prior) == len(valid)
                          else np.full(len(valid), 1.0 / len(valid), np.float32))
            self._history.append((self._obs, valid[move.index], float(res.reward)))
            self._obs = res.observation
            if ended:
                s.episodes += 1
                s.returns.append(self._return)
                s.scores.append(int(res.score))
                self._obs = None
                break
        s.play_s += time.time() - t_start
        if not obs:
            return None
        sizes = np.array([len(c) for c in cands], dtype=np.int32)
        offsets = np.zeros(len(cands) + 1, dtype=np.int32)
        np.cumsum(sizes, out=offsets[1:])
        header = SegmentHeader(game=self.game.name, collector_id=self.collector_id, seq=0, episode_id=episode,
                               step0=step0, wm_version=wm_version, llm_version=llm_version,
                               t_start=t_start, t_end=time.time())
        prior = np.concatenate(priors).astype(np.float32)
        prior /= np.repeat(np.add.reduceat(prior, offsets[:-1]), sizes)  # exact per-step sums for the codec
        return Segment(header=header, observations=obs, cand_offsets=offsets,
                       candidates=[c for step in cands for c in step], action_index=np.array(idx, dtype=np.int32),
                       action_text=texts, reward=np.array(rewards, dtype=np.float32),
                       score=np.array(scores, dtype=np.int32), done=np.array(dones, dtype=bool),
                       visits=np.concatenate(visits).astype(np.float32), prior=prior,
                       root_value=np.array(values, dtype=np.float32))


class RandomPlayer(GamePlayer):
    """A player with the uniform random policy (the baseline, and a source of real segments in tests)."""

    def __init__(self, game: Game, collector_id: str, segment_steps: int, max_episode_steps: int, seed: int):
        super().__init__(game, RandomPolicy(seed), collector_id, segment_steps, max_episode_steps, seed)
