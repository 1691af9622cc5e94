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
from collections.abc import Callable
from typing import Protocol

import numpy as np

from pzstream.env import Game
from pzstream.llm.factory import History, PriorSource
from pzstream.stream.wire import Reject, SearchReply, SearchRequest, Segment, SegmentHeader

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


#: A move's LLM prior counts as ignored when it moves less than this share of the root prior's mass
#: (``llm_prior_shift``): 1%, a hundredth of a visit per simulation.
PRIOR_IGNORED_SHIFT = 0.01


def llm_prior_shift(llm: np.ndarray, weight: np.ndarray, legal: np.ndarray) -> np.ndarray:
    """float64 [B]: how much of each root prior's mass the LLM's preferences move, ``w * TV(llm, uniform)``.

    llm: [B, K] the LLM's probabilities (any scale; renormalised over the legal slots); weight: [B]
    its mixing weight w at the root; legal: bool [B, K]. The mixed prior ``(1 - w) wm + w llm`` is
    ``(1 - w) wm + w u`` (what an LLM with no preference, uniform u over the legal candidates, gives)
    plus ``w (llm - u)``: the LLM's information, which moves ``w * TV(llm, u)`` of the prior's mass
    (TV = half the L1 distance). It is 0 when w is 0 or the LLM is uniform; a root with one legal
    candidate has nothing to decide (0).
    """
    p = np.where(legal, np.asarray(llm, np.float64), 0.0)
    p = p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-12)
    k = np.maximum(legal.sum(axis=-1, keepdims=True), 1)
    tv = 0.5 * np.where(legal, np.abs(p - 1.0 / k), 0.0).sum(axis=-1)
    return np.asarray(weight, np.float64) * tv


@dataclass
class PriorCounts:
    """What the LLM prior did for a policy's moves, in its heartbeat stats (``as_stats``).

    moves: moves searched with an LLM prior; errors: prior calls that raised; fallbacks: moves played
    without an LLM prior although one is configured (it raised, or a prior server did not answer);
    ignored: moves whose LLM prior could not steer the search, ``llm_prior_shift < PRIOR_IGNORED_SHIFT``
    (its weight at the root was 0, or it was within 2% of uniform at weight 0.5); shift_sum: the
    shifts of all its moves (their mean says how much the LLM steers). Ignored moves and fallbacks
    are each logged once.
    """

    moves: int = 0
    errors: int = 0
    fallbacks: int = 0
    ignored: int = 0
    shift_sum: float = 0.0

    def priced(self, shifts: np.ndarray, weights: np.ndarray) -> None:
        """Count the moves of one call whose LLM prior moved ``shifts`` [B] at root weights ``weights`` [B]."""
        ignored = shifts < PRIOR_IGNORED_SHIFT
        if ignored.any() and self.ignored == 0:
            i = int(np.argmax(ignored))
            log.warning("the LLM prior had no effect on a move's search: at root weight %.2f it moved %.4f of the "
                        "prior's mass (< %.2f; %s); such moves are counted as prior_ignored", weights[i], shifts[i],
                        PRIOR_IGNORED_SHIFT, "the weight is 0" if weights[i] == 0 else "the LLM's prior is near uniform")
        self.moves += len(shifts)
        self.ignored += int(ignored.sum())
        self.shift_sum += float(shifts.sum())

    def fell_back(self, moves: int) -> None:
        """``moves`` played without the LLM prior although one is configured."""
        if self.fallbacks == 0:
            log.warning("a move played without the LLM prior, which is configured (it failed or did not answer); "
                        "such moves are counted as prior_fallbacks")
        self.fallbacks += moves

    def as_stats(self) -> dict[str, float]:
        return {"prior_moves": float(self.moves), "prior_errors": float(self.errors),
                "prior_fallbacks": float(self.fallbacks), "prior_ignored": float(self.ignored),
                "prior_shift_mean": round(self.shift_sum / self.moves, 5) if self.moves else 0.0}


class _Ask:
    """``MctsPolicy.search_roots``'s default: ask the LLM for the roots' priors in the call."""


ASK = _Ask()


