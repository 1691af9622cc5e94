"""A collector: plays one game (or ``collector.games`` instances of it) and streams its segments
to the learner hub.

The play loop is blocking (Jericho, valid actions) and runs in a worker thread, one segment at a
time (one thread per game instance, each streamed as its own peer, their moves searched together);
the event loop keeps the conversation with the hub alive meanwhile.
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


def served_policy(cfg: Config, local, cid: str, curve: CurveKeys | None) -> ServedPolicy:
    """The search server's client policy for peer ``cid``, with ``local`` (an MctsPolicy, or a game
    instance's seat of the collector's batcher) as its fallback."""
    from pzstream.roles.search_server import SearchClient

    cc = cfg.collector
    assert cc.search_server is not None
    return ServedPolicy(local, SearchClient(cc.search_server, curve), cid, cc.search_deadline_ms / 1000,
                        cc.search_retry_s, fallback=cc.search_fallback)


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
    served = served_policy(cfg, local, cid, curve)
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


def instance_ids(cid: str, games: int) -> list[str]:
    """The peer id of each game instance: the collector's own id for one game, ``ID-gK`` for several."""
    return [cid] if games == 1 else [f"{cid}-g{k}" for k in range(games)]


def instance_seed(seed: int, k: int) -> int:
    """Instance K's seed: the collector's for K = 0 (one game plays as before), then 1000 apart, clear of
    the seeds --role all gives its other collectors (seed + index)."""
    return seed + 1000 * k


@dataclass
class Instance:
    """One game a collector plays, and the peer that streams it."""

    cid: str
    game: object
    plays: Plays
    player: GamePlayer
    sender: SegmentSender | None = None
    unsent: int = 0
    failed: str | None = None  # why its game stopped (an exception), None while it plays


def instance_plays(cfg: Config, plays: Plays, batcher, k: int, cid: str, curve: CurveKeys | None) -> Plays:
    """Instance ``k``'s policy when a collector plays several games: its seat of the batcher (local search),
    or its own search-server client with that seat as the fallback. The LLM prior's counts are the shared
    policy's, reported by instance 0 only (``local`` of the others is their seat, which counts nothing)."""
    seat = batcher.seat(k)
    local = plays.local if k == 0 else seat
    if plays.served is None:
        return Plays(seat, local, plays.prior)
    if k == 0:
        plays.served.local = seat  # the client collector_policy made serves instance 0; it falls back to its seat
        return Plays(plays.served, local, plays.prior, plays.served)
    served = served_policy(cfg, seat, cid, curve)
    return Plays(served, local, plays.prior, served)


async def open_instances(cfg: Config, cid: str, curve: CurveKeys | None) -> tuple[list[Instance], Plays, object]:
    """The collector's game instances, its shared policy (``Plays``) and the batcher of their moves (None: one game)."""
    cc = cfg.collector
    ids = instance_ids(cid, cc.games)
    games = []
    try:
        for k, iid in enumerate(ids):
            log.info("collector %s opening game %r", iid, cc.game)
            games.append(await anyio.to_thread.run_sync(lambda k=k: open_game(
                cc.game, games_dir=cfg.env.games_dir, cache_dir=cfg.env.cache_dir, seed=instance_seed(cc.seed, k),
                valid_actions_budget_s=cfg.env.valid_actions_budget_s,
                valid_action_helpers=cfg.env.valid_action_helpers)))
        from pzstream.model.support import support_warning

        if (why := support_warning(games[0].max_score, cfg.world_model().value_support)) is not None:
            log.warning("collector %s, game %s: %s", cid, games[0].name, why)
        plays = await anyio.to_thread.run_sync(collector_policy, cfg, ids[0], curve)
    except BaseException:
        for g in games:
            g.close()
        raise
    batcher = None
    per_instance = [plays]
    if cc.games > 1 and isinstance(plays.local, MctsPolicy):
        from pzstream.move_batcher import MoveBatcher

        batcher = MoveBatcher(plays.local, cc.games, cc.games_max_wait_ms / 1000)
        per_instance = [instance_plays(cfg, plays, batcher, k, iid, curve) for k, iid in enumerate(ids)]
    elif cc.games > 1:  # random play: each instance its own generator
        per_instance = [Plays(p, p) for p in (RandomPolicy(instance_seed(cc.seed, k)) for k in range(cc.games))]
    instances = [Instance(iid, g, p, GamePlayer(g, p.policy, iid, cc.segment_steps, cc.max_episode_steps,
                                                 instance_seed(cc.seed, k)))
                 for k, (iid, g, p) in enumerate(zip(ids, games, per_instance))]
    return instances, plays, batcher


