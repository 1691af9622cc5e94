"""Central search (as SEED RL's central inference): one process runs MCTS for many collectors.

``python launch.py --role search --search tcp://0.0.0.0:5700 --learner tcp://HUB:5555``

Collectors send one ``SearchRequest`` per move (only what is new since their last one: the
server keeps each collector's recent history in a ``ContextStore``). The server queues the roots
fairly (``FairQueue``: one per collector per round), and each batch of up to
``search_server.max_batch`` roots (waiting at most ``search_server.max_wait_ms`` for more) runs
as one batched search in two stages: the LLM prior over all roots (one packed call), then the world
model's initial inference, the root mixing and the MCTS of ``MctsPolicy.search_roots``. The stages
overlap: the next batch is priced while this one searches (on a CPU the two use different cores; on a
GPU the LLM and the world model may sit on different devices). Each collector gets a
``SearchReply`` stamped with the weights versions its batch used; new weights (followed from the
hub like any reader) are installed between batches, never during one.

``SearchClient`` is the collectors' side: a blocking DEALER used from the play thread
(``pzstream.agent.ServedPolicy`` decides when to ask and when to search locally instead).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import anyio
import numpy as np
import zmq
import zmq.asyncio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from pzstream.agent import MctsPolicy, mcts_policy
from pzstream.config import Config
from pzstream.llm.factory import History, LocalPrior, PriorSource
from pzstream.roles.prior_process import PriorProcess
from pzstream.roles.serving import RequestRouter, client_socket, follow_hub
from pzstream.search.batcher import ContextStore, FairQueue
from pzstream.stream import wire
from pzstream.stream.transport import CurveKeys, check_bind_security
from pzstream.stream.weights_client import WeightsClient

log = logging.getLogger("pzstream.search_server")


class SearchClient:
    """One collector's connection to its search server (blocking; used from the play thread)."""

    def __init__(self, address: str, curve: CurveKeys | None = None):
        self.address, self.curve = address, curve
        self._ctx = zmq.Context()
        self._sock: zmq.Socket | None = None
        self._connect()

    def _connect(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
        self._sock = client_socket(self._ctx, self.address, self.curve)

    def ask(self, req: wire.SearchRequest, timeout_s: float) -> wire.SearchReply | wire.Reject | None:
        """The server's answer to ``req`` (a reply or a reject), or None: no answer in ``timeout_s``
        (the connection is then dropped with whatever it had queued, and made again)."""
        sock = self._sock
        assert sock is not None
        try:
            sock.send(wire.encode(req), flags=zmq.NOBLOCK)
            deadline = time.monotonic() + timeout_s
            while (left := deadline - time.monotonic()) > 0:
                if not sock.poll(int(left * 1000) + 1):
                    break
                try:
                    msg = wire.decode(sock.recv())
                except wire.WireError:
                    continue
                # answers to requests given up on earlier are skipped
                if isinstance(msg, wire.SearchReply) and msg.request_id == req.request_id:
                    return msg
                if isinstance(msg, wire.Reject) and msg.seq in (None, req.request_id):
                    return msg
        except zmq.ZMQError as e:
            log.debug("search request failed: %s", e)
        self._connect()
        return None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
        self._ctx.term()


@dataclass(frozen=True)
class Root:
    """One queued request, its context resolved: history (the steps before ``observation``), the candidates [K]."""

    ident: bytes
    collector_id: str
    request_id: int
    history: History
    observation: str
    candidates: list[str]
    arrived: float  # time.monotonic() when it was read off the socket


@dataclass(frozen=True)
class Priced:
    """A batch whose LLM priors are computed (``BatchSearch.price``), waiting for its search."""

    roots: list[Root]
    llm_probs: list[np.ndarray] | None  # None: no LLM (or it failed): the world model's prior alone
    llm_version: int


class BatchSearch:
    """The server's models and its batched search, in two stages that may overlap on different batches:
    ``price`` (the LLM prior of a batch's roots) and ``search`` (the world model's inference, the root
    mixing and the MCTS). Each stage holds its own model's lock, and installs take the same lock, so new
    weights land between batches and every answer of a batch names the versions it used."""

    def __init__(self, policy: MctsPolicy, prior: PriorSource | None):
        self.policy, self.prior = policy, prior
        self._wm_lock = threading.Lock()
        self._llm_lock = threading.Lock()

    def install_wm(self, data: bytes, version: int) -> None:
        from pzstream.model.world_model import load_weights_bytes, untrained_world_model

        model = untrained_world_model(self.policy.wm_cfg)
        load_weights_bytes(model, data)  # raises ValueError on a mismatch: the old weights stay
        with self._wm_lock:
            self.policy.offer(model, version)

    @property
    def installs_llm(self) -> bool:
        """Whether the LLM's weights are this process's to install (a prior in another process follows the hub itself)."""
        return isinstance(self.prior, LocalPrior)

    def install_llm(self, data: bytes, version: int) -> None:
        assert isinstance(self.prior, LocalPrior)
        with self._llm_lock:
            self.prior.load(data, version)

    def prior_stats(self) -> dict[str, float]:
        """The LLM's reuse: roots answered from the memo, and prompt tokens the shared-prefix cache saved."""
        if self.prior is None:
            return {}
        counts = self.policy.prior_counts.as_stats()  # what the prior did for the searches (issue 21)
        if not isinstance(self.prior, LocalPrior):
            return {"prior_s": float(self.prior.net_s), "prior_failures": float(getattr(self.prior, "failures", 0)),
                    **counts}
        memo, prefix = self.prior.memo, getattr(self.prior.backend, "prefix", None)
        return {"prior_s": float(self.prior.net_s), "memo_hits": float(memo.hits), "memo_misses": float(memo.misses),
                "prefix_tokens_saved": float(prefix.tokens_saved) if prefix is not None else 0.0, **counts}

    def price(self, roots: list[Root]) -> Priced:
        """Stage 1: the LLM prior over every root of the batch (one packed call)."""
        with self._llm_lock:
            probs = self.policy.llm_priors([r.history for r in roots], [r.observation for r in roots],
                                           [r.candidates for r in roots])
            return Priced(roots, probs, self.policy.llm_version)

    def search(self, priced: Priced) -> list[wire.SearchReply]:
        """Stage 2: the batched search of a priced batch."""
        roots = priced.roots
        with self._wm_lock:
            moves = self.policy.search_roots([r.history for r in roots], [r.observation for r in roots],
                                             [r.candidates for r in roots], llm_probs=priced.llm_probs)
            wm = self.policy.wm_version
        return [wire.SearchReply(request_id=r.request_id, action_index=m.index, visits=tuple(m.policy.tolist()),
                                 root_value=m.root_value, prior=tuple(m.prior.tolist()) if m.prior is not None else (),
                                 wm_version=wm, llm_version=priced.llm_version, batch=len(roots))
                for r, m in zip(roots, moves)]

    def run(self, roots: list[Root]) -> list[wire.SearchReply]:
        """Both stages, one after the other."""
        return self.search(self.price(roots))


def wants_search_server(cfg: Config, cpus: int) -> tuple[bool, str]:
    """Whether ``--role all`` serves its collectors' searches from one search server, and why.

    Measured on a 2-core CPU (bench/serve.py, RESULTS.md): a server is slower than local search
    with 2 collectors (0.66x), even with 4 (1.09x) and faster with 8 (1.4-1.65x with the LLM,
    2.1-2.4x without), since batching pays for per-call overheads that one core per collector does not
    have to share. On a GPU it is where the models belong."""
    sc = cfg.search_server
    if sc.address:
        return True, f"search_server.address is {sc.address}"
    if sc.start != "auto":
        return sc.start == "always", f"search_server.start={sc.start}"
    if cfg.collector.policy != "mcts" and not cfg.collector.policies:
        return False, "the collectors do not search (collector.policy=random)"
    if sc.device.startswith("cuda"):
        return True, f"search_server.device={sc.device}"
    need = sc.auto_collectors_per_cpu * max(1, cpus)
    if cfg.collector.count >= need:
        return True, f"{cfg.collector.count} collectors on {cpus} CPU core(s) (>= {need:g})"
    return False, f"{cfg.collector.count} collectors on {cpus} CPU core(s): local search is faster below {need:g}"


def pipeline_depth(cfg: Config) -> tuple[int, str]:
    """Batches a search server keeps in flight, and why: 2 (the next batch's LLM prior is computed
    while this one searches) or 1 (each batch priced and searched before the next is formed).

    Measured (bench/serve.py, RESULTS.md): without the LLM there is nothing to overlap, and forming
    the next batch early only makes batches smaller (2.4x local search -> 1.7x on a 2-core CPU); on
    a GPU the card idles during the host side of the tree search, which the next prior fills."""
    mode = cfg.search_server.pipeline
    if mode != "auto":
        return (2, "pipelined: search_server.pipeline=always") if mode == "always" else (
            1, "one batch at a time: search_server.pipeline=never")
    if not cfg.llm.enabled:
        return 1, "one batch at a time: no LLM prior to overlap"
    if cfg.llm.prior_server or cfg.search_server.prior == "process":
        return 2, "pipelined: the next batch's LLM prior (in another process) while this one searches"
    if cfg.search_server.device.startswith("cuda") or cfg.llm.device.startswith("cuda"):
        return 2, "pipelined: the next batch's LLM prior while this one searches"
    return 1, "one batch at a time on a CPU"


def batch_search_for(cfg: Config, prior_address: str | None = None, curve: CurveKeys | None = None) -> BatchSearch:
    """The models of a search server: the config's world model on search_server.device, and the LLM when
    llm.enabled: in this process, or asked of the prior server at ``prior_address``."""
    import torch

    from pzstream.roles.prior_server import prior_source

    sc = cfg.search_server
    torch.set_num_threads(sc.threads)
    prior = prior_source(cfg.llm, curve, prior_address) if cfg.llm.enabled else None
    return BatchSearch(mcts_policy(cfg, sc.seed, prior, device=sc.device), prior)


def prior_placement(cfg: Config, curve: CurveKeys | None, hub_address: str | None) -> tuple[str | None, PriorProcess | None]:
    """Where a search server asks its LLM prior: None (in this process), llm.prior_server, or a prior
    process it starts (search_server.prior=process), which it then owns."""
    if not cfg.llm.enabled:
        return None, None
    if cfg.llm.prior_server:
        return cfg.llm.prior_server, None
    if cfg.search_server.prior == "process":
        proc = PriorProcess(cfg, curve, hub_address)
        return proc.address, proc
    return None, None


class SearchServer:
    """The serving loop's parts, in the order a request flows through them: ``receive`` (check the
    request, advance the collector's context, queue its root fairly), ``batches`` (stage 1: form a
    batch and price it), ``searches`` (stage 2: search it and answer). At most ``depth`` batches are
    in flight (``pipeline_depth``)."""

    def __init__(self, cfg: Config, router: RequestRouter, searcher: BatchSearch, depth: int):
        sc = cfg.search_server
        self.max_batch, self.max_wait_s = sc.max_batch, sc.max_wait_ms / 1000
        self.router, self.searcher = router, searcher
        self.queue: FairQueue[Root] = FairQueue(per_collector=sc.max_batch)
        self.contexts = ContextStore(max(sc.keep_steps, cfg.world_model().context_steps, cfg.llm.history_len))
        self.stats = {"requests": 0.0, "roots": 0.0, "batches": 0.0, "max_batch_seen": 0.0, "search_s": 0.0,
                      "wm_version": 0.0, "llm_version": 0.0, "priced_while_searching": 0.0}
        self._wake = anyio.Event()  # set when roots were queued
        self._searching = False  # stage 2 is searching a batch (stage 1 may price the next meanwhile)
        self._in_flight = anyio.Semaphore(depth)  # batches formed and not yet answered

    async def receive(self) -> None:
        while True:
            for ident, req in await self.router.requests():
                assert isinstance(req, wire.SearchRequest)
                self.stats["requests"] += 1
                if not self.queue.has_room(req.collector_id):
                    await self.router.reject(ident, "busy", f"{self.max_batch} requests of {req.collector_id} "
                                             "already queued", req.request_id)
                    continue
                history = self.contexts.advance(req.collector_id, req.episode_id, req.reset, req.observation,
                                                req.last_action, req.last_reward,
                                                list(zip(req.history_observations, req.history_actions,
                                                         req.history_rewards)))
                if history is None:
                    await self.router.reject(ident, "resend_history", f"no context for {req.collector_id} episode "
                                             f"{req.episode_id}: send its recent history", req.request_id)
                    continue
                self.queue.put(req.collector_id, Root(ident, req.collector_id, req.request_id, history,
                                                      req.observation, list(req.candidates), time.monotonic()))
            self._wake.set()

    async def _woken(self, timeout_s: float | None = None) -> None:
        with anyio.move_on_after(timeout_s):
            await self._wake.wait()
        self._wake = anyio.Event()

    async def batches(self, priced_out: MemoryObjectSendStream[tuple[Priced, float]]) -> None:
        """Stage 1: form a batch (fairly, waiting at most max_wait_ms for more roots) and price it."""
        async with priced_out:
            while True:
                await self._in_flight.acquire()
                while not self.queue:
                    await self._woken()
                deadline = time.monotonic() + self.max_wait_s
                while len(self.queue) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                    await self._woken(left)
                roots = self.queue.take(self.max_batch)
                self.stats["priced_while_searching"] += float(self._searching)
                t = time.perf_counter()
                try:
                    priced = await anyio.to_thread.run_sync(self.searcher.price, roots)
                except Exception as e:
                    self._in_flight.release()
                    await self._fail(roots, e)
                    continue
                await priced_out.send((priced, time.perf_counter() - t))

    async def searches(self, priced_in: MemoryObjectReceiveStream[tuple[Priced, float]]) -> None:
        """Stage 2: search each priced batch and answer its collectors."""
        async with priced_in:
            async for priced, price_s in priced_in:
                t = time.perf_counter()
                self._searching = True
                try:
                    replies = await anyio.to_thread.run_sync(self.searcher.search, priced)
                except Exception as e:
                    await self._fail(priced.roots, e)
                    continue
                finally:
                    self._searching = False
                    self._in_flight.release()
                self.stats["search_s"] += price_s + time.perf_counter() - t
                for r, reply in zip(priced.roots, replies):
                    await self.router.send(r.ident, reply)
                self.stats["roots"] += len(replies)
                self.stats["batches"] += 1
                self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], float(len(replies)))
                self.stats["wm_version"] = float(replies[0].wm_version)
                self.stats["llm_version"] = float(replies[0].llm_version)

    async def _fail(self, roots: list[Root], e: Exception) -> None:
        """A fault in one batch is answered, and the server goes on."""
        log.error("search of %d roots failed: %s", len(roots), e, exc_info=e)
        for r in roots:
            self.contexts.forget(r.collector_id)
            await self.router.reject(r.ident, "search_failed", str(e), r.request_id)

    def summary(self) -> dict[str, float]:
        s = self.stats
        return {**s, "mean_batch": s["roots"] / max(1.0, s["batches"]), "contexts": float(len(self.contexts)),
                **self.searcher.prior_stats(), **{f"rejected_{k}": float(v) for k, v in self.router.rejected.items()}}

    async def sample_gpu(self, device: str, every_s: float = 5.0) -> None:
        """Keep ``gpu_util`` (percent busy, NVML) of the server's card in its stats, for the hub's report."""
        from pzstream.stream.report_record import gpu_utilization

        while True:
            util = await anyio.to_thread.run_sync(gpu_utilization, device)
            if util is None:
                return  # no way to ask here: the stats carry no gpu_util
            self.stats["gpu_util"] = util
            await anyio.sleep(every_s)

    async def report(self, every_s: float = 10.0) -> None:
        last, t_last = 0.0, time.monotonic()
        while True:
            await anyio.sleep(every_s)
            now, s = time.monotonic(), self.summary()
            log.info("search server: %.1f roots/s, mean batch %.1f, %d collectors, wm v%d, llm v%d, rejected %s",
                     (s["roots"] - last) / (now - t_last), s["mean_batch"], s["contexts"], s["wm_version"],
                     s["llm_version"], dict(self.router.rejected) or "none")
            last, t_last = s["roots"], now