class MctsPolicy:
    """MCTS over the world model (one root per move); root prior = the world model's policy.

    ``offer(model, version)`` may be called from another thread; the swap happens at the
    start of the next move, never during a search.
    """

    name = "mcts"

    def __init__(self, wm_cfg, search_cfg, seed: int, threads: int = 1, prior: PriorSource | None = None,
                 mix: str = "fixed", fixed_weight: float = 0.5, adaptive_range: tuple[float, float] = (0.3, 0.7),
                 device: str = "cpu", graphs: bool = False):
        import torch

        from pzstream.model.inference import SearchAdapter
        from pzstream.model.world_model import untrained_world_model

        torch.set_num_threads(threads)
        self.wm_cfg, self.search_cfg = wm_cfg, search_cfg
        self.device = device  # a search server's search_server.device; collectors search on the CPU
        self.graphs = graphs  # search.cuda_graphs
        self.adapter = SearchAdapter(untrained_world_model(wm_cfg).to(device).eval(), device, graphs)
        self.rng = np.random.default_rng(seed)
        self.wm_version = 0
        self.net_s = 0.0
        self._pending: tuple[object, int] | None = None
        self._lock = threading.Lock()
        self.prior_source = prior
        self.prior_counts = PriorCounts()
        self.mix, self.fixed_weight, self.adaptive_range = mix, fixed_weight, adaptive_range

    @property
    def llm_version(self) -> int:
        return self.prior_source.version if self.prior_source is not None else 0

    @property
    def prior_errors(self) -> int:
        return self.prior_counts.errors

    def offer(self, model, version: int) -> None:
        with self._lock:
            self._pending = (model, version)

    def _swap(self) -> None:
        from pzstream.model.inference import SearchAdapter

        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None and pending[1] > self.wm_version:
            self.adapter = SearchAdapter(pending[0].to(self.device).eval(), self.device, self.graphs)
            self.wm_version = pending[1]

    def llm_priors(self, histories: list[History], observations: list[str],
                   valids: list[list[str]]) -> list[np.ndarray] | None:
        """The LLM's probabilities over each root's valid actions (one packed prior call for all B roots:
        the LLM's forward is what batching pays for), or None: no LLM, or it failed (such moves play
        with the world model's prior; the fault is counted and logged once, never the collector's)."""
        if self.prior_source is None:
            return None
        try:
            got = self.prior_source.prior(histories, observations, valids)
        except Exception as e:
            self.prior_counts.errors += 1
            if self.prior_counts.errors == 1:
                log.exception("LLM prior failed (%s); playing with the world model's prior for such moves", e)
            return None
        return list(got) if got is not None else None

    def roots_prior(self, root_logits: np.ndarray, legal: np.ndarray,
                    got: list[np.ndarray] | None) -> np.ndarray | None:
        """The mixed root prior [B, K] of the world model's root logits and the LLM's probabilities ``got``
        (None: no LLM prior, the search uses the world model's own). Counts what the LLM could steer
        (``prior_counts``)."""
        from pzstream.search import mix_root_prior, root_llm_weight, softmax_masked

        if got is None:
            return None
        llm = np.zeros_like(root_logits, dtype=np.float32)
        for i, probs in enumerate(got):
            k = min(len(probs), llm.shape[1])
            llm[i, :k] = probs[:k]
        wm = softmax_masked(root_logits, legal)
        weight = root_llm_weight(self.mix, wm, legal, self.fixed_weight, *self.adaptive_range)
        self.prior_counts.priced(llm_prior_shift(llm, weight, legal), weight)
        return mix_root_prior(wm, llm, weight, legal)

    def act(self, history: History, observation: str, valid: list[str]) -> Move:
        return self.search_roots([history], [observation], [valid])[0]

    def search_roots(self, histories: list[History], observations: list[str], valids: list[list[str]],
                     llm_probs: list[np.ndarray] | None | _Ask = ASK) -> list[Move]:
        """One batched search of B roots (a collector's one move, or a search server's batch);
        new world-model weights offered before the call are swapped in first. ``llm_probs``: the LLM's
        priors of these roots when already computed (``llm_priors``; a search server computes the next
        batch's while this one searches), None for none; by default they are asked for here."""
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
                root = self.adapter.root([[(o, a) for o, a, _ in h] for h in histories], observations, valids)
            net += time.perf_counter() - t0
            if isinstance(llm_probs, _Ask):
                llm_probs = self.llm_priors(histories, observations, valids)
            if llm_probs is None and self.prior_source is not None:
                self.prior_counts.fell_back(len(valids))
            mixed = self.roots_prior(root.prior_logits, root.legal, llm_probs)
            result = run_search(RootFnOutput(prior_logits=root.prior_logits, value=root.value, handle=root.handle),
                                recurrent, root.legal, self.search_cfg, self.rng, root_prior=mixed)
        finally:
            self.adapter.reset()
            self.net_s += net
        moves = []
        for i, valid in enumerate(valids):
            k = len(valid)
            probs = np.zeros(k, np.float32)
            kk = min(k, result.visit_probs.shape[1])  # candidates past the model's cap get no visits
            probs[:kk] = result.visit_probs[i, :kk]
            probs /= probs.sum()
            moves.append(Move(int(result.action[i]), probs, float(result.root_value[i]),
                              llm_probs[i] if llm_probs is not None else None))
        return moves


