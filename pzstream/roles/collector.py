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
from dataclasses import dataclass

import anyio
import numpy as np
import zmq.asyncio

from pzstream.agent import GamePlayer, MctsPolicy, Policy, RandomPlayer, RandomPolicy, ServedPolicy, mcts_policy  # noqa: F401
from pzstream.llm.factory import LocalPrior, PriorSource
from pzstream.config import Config
from pzstream.env import open_game
from pzstream.stream.report_record import process_rss_bytes
from pzstream.stream.transport import CurveKeys, NoticeSubscriber, SegmentSender, SendAbandoned, endpoints_for
from pzstream.stream.weights_client import Install, WeightsClient
from pzstream.stream.wire import Hello

log = logging.getLogger("pzstream.collector")


def default_collector_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def make_prior_source(cfg: Config, curve: CurveKeys | None = None) -> PriorSource:
    """The LLM prior: in this process, or a --role prior server when llm.prior_server is set."""
    from pzstream.roles.prior_server import prior_source

    return prior_source(cfg.llm, curve, cfg.llm.prior_server)


def weights_client_for(cfg: Config, policy: Policy, prior: PriorSource | None, cid: str) -> WeightsClient | None:
    """What this collector loads: the world model for its search (swapped in at the next move)
    and the LLM when it runs in process (a prior server loads its own). Random play loads nothing."""
    if not isinstance(policy, MctsPolicy):
        return None

    def install_wm(data: bytes, version: int) -> None:
        from pzstream.model.world_model import load_weights_bytes, untrained_world_model

        model = untrained_world_model(cfg.world_model())
        load_weights_bytes(model, data)
        policy.offer(model, version)

    installers: dict[str, Install] = {"wm": install_wm}
    if isinstance(prior, LocalPrior):
        installers["llm"] = prior.load
    return WeightsClient(installers, who=f"collector {cid}", max_bytes=cfg.wire.max_weights_bytes)


@dataclass(frozen=True)
class Plays:
    """How a collector chooses its moves: ``policy`` (what the player asks), ``local`` (its own
    search, or random play), the LLM ``prior`` it scores with (None: none here) and ``served``
    (the search server's client policy, when it has one)."""

    policy: Policy
    local: Policy
    prior: PriorSource | None = None
    served: ServedPolicy | None = None


def collector_policy(cfg: Config, cid: str, curve: CurveKeys | None) -> Plays:
    """The config's policy: random play, or MCTS searched here or by a search server (with local fallback)."""
    cc = cfg.collector
    if cc.policy != "mcts":
        random_play = RandomPolicy(cc.seed)
        return Plays(random_play, random_play)
    prior = None
    if cfg.llm.enabled and not (cc.search == "server" and cc.search_fallback == "wait"):
        prior = make_prior_source(cfg, curve)  # waiting collectors never score
    local = mcts_policy(cfg, cc.seed, prior)
    if cc.search != "server":
        return Plays(local, local, prior)
    from pzstream.roles.search_server import SearchClient

    assert cc.search_server is not None
    served = ServedPolicy(local, SearchClient(cc.search_server, curve), cid, cc.search_deadline_ms / 1000,
                          cc.search_retry_s, fallback=cc.search_fallback)
    log.info("collector %s searches on %s (%s after %.0f ms)", cid, cc.search_server,
             "local fallback" if cc.search_fallback == "local" else "asking again", cc.search_deadline_ms)
    return Plays(served, local, prior, served)


