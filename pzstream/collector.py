"""A collector: plays one game and streams its segments to the learner hub.

The play loop is blocking (Jericho, valid actions) and runs in a worker thread, one segment
at a time; the event loop keeps the conversation with the hub alive meanwhile.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

import anyio
import numpy as np
import zmq.asyncio

from pzstream.config import Config
from pzstream.env import Game, open_game
from pzstream.transport import CurveKeys, NoticeSubscriber, SegmentSender, SendAbandoned, endpoints_for
from pzstream.wire import Hello, Segment, SegmentHeader

log = logging.getLogger("pzstream.collector")


def default_collector_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class PlayerStats:
    env_steps: int = 0
    episodes: int = 0
    returns: list[float] = field(default_factory=list)
    play_s: float = 0.0


class RandomPlayer:
    """Plays ``game`` with a uniform random policy over its valid actions.

    Stands in for the search until the world model exists; its segments are real
    (the visit distribution is the uniform policy it sampled from).
    """

    def __init__(self, game: Game, collector_id: str, segment_steps: int, max_episode_steps: int, seed: int):
        self.game = game
        self.collector_id = collector_id
        self.segment_steps = segment_steps
        self.max_episode_steps = max_episode_steps
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.stats = PlayerStats()
        self.versions = {"wm": 0, "llm": 0}
        self._obs: str | None = None
        self._episode = -1
        self._t = 0  # step index within the episode
        self._return = 0.0

    def play_segment(self, stop: threading.Event, max_steps: int | None = None) -> Segment | None:
        """Play up to ``segment_steps`` steps (fewer at an episode end or on ``stop``)."""
        t_start = time.time()
        if self._obs is None:
            self._episode += 1
            self._obs = self.game.reset(seed=self.seed + self._episode)
            self._t, self._return = 0, 0.0
        episode, step0 = self._episode, self._t
        obs, cands, idx, texts, rewards, scores, dones = [], [], [], [], [], [], []
        while len(obs) < self.segment_steps and not stop.is_set():
            if max_steps is not None and self.stats.env_steps >= max_steps:
                break
            valid = self.game.valid_actions()
            a = int(self.rng.integers(len(valid)))
            res = self.game.step(valid[a])
            self._t += 1
            self.stats.env_steps += 1
            self._return += res.reward
            ended = res.done or self._t >= self.max_episode_steps
            obs.append(self._obs)
            cands.append(valid)
            idx.append(a)
            texts.append(valid[a])
            rewards.append(res.reward)
            scores.append(res.score)
            dones.append(ended)
            self._obs = res.observation
            if ended:
                self.stats.episodes += 1
                self.stats.returns.append(self._return)
                self._obs = None
                break
        self.stats.play_s += time.time() - t_start
        if not obs:
            return None
        sizes = np.array([len(c) for c in cands], dtype=np.int32)
        offsets = np.zeros(len(cands) + 1, dtype=np.int32)
        np.cumsum(sizes, out=offsets[1:])
        uniform = np.repeat(1.0 / sizes, sizes).astype(np.float32)
        header = SegmentHeader(game=self.game.name, collector_id=self.collector_id, seq=0, episode_id=episode,
                               step0=step0, wm_version=self.versions["wm"], llm_version=self.versions["llm"],
                               t_start=t_start, t_end=time.time())
        return Segment(header=header, observations=obs, cand_offsets=offsets,
                       candidates=[c for step in cands for c in step], action_index=np.array(idx, dtype=np.int32),
                       action_text=texts, reward=np.array(rewards, dtype=np.float32),
                       score=np.array(scores, dtype=np.int32), done=np.array(dones, dtype=bool),
                       visits=uniform, prior=uniform.copy(), root_value=np.full(len(obs), np.nan, dtype=np.float32))


async def run_collector(cfg: Config, stop: anyio.Event, curve: CurveKeys | None = None) -> dict[str, object]:
    """Play and stream until ``stop`` is set or ``collector.max_steps`` is reached."""
    cc = cfg.collector
    cid = cc.id or default_collector_id()
    ep = endpoints_for(cc.learner)
    log.info("collector %s opening game %r", cid, cc.game)
    game = await anyio.to_thread.run_sync(lambda: open_game(
        cc.game, games_dir=cfg.env.games_dir, cache_dir=cfg.env.cache_dir, seed=cc.seed))
    player = RandomPlayer(game, cid, cc.segment_steps, cc.max_episode_steps, cc.seed)

    def stats() -> dict[str, float]:
        cs = game.cache_stats()
        s = player.stats
        return {"env_steps": float(s.env_steps), "episodes": float(s.episodes),
                "cache_hits": float(cs.get("hits", 0)), "cache_misses": float(cs.get("misses", 0)),
                "valid_action_s": float(cs.get("valid_action_s", 0.0)), "play_s": s.play_s,
                "return_mean": float(np.mean(s.returns[-20:])) if s.returns else 0.0}

    ctx = zmq.asyncio.Context()
    hello = Hello(collector_id=cid, game=game.name, host=socket.gethostname(), pid=os.getpid(),
                  capabilities=("random_policy",))
    sender = SegmentSender(ctx, ep.segments, hello, cfg.hub.heartbeat_s, curve=curve, stats_fn=stats)
    notices = NoticeSubscriber(ctx, ep.weights, curve)
    halt = threading.Event()
    conversation_done = anyio.Event()
    log.info("collector %s playing %s against %s", cid, game.name, cc.learner)

    async def follow_weights() -> None:
        while True:
            note = await notices.recv()
            if note.model in player.versions and note.version != player.versions[note.model]:
                log.info("weights notice: %s v%d (was v%d)", note.model, note.version, player.versions[note.model])
                player.versions[note.model] = note.version

    async def watch_stop() -> None:
        await stop.wait()
        halt.set()
        sender.give_up(after_s=3 * cfg.hub.heartbeat_s + 2)

    last_report = time.monotonic()
    unsent = 0
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sender.run, conversation_done)
            tg.start_soon(follow_weights)
            tg.start_soon(watch_stop)
            while not halt.is_set():
                if cc.max_steps is not None and player.stats.env_steps >= cc.max_steps:
                    break
                seg = await anyio.to_thread.run_sync(player.play_segment, halt, cc.max_steps)
                if seg is not None:
                    try:
                        await sender.send(seg)
                    except SendAbandoned as e:
                        unsent += 1
                        log.warning("collector %s stopping: %s (%d steps unsent)", cid, e, seg.n_steps)
                        break
                if time.monotonic() - last_report > 10:
                    last_report = time.monotonic()
                    s = stats()
                    log.info("collector %s: %d steps, %d episodes, return %.2f, cache hit %.1f%%, in flight %d",
                             cid, s["env_steps"], s["episodes"], s["return_mean"],
                             100 * s["cache_hits"] / max(1.0, s["cache_hits"] + s["cache_misses"]), sender.inflight)
            if sender.stats.welcomes == 0:
                log.error("collector %s was never welcomed by the hub at %s: is the hub running there, and does it "
                          "need CURVE keys (security.curve_dir)?", cid, cc.learner)
            elif not await sender.drain(timeout_s=3 * cfg.hub.heartbeat_s + 2):
                log.warning("collector %s: %d segments unacknowledged at exit", cid, sender.inflight)
            await sender.send_heartbeat()  # final stats
            await anyio.sleep(0.05)
            conversation_done.set()
            tg.cancel_scope.cancel()
    finally:
        sender.close(linger_ms=500)
        notices.close()
        ctx.destroy(linger=0)
        game.close()
    return {"collector_id": cid, **stats(), "segments_sent": sender.stats.sent, "segments_unsent": unsent + sender.inflight,
            "reconnects": sender.stats.reconnects}