def open_senders(cfg: Config, ctx: zmq.asyncio.Context, instances: list[Instance], weights: WeightsClient | None,
                 batcher, curve: CurveKeys | None) -> None:
    """Each instance's own peer of the hub (its Hello, its seqs, its stats in the heartbeats)."""
    cc = cfg.collector
    ep = endpoints_for(cc.learner)
    for inst in instances:
        def stats(inst: Instance = inst) -> dict[str, float]:
            return {**collector_stats(inst.game, inst.player, inst.plays, weights, cfg.llm.enabled),
                    **({"games": float(cc.games), "batch_mean": batcher.stats.mean_batch} if batcher is not None else {})}

        hello = Hello(collector_id=inst.cid, game=inst.game.name, host=socket.gethostname(), pid=os.getpid(),
                      capabilities=(f"policy:{inst.plays.policy.name}", "reject_seq"), seed=inst.player.seed)
        inst.sender = SegmentSender(ctx, ep.segments, hello, cfg.hub.heartbeat_s, curve=curve, stats_fn=stats,
                                    timeout_heartbeats=cfg.hub.peer_timeout_heartbeats)


@dataclass
class Playing:
    """What every instance's loop shares: the collector's stop flag, the threads its games step in,
    the batcher of their moves (None: one game), and whether a game's exception ends the collector
    (one instance) or only that instance."""

    cfg: Config
    halt: threading.Event
    threads: anyio.CapacityLimiter
    batcher: object | None
    alone: bool


async def play_instance(inst: Instance, k: int, pl: Playing) -> None:
    """Instance ``k``'s loop: play a segment, send it, repeat; a game that raises stops this instance only
    (logged, its peer says goodbye) unless it is the collector's one game."""
    cc, sender = pl.cfg.collector, inst.sender
    assert sender is not None
    last_report = time.monotonic()
    try:
        while not pl.halt.is_set():
            if cc.max_steps is not None and inst.player.stats.env_steps >= cc.max_steps:
                break
            try:
                seg = await anyio.to_thread.run_sync(inst.player.play_segment, pl.halt, cc.max_steps, limiter=pl.threads)
            except Exception as e:
                if pl.alone:
                    raise
                inst.failed = f"{type(e).__name__}: {e}"
                log.error("collector %s: its game stopped (%s); the other instances play on", inst.cid, inst.failed)
                break
            if seg is not None:
                try:
                    await sender.send(seg)
                except SendAbandoned as e:
                    inst.unsent += 1
                    log.warning("collector %s stopping: %s (%d steps unsent)", inst.cid, e, seg.n_steps)
                    break
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                st = sender.stats_fn()
                log.info("collector %s: %d steps, %d episodes, return %.2f, cache hit %.1f%%, in flight %d",
                         inst.cid, st["env_steps"], st["episodes"], st["return_mean"],
                         100 * st["cache_hits"] / max(1.0, st["cache_hits"] + st["cache_misses"]), sender.inflight)
    finally:
        if pl.batcher is not None:
            pl.batcher.seat(k).close()  # type: ignore[attr-defined]  # the others' batches no longer wait for it
    if sender.stats.welcomes == 0:
        log.error("collector %s was never welcomed by the hub at %s: is the hub running there, and does it "
                  "need CURVE keys (security.curve_dir)?", inst.cid, cc.learner)
    elif not await sender.drain(timeout_s=3 * pl.cfg.hub.heartbeat_s + 2):
        log.warning("collector %s: %d segments unacknowledged at exit", inst.cid, sender.inflight)
    await sender.send_heartbeat(closing=True)  # final stats, and goodbye