def collector_stats(game, player: GamePlayer, plays: Plays, weights: WeightsClient | None,
                    llm_enabled: bool) -> dict[str, float]:
    """The collector's heartbeat stats: play, valid actions, search, weights, returns and memory."""
    cs = game.cache_stats()
    s = player.stats
    policy, prior, served = plays.policy, plays.prior, plays.served
    return {"env_steps": float(s.env_steps), "episodes": float(s.episodes),
            "cache_hits": float(cs.get("hits", 0)), "cache_misses": float(cs.get("misses", 0)),
            "valid_action_s": float(cs.get("valid_action_s", 0.0)), "play_s": s.play_s,
            "va_over_budget": float(cs.get("over_budget", 0)), "va_fallbacks": float(cs.get("fallbacks", 0)),
            "valid_action_share": s.valid_s / s.play_s if s.play_s else 0.0,
            "env_s": s.env_s, "valid_s": s.valid_s, "policy_s": s.policy_s, "net_s": policy.net_s,
            **({"wm_version": float(policy.wm_version)} if policy.name == "mcts" else {}),
            **({"llm_version": float(prior.version), "prior_failures": float(getattr(prior, "failures", 0))}
               if prior is not None else {}),
            # what the LLM prior did for this collector's own searches (moves, errors, fallbacks, ignored)
            **(plays.local.prior_counts.as_stats() if prior is not None and isinstance(plays.local, MctsPolicy) else {}),
            **({"llm_version": float(served.llm_version)} if prior is None and served is not None and llm_enabled
               else {}),
            "weights_rejected": float(weights.stats.rejected if weights is not None else 0),
            **({"weights_gone": float(weights.stats.gone), "weights_timeouts": float(weights.stats.timeouts)}
               if weights is not None else {}),
            **({"search_served": float(served.stats.served), "search_fallbacks": float(served.stats.fallbacks),
                "search_resends": float(served.stats.resends), "search_waits": float(served.stats.waits)}
               if served is not None else {}),
            "return_mean": float(np.mean(s.returns[-20:])) if s.returns else 0.0,
            **({"rss_bytes": float(rss)} if (rss := process_rss_bytes()) is not None else {})}  # the dashboard's memory panel


async def run_collector(cfg: Config, stop: anyio.Event, curve: CurveKeys | None = None) -> dict[str, object]:
    """Play and stream until ``stop`` is set or ``collector.max_steps`` is reached."""
    cc = cfg.collector
    cid = cc.id or default_collector_id()
    ep = endpoints_for(cc.learner)
    log.info("collector %s opening game %r", cid, cc.game)
    game = await anyio.to_thread.run_sync(lambda: open_game(
        cc.game, games_dir=cfg.env.games_dir, cache_dir=cfg.env.cache_dir, seed=cc.seed,
        valid_actions_budget_s=cfg.env.valid_actions_budget_s, valid_action_helpers=cfg.env.valid_action_helpers))
    from pzstream.model.support import support_warning

    if (why := support_warning(game.max_score, cfg.world_model().value_support)) is not None:
        log.warning("collector %s, game %s: %s", cid, game.name, why)
    plays = await anyio.to_thread.run_sync(collector_policy, cfg, cid, curve)
    policy, prior, served = plays.policy, plays.prior, plays.served
    player = GamePlayer(game, policy, cid, cc.segment_steps, cc.max_episode_steps, cc.seed)
    weights = weights_client_for(cfg, plays.local, prior, cid)

    def stats() -> dict[str, float]:
        return collector_stats(game, player, plays, weights, cfg.llm.enabled)

    ctx = zmq.asyncio.Context()
    hello = Hello(collector_id=cid, game=game.name, host=socket.gethostname(), pid=os.getpid(),
                  capabilities=(f"policy:{policy.name}", "reject_seq"), seed=cc.seed)
    sender = SegmentSender(ctx, ep.segments, hello, cfg.hub.heartbeat_s, curve=curve, stats_fn=stats,
                           timeout_heartbeats=cfg.hub.peer_timeout_heartbeats)
    notices = NoticeSubscriber(ctx, ep.weights, curve)
    halt = threading.Event()
    if served is not None:
        served.stopping = halt.is_set
    conversation_done = anyio.Event()
    log.info("collector %s playing %s against %s", cid, game.name, cc.learner)

    async def follow_weights() -> None:
        if weights is not None:
            await weights.follow(notices.recv, sender.fetch)

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
            await sender.send_heartbeat(closing=True)  # final stats, and goodbye
            await anyio.sleep(0.05)
            conversation_done.set()
            tg.cancel_scope.cancel()
    finally:
        sender.close(linger_ms=500)
        notices.close()
        ctx.destroy(linger=0)
        game.close()
        if served is not None:
            served.service.close()  # type: ignore[attr-defined]
    return {"collector_id": cid, **stats(), "segments_sent": sender.stats.sent, "segments_unsent": unsent + sender.inflight,
            "reconnects": sender.stats.reconnects}