def mcts_policy(cfg, seed: int, prior: PriorSource | None = None, search_cfg=None, device: str = "cpu") -> MctsPolicy:
    """An MctsPolicy with the config's world model, search and LLM mixing (``search_cfg`` overrides the search)."""
    lc = cfg.llm
    return MctsPolicy(cfg.world_model(), search_cfg or cfg.search_config(), seed, prior=prior, mix=lc.mix,
                      fixed_weight=lc.fixed_weight, adaptive_range=(lc.adaptive_low, lc.adaptive_high), device=device,
                      graphs=cfg.search.cuda_graphs)


class SearchService(Protocol):
    """A search server as a collector sees it (pzstream.roles.search_server.SearchClient)."""

    def ask(self, req: SearchRequest, timeout_s: float) -> SearchReply | Reject | None: ...


@dataclass
class ServedStats:
    served: int = 0      # moves searched by the server
    fallbacks: int = 0   # moves searched locally because the server was down, slow or refused
    resends: int = 0     # requests that carried the episode's recent history again
    wait_s: float = 0.0  # time spent waiting for the server
    waits: int = 0       # fallback=wait: asks repeated because the server did not answer


class ServedPolicy:
    """MCTS by a search server, with the collector's own ``MctsPolicy`` as the fallback
    (``fallback="wait"``: ask again every ``retry_s`` instead, until ``stopping()``).

    Each move asks ``service`` with what is new since the last answered request; no answer within
    ``deadline_s`` (or a refusal) plays the move locally and counts it, and the server is not asked
    again for ``retry_s`` (so a dead server costs one deadline, not one per move). When the server
    lost this collector's context (a restart), the request is sent once more with the recent history.
    """

    name = "mcts"

    def __init__(self, local: MctsPolicy, service: SearchService, collector_id: str, deadline_s: float,
                 retry_s: float = 2.0, resend_steps: int = 16, fallback: str = "local"):
        if fallback not in ("local", "wait"):
            raise ValueError(f"fallback must be 'local' or 'wait', got {fallback!r}")
        self.local, self.service, self.collector_id = local, service, collector_id
        self.fallback = fallback
        self.stopping: Callable[[], bool] = lambda: False  # wait mode: give up waiting (play locally) when true
        self.deadline_s, self.retry_s, self.resend_steps = deadline_s, retry_s, resend_steps
        self.stats = ServedStats()
        self.wm_version, self.llm_version = local.wm_version, local.llm_version
        self._episode = 0
        self._last_len = -1     # len(history) at the last move (-1: none yet)
        self._synced = -1       # len(history) the server's context holds for this episode (-1: unknown)
        self._next_id = 0
        self._retry_at = 0.0
        self._down = False

    @property
    def net_s(self) -> float:
        return self.local.net_s + self.stats.wait_s

    def _request(self, history: History, observation: str, valid: list[str], full: bool) -> SearchRequest:
        self._next_id += 1
        if not history:
            return SearchRequest(self.collector_id, self._next_id, self._episode, True, observation, tuple(valid),
                                 "", 0.0, (), (), ())
        if not full and self._synced == len(history) - 1:
            _, a, r = history[-1]
            return SearchRequest(self.collector_id, self._next_id, self._episode, False, observation, tuple(valid),
                                 a, float(r), (), (), ())
        recent = history[-self.resend_steps:]
        self.stats.resends += 1
        return SearchRequest(self.collector_id, self._next_id, self._episode, False, observation, tuple(valid), "", 0.0,
                             tuple(o for o, _, _ in recent), tuple(a for _, a, _ in recent),
                             tuple(float(r) for _, _, r in recent))

    def _ask(self, history: History, observation: str, valid: list[str]) -> Move | None:
        t = time.perf_counter()
        try:
            reply = self.service.ask(self._request(history, observation, valid, full=False), self.deadline_s)
            if isinstance(reply, Reject) and reply.reason == "resend_history" and history:
                reply = self.service.ask(self._request(history, observation, valid, full=True), self.deadline_s)
        finally:
            self.stats.wait_s += time.perf_counter() - t
        if not isinstance(reply, SearchReply) or len(reply.visits) != len(valid) \
                or not 0 <= reply.action_index < len(valid) or (reply.prior and len(reply.prior) != len(valid)):
            why = "no answer" if reply is None else (f"refused: {reply.reason}" if isinstance(reply, Reject)
                                                     else "an answer that does not fit the move")
            if not self._down:
                log.warning("search server gave %s; searching locally (asking again every %.1fs)", why, self.retry_s)
            self._down, self._synced, self._retry_at = True, -1, time.monotonic() + self.retry_s
            return None
        if self._down:
            log.info("search server answers again")
            self._down = False
        self._synced = len(history)
        self.wm_version, self.llm_version = reply.wm_version, reply.llm_version
        self.stats.served += 1
        return Move(reply.action_index, np.asarray(reply.visits, np.float32), float(reply.root_value),
                    np.asarray(reply.prior, np.float32) if reply.prior else None)

    def act(self, history: History, observation: str, valid: list[str]) -> Move:
        # a shorter history than last move's: a new episode (the player restarts it from [])
        if len(history) < self._last_len or (not history and self._last_len >= 0):
            self._episode += 1
        self._last_len = len(history)
        move = self._ask(history, observation, valid) if time.monotonic() >= self._retry_at else None
        while move is None and self.fallback == "wait" and not self.stopping():
            self.stats.waits += 1
            time.sleep(max(0.05, self._retry_at - time.monotonic()))
            move = self._ask(history, observation, valid)
        if move is None:
            self.stats.fallbacks += 1
            move = self.local.act(history, observation, valid)
            self.wm_version, self.llm_version = self.local.wm_version, self.local.llm_version
        return move


class LlmPolicy:
    """The LLM alone: the candidate with the highest prior (evaluation mode 'llm'). Its moves are counted
    as ``MctsPolicy``'s are, at weight 1 (``prior_counts``): a (near) uniform prior is ignored (the first
    candidate wins the tie), a prior source's None a fallback (uniform); an error propagates."""

    name = "llm"
    wm_version = 0

    def __init__(self, prior: PriorSource):
        self.prior_source = prior
        self.net_s = 0.0
        self.prior_counts = PriorCounts()

    @property
    def llm_version(self) -> int:
        return self.prior_source.version

    def act(self, history: History, observation: str, valid: list[str]) -> Move:
        got = self.prior_source.prior([history], [observation], [valid])
        if got is None:
            self.prior_counts.fell_back(1)
            probs = np.full(len(valid), 1.0 / len(valid), np.float32)
        else:
            probs = got[0]
            one = np.ones((1,), np.float64)
            self.prior_counts.priced(llm_prior_shift(probs[None, :], one, np.ones((1, len(probs)), bool)), one)
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
