"""Central LLM inference (as SEED RL does): one process scores the candidates of many collectors.

The LLM half of ``--role search`` (pzstream/roles/search_server.py), for layouts that keep the
search at the collectors; both serve through pzstream/roles/serving.py. Server: a ROUTER at ``llm.prior_server``; it drains every request waiting, scores all their roots
in one batch, answers each collector, and applies new LLM weights in one place (it follows the
hub's weights notices and fetches the bytes like a collector). Client: ``RemotePrior``, a
blocking DEALER used from a collector's play thread; when the server does not answer in
``llm.prior_timeout_s`` the collector plays with the world model's prior alone and says so.
"""
from __future__ import annotations

import logging
import threading
import time

import anyio
import numpy as np
import zmq
import zmq.asyncio

from pzstream.stream import wire
from pzstream.llm.factory import History, PriorSource
from pzstream.llm.memo import PriorMemo, memo_key
from pzstream.config import Config
from pzstream.roles.serving import RequestRouter, client_socket, follow_hub, score_request_problem
from pzstream.stream.transport import CurveKeys, check_bind_security
from pzstream.stream.weights_client import WeightsClient

log = logging.getLogger("pzstream.prior")


class RemotePrior:
    """Asks a prior server; returns None (and logs once per outage) when it does not answer."""

    def __init__(self, address: str, timeout_s: float, prompt_cfg, curve: CurveKeys | None = None,
                 list_candidates: bool = False, *, model: str):
        from transformers import AutoTokenizer

        from pzstream.llm.tiny import resolve_model

        self.address, self.timeout_s, self.prompt_cfg, self.curve = address, timeout_s, prompt_cfg, curve
        self.list_candidates = list_candidates
        # prompts are fitted here, by the rule the local prior uses, with the server's tokenizer
        # (``model`` is the server's llm.model): both priors then score the same ids
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
        self.version = 0
        self.net_s = 0.0
        self.failures = 0
        self._ctx = zmq.Context()
        self._sock: zmq.Socket | None = None
        self._next_id = 0
        self._down = False
        self._connect()

    def _connect(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
        self._sock = client_socket(self._ctx, self.address, self.curve)

    def request(self, histories: list[History], observations: list[str], candidates: list[list[str]]) -> wire.ScoreRequest:
        from pzstream.llm.prompts import scoring_prompts

        self._next_id += 1
        return wire.ScoreRequest(request_id=self._next_id,
                                 prompts=tuple(scoring_prompts(self.tokenizer, self.prompt_cfg, histories, observations,
                                                               candidates, self.list_candidates)),
                                 candidates=tuple(c for cs in candidates for c in cs),
                                 counts=tuple(len(cs) for cs in candidates))

    def prior(self, histories: list[History], observations: list[str], candidates: list[list[str]]) -> list[np.ndarray] | None:
        t = time.perf_counter()
        req = self.request(histories, observations, candidates)
        reply = None
        try:
            self._sock.send(wire.encode(req), flags=zmq.NOBLOCK)  # type: ignore[union-attr]
            deadline = time.monotonic() + self.timeout_s
            while reply is None and (left := deadline - time.monotonic()) > 0:
                if self._sock.poll(int(left * 1000) + 1):  # type: ignore[union-attr]
                    msg = wire.decode(self._sock.recv())  # type: ignore[union-attr]
                    if isinstance(msg, wire.ScoreReply) and msg.request_id == req.request_id:
                        reply = msg
        except (zmq.ZMQError, wire.WireError) as e:
            log.debug("prior request failed: %s", e)
        self.net_s += time.perf_counter() - t
        if reply is None:
            self.failures += 1
            if not self._down:
                log.warning("prior server %s did not answer in %.1fs; playing with the world model's prior until it does",
                            self.address, self.timeout_s)
                self._down = True
            self._connect()  # drop what is queued for a dead peer
            return None
        if self._down:
            log.info("prior server %s answers again", self.address)
            self._down = False
        self.version = reply.llm_version
        flat = np.exp(np.array(reply.logprior, dtype=np.float32))
        out, at = [], 0
        for n in req.counts:
            out.append(flat[at:at + n])
            at += n
        return out


def prior_source(lc, curve: CurveKeys | None, address: str | None) -> PriorSource:
    """The LLM prior of the config's ``llm`` section: in this process (``address`` None), or the prior
    server at ``address``, whose tokenizer (``llm.model``) the prompts are fitted with."""
    from pzstream.llm.factory import LocalPrior, prompt_config

    if address is None:
        return LocalPrior(lc)
    return RemotePrior(address, lc.prior_timeout_s, prompt_config(lc), curve, lc.list_candidates, model=lc.model)


def request_roots(tokenizer, req: wire.ScoreRequest, max_prompt_tokens: int) -> tuple[list[str], list[list[str]]]:
    """(prompt, candidates) of every root of a request. Collectors fit their prompts by the local
    prior's rule (``RemotePrior.request``); the cap only guards against peers that did not."""
    from pzstream.llm.tokens import cap_prompt

    prompts, cands, at = [], [], 0
    for p, n in zip(req.prompts, req.counts):
        prompts.append(cap_prompt(tokenizer, p, max_prompt_tokens))
        cands.append(list(req.candidates[at:at + n]))
        at += n
    return prompts, cands


async def run_prior_server(cfg: Config, address: str, stop: anyio.Event, curve: CurveKeys | None = None,
                           hub_address: str | None = None) -> dict[str, float]:
    from pzstream.llm.factory import make_backend, prompt_config

    lc = cfg.llm
    check_bind_security(address, curve, cfg.security.allow_insecure)  # as the hub: no open port without CURVE
    backend = await anyio.to_thread.run_sync(make_backend, lc, prompt_config(lc))
    memo = PriorMemo(max_entries=lc.memo_entries)  # roots scored before under these weights (pzstream/llm/memo.py)
    ctx = zmq.asyncio.Context()
    router = RequestRouter(ctx, address, curve, wire.ScoreRequest, max_request_bytes=lc.prior_max_request_bytes)
    stats = {"requests": 0.0, "roots": 0.0, "batches": 0.0, "bad_requests": 0.0, "llm_version": 0.0}
    log.info("prior server on %s with model %s%s", address, lc.model, f", following hub {hub_address}" if hub_address else "")

    def counts_fit(r: object) -> str | None:
        assert isinstance(r, wire.ScoreRequest)
        return score_request_problem(r, lc.prior_max_roots, lc.prior_max_candidates, cfg.wire.max_candidates_per_step)

    async def serve() -> None:
        while True:
            reqs = await router.requests(counts_fit)
            stats["bad_requests"] = float(sum(router.rejected.values()))
            stats["requests_too_large"] = float(router.rejected["too_large"])
            if not reqs:
                continue
            prompts, cands = [], []
            for _, r in reqs:
                p, c = request_roots(backend.tokenizer, r, lc.max_prompt_tokens)  # type: ignore[arg-type]
                prompts += p
                cands += c
            keys = [memo_key(p, c) for p, c in zip(prompts, cands)]
            logps = await anyio.to_thread.run_sync(scored, keys, prompts, cands)
            i = 0
            for ident, r in reqs:
                assert isinstance(r, wire.ScoreRequest)
                flat = [float(x) for lp in logps[i:i + len(r.counts)] for x in lp]
                i += len(r.counts)
                await router.send(ident, wire.ScoreReply(request_id=r.request_id, llm_version=int(stats["llm_version"]),
                                                         logprior=tuple(flat)))
            stats["requests"] += len(reqs)
            stats["roots"] += len(prompts)
            stats["batches"] += 1
            stats["memo_hits"], stats["memo_misses"] = float(memo.hits), float(memo.misses)

    lock = threading.Lock()  # installs (a weights thread) land between batches (a scoring thread)

    def scored(keys: list, prompts: list[str], cands: list[list[str]]) -> list[np.ndarray]:
        with lock:
            return memo.answers(keys, lambda todo: backend.score([prompts[i] for i in todo], [cands[i] for i in todo]))

    def install_llm(data: bytes, version: int) -> None:
        with lock:
            backend.load_state_dict_bytes(data)
            memo.clear()
            stats["llm_version"] = float(version)

    weights = WeightsClient({"llm": install_llm}, who="prior server")

    async def report() -> None:
        last, t_last = 0.0, time.monotonic()
        while True:
            await anyio.sleep(10)
            now = time.monotonic()
            log.info("prior server: %.1f roots/s, %d requests, mean batch %.1f roots, llm v%d",
                     (stats["roots"] - last) / (now - t_last), stats["requests"],
                     stats["roots"] / max(1.0, stats["batches"]), stats["llm_version"])
            last, t_last = stats["roots"], now

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            tg.start_soon(report)
            if hub_address:
                tg.start_soon(follow_hub, ctx, cfg, hub_address, "prior", weights, lambda: dict(stats), curve, stop)
            await stop.wait()
            tg.cancel_scope.cancel()
    finally:
        router.close()
        ctx.destroy(linger=0)
    return stats