async def run_search_server(cfg: Config, address: str, stop: anyio.Event, curve: CurveKeys | None = None,
                            hub_address: str | None = None, searcher: BatchSearch | None = None) -> dict[str, float]:
    """Serve searches on ``address`` until ``stop``; follow the hub's weights when ``hub_address`` is given."""
    check_bind_security(address, curve, cfg.security.allow_insecure)  # as the hub: no open port without CURVE
    prior_address, prior_proc = (None, None) if searcher is not None else prior_placement(cfg, curve, hub_address)
    try:
        searcher = searcher or await anyio.to_thread.run_sync(batch_search_for, cfg, prior_address, curve)
        if prior_proc is not None:
            probe = ([[]], ["You are in a room."], [["look"]])
            await anyio.to_thread.run_sync(prior_proc.wait_ready, lambda: searcher.prior.prior(*probe), 600.0)
        return await _serve(cfg, address, stop, curve, hub_address, searcher, prior_proc)
    finally:
        if prior_proc is not None:
            prior_proc.stop()


async def _serve(cfg: Config, address: str, stop: anyio.Event, curve: CurveKeys | None, hub_address: str | None,
                 searcher: BatchSearch, prior_proc: PriorProcess | None) -> dict[str, float]:
    sc = cfg.search_server
    limits = wire.WireLimits(max_message_bytes=cfg.wire.max_message_bytes, max_array_elements=cfg.wire.max_array_elements,
                             max_steps=cfg.wire.max_steps, max_candidates_per_step=cfg.wire.max_candidates_per_step)
    ctx = zmq.asyncio.Context()
    router = RequestRouter(ctx, address, curve, wire.SearchRequest, limits, max_request_bytes=sc.max_request_bytes)
    depth, why = pipeline_depth(cfg)
    server = SearchServer(cfg, router, searcher, depth)
    log.info("search server on %s (%s, max batch %d, wait %.1f ms, %s)%s", address, sc.device, sc.max_batch,
             sc.max_wait_ms, why, f", following hub {hub_address}" if hub_address else "")
    installers = {"wm": searcher.install_wm} | ({"llm": searcher.install_llm} if searcher.installs_llm else {})
    weights = WeightsClient(installers, who="search server")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.receive)
            priced_out, priced_in = anyio.create_memory_object_stream[tuple[Priced, float]](0)
            tg.start_soon(server.batches, priced_out)
            tg.start_soon(server.searches, priced_in)
            tg.start_soon(server.report)
            if sc.device.startswith("cuda"):
                tg.start_soon(server.sample_gpu, sc.device)
            if prior_proc is not None:
                tg.start_soon(_watch, prior_proc)
            if hub_address:
                tg.start_soon(follow_hub, ctx, cfg, hub_address, "search", weights, server.summary, curve, stop)
            await stop.wait()
            tg.cancel_scope.cancel()
    finally:
        router.close()
        ctx.destroy(linger=0)
    return server.summary()


async def _watch(prior_proc: PriorProcess, every_s: float = 2.0) -> None:
    """Restart the LLM prior process when it dies (meanwhile its client answers None: the world model's prior)."""
    while True:
        await anyio.sleep(every_s)
        prior_proc.restart_if_dead()