async def run_collector(cfg: Config, stop: anyio.Event, curve: CurveKeys | None = None) -> dict[str, object]:
    """Play and stream until ``stop`` is set or ``collector.max_steps`` is reached (per game instance)."""
    cc = cfg.collector
    cid = cc.id or default_collector_id()
    instances, plays, batcher = await open_instances(cfg, cid, curve)
    weights = weights_client_for(cfg, plays.local, plays.prior, cid)
    ctx = zmq.asyncio.Context()
    open_senders(cfg, ctx, instances, weights, batcher, curve)
    notices = NoticeSubscriber(ctx, endpoints_for(cc.learner).weights, curve)
    pl = Playing(cfg, threading.Event(), anyio.CapacityLimiter(cc.games + 2), batcher, len(instances) == 1)
    for inst in instances:
        if inst.plays.served is not None:
            inst.plays.served.stopping = pl.halt.is_set
    conversation_done = anyio.Event()
    log.info("collector %s playing %s against %s%s", cid, instances[0].game.name, cc.learner,
             f" ({cc.games} game instances, moves searched together)" if cc.games > 1 else "")

    async def follow_weights() -> None:
        if weights is not None:
            await weights.follow(notices.recv, instances[0].sender.fetch)  # type: ignore[union-attr]

    async def watch_stop() -> None:
        await stop.wait()
        pl.halt.set()
        for inst in instances:
            inst.sender.give_up(after_s=3 * cfg.hub.heartbeat_s + 2)  # type: ignore[union-attr]

    try:
        async with anyio.create_task_group() as tg:
            for inst in instances:
                tg.start_soon(inst.sender.run, conversation_done)  # type: ignore[union-attr]
            tg.start_soon(follow_weights)
            tg.start_soon(watch_stop)
            async with anyio.create_task_group() as players:
                for k, inst in enumerate(instances):
                    players.start_soon(play_instance, inst, k, pl)
            await anyio.sleep(0.05)
            conversation_done.set()
            tg.cancel_scope.cancel()
    finally:
        for inst in instances:
            inst.sender.close(linger_ms=500)  # type: ignore[union-attr]
        notices.close()
        ctx.destroy(linger=0)
        for inst in instances:
            inst.game.close()
            if inst.plays.served is not None:
                inst.plays.served.service.close()  # type: ignore[attr-defined]
    return collector_result(cid, instances, batcher)


def collector_result(cid: str, instances: list[Instance], batcher) -> dict[str, object]:
    """The collector's summary: one game's figures as before; with several, theirs summed and per instance."""
    def one(inst: Instance) -> dict[str, object]:
        sender = inst.sender
        assert sender is not None
        return {"collector_id": inst.cid, **sender.stats_fn(), "segments_sent": sender.stats.sent,
                "segments_unsent": inst.unsent + sender.inflight, "reconnects": sender.stats.reconnects,
                **({"failed": inst.failed} if inst.failed else {})}

    if len(instances) == 1:
        return one(instances[0])
    rows = [one(inst) for inst in instances]
    summed = {k: sum(float(r[k]) for r in rows) for k in ("env_steps", "episodes", "segments_sent", "segments_unsent")}
    return {"collector_id": cid, "games": len(instances), **summed,
            "batch_mean": batcher.stats.mean_batch if batcher is not None else None,
            "instances_failed": sum(1 for inst in instances if inst.failed), "instances": rows}
