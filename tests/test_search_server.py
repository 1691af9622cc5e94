"""The search server (--role search): one batched MCTS for many collectors, with local fallback."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq
from support import HubThread, LoopThread, free_base_port, hub_config, launch

from pzstream.agent import GamePlayer, ServedPolicy, mcts_policy
from pzstream.config import Config, load_config
from pzstream.env import open_game
from pzstream.roles.search_server import (
    BatchSearch,
    Root,
    SearchClient,
    run_search_server,
)
from pzstream.search.batcher import ContextStore, FairQueue
from pzstream.stream import wire

# no noise and argmax actions: the search is then a function of the weights and the roots alone
EXACT = ("search.root_noise_fraction=0", "search.temperature=0", "llm.enabled=false", "ppo.enabled=false",
         "search_server.threads=1", "search_server.max_wait_ms=20")


def config(*overrides: str) -> Config:
    return load_config(None, [*EXACT, *overrides])


class ServerThread(LoopThread):
    """A search server on an event loop in a thread of the test."""

    def __init__(self, cfg: Config, address: str, searcher: BatchSearch | None = None):
        super().__init__()
        self.address = address
        self.serve(lambda stop: run_search_server(cfg, address, stop, None, None, searcher))


def game_roots(n: int, seed: int = 0) -> list[tuple[list, str, list[str]]]:
    """n real (history, observation, candidates) states of the default game, from a random walk."""
    game = open_game("default")
    rng = np.random.default_rng(seed)
    out, history, obs = [], [], game.reset(seed=seed)
    try:
        while len(out) < n:
            valid = game.valid_actions()
            out.append((list(history), obs, valid))
            a = valid[int(rng.integers(len(valid)))]
            res = game.step(a)
            history.append((obs, a, float(res.reward)))
            obs = res.observation
            if res.done:
                history, obs = [], game.reset(seed=seed + len(out))
    finally:
        game.close()
    return out


def full_request(cid: str, rid: int, history, obs: str, valid: list[str]) -> wire.SearchRequest:
    return wire.SearchRequest(cid, rid, 0, not history, obs, tuple(valid), "", 0.0, tuple(o for o, _, _ in history),
                              tuple(a for _, a, _ in history), tuple(float(r) for _, _, r in history))


def clients_at_once(address: str, n: int, play) -> None:
    """``play(i, client)`` for n collectors at once, each with its own connection (threads)."""
    def one(i: int) -> None:
        client = SearchClient(address)
        try:
            play(i, client)
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)


# ------------------------------------------------------------------ pure parts


def test_fair_queue_serves_every_collector_before_a_floods_second_request():
    q: FairQueue[str] = FairQueue(per_collector=100)
    for i in range(50):
        q.put("flood", f"f{i}")
    q.put("quiet", "q0")
    batch = q.take(4)
    assert "q0" in batch and batch.count("q0") == 1
    assert [x for x in batch if x != "q0"] == ["f0", "f1", "f2"]  # the flood keeps its own order
    small: FairQueue[str] = FairQueue(per_collector=2)
    assert small.put("a", "1") and small.put("a", "2") and not small.put("a", "3")


def test_context_store_builds_history_from_deltas_and_asks_for_a_resend_when_it_lost_it():
    store = ContextStore(keep_steps=2)
    assert store.advance("c", 0, True, "o0", "", 0.0, []) == []
    assert store.advance("c", 0, False, "o1", "a0", 1.0, []) == [("o0", "a0", 1.0)]
    assert store.advance("c", 0, False, "o2", "a1", 0.0, []) == [("o0", "a0", 1.0), ("o1", "a1", 0.0)]
    assert store.advance("c", 0, False, "o3", "a2", 0.0, []) == [("o1", "a1", 0.0), ("o2", "a2", 0.0)]
    assert store.advance("c", 1, False, "x", "a", 0.0, []) is None  # another episode: unknown
    assert store.advance("new", 0, False, "x", "a", 0.0, []) is None  # a restarted server knows nobody
    assert store.advance("new", 0, False, "o9", "", 0.0, [("o8", "a8", 2.0)]) == [("o8", "a8", 2.0)]


def test_search_messages_round_trip_and_bad_ones_are_refused_with_reasons():
    req = wire.SearchRequest("c1", 4, 2, False, "room", ("north", "south"), "look", 1.5, ("o",), ("a",), (0.0,))
    assert wire.decode(wire.encode(req)) == req
    reply = wire.SearchReply(4, 1, (0.25, 0.75), 0.5, (), 3, 0, 2)
    assert wire.decode(wire.encode(reply)) == reply
    small = wire.WireLimits(max_candidates_per_step=4, max_steps=3)
    bad = {
        "bad_value": req.__class__(**{**req.__dict__, "candidates": ()}),
        "column_length": req.__class__(**{**req.__dict__, "history_rewards": ()}),
    }
    for reason, msg in bad.items():
        with pytest.raises(wire.WireError) as e:
            wire.decode(wire.encode(msg))
        assert e.value.reason == reason
    with pytest.raises(wire.WireError, match="candidates"):
        wire.decode(wire.encode(req.__class__(**{**req.__dict__, "candidates": tuple("abcde")})), small)
    with pytest.raises(wire.WireError) as e:
        wire.decode(wire.encode(req.__class__(**{**req.__dict__, "history_observations": ("o",) * 4,
                                                 "history_actions": ("a",) * 4, "history_rewards": (0.0,) * 4})), small)
    assert e.value.reason == "too_large"


# ------------------------------------------------------------------ the server


@pytest.mark.parametrize("backend", ["numpy", "lightzero"])
def test_the_servers_visits_equal_a_local_search_of_the_same_roots(address, backend):
    from pzstream.search import lightzero_available

    if backend == "lightzero" and not lightzero_available():
        pytest.skip("LightZero's compiled tree is not installed")
    cfg = config(f"search.backend={backend}")
    roots = game_roots(6)
    local = mcts_policy(cfg, seed=0)
    expected = [local.act(h, o, v) for h, o, v in roots]
    server = ServerThread(cfg, address)
    try:
        answers: dict[int, wire.SearchReply] = {}

        def ask(i: int, client: SearchClient) -> None:
            h, o, v = roots[i]
            got = client.ask(full_request(f"c{i}", 1, h, o, v), timeout_s=60)
            assert isinstance(got, wire.SearchReply), got
            answers[i] = got

        clients_at_once(address, len(roots), ask)
    finally:
        summary = server.stop()
    assert len(answers) == len(roots)
    for i, move in enumerate(expected):
        assert answers[i].action_index == move.index
        np.testing.assert_allclose(answers[i].visits, move.policy, atol=1e-6)
    # six collectors asking at once were searched together
    assert summary["max_batch_seen"] > 1 and max(a.batch for a in answers.values()) > 1


def test_a_batch_priced_apart_from_its_search_searches_exactly_as_one_call():
    """The server's two stages (the LLM prior, then the search) give what one search_roots call gives."""
    from pzstream.llm.factory import LocalPrior

    cfg = config("llm.enabled=true")
    roots = game_roots(5)
    hs, os_, vs = ([r[i] for r in roots] for i in range(3))
    prior = LocalPrior(cfg.llm)
    whole = mcts_policy(cfg, seed=0, prior=prior).search_roots(hs, os_, vs)
    staged = mcts_policy(cfg, seed=0, prior=prior)
    apart = staged.search_roots(hs, os_, vs, llm_probs=staged.llm_priors(hs, os_, vs))
    for a, b in zip(whole, apart):
        assert a.index == b.index and a.prior is not None
        np.testing.assert_array_equal(a.policy, b.policy)
        np.testing.assert_array_equal(a.prior, b.prior)
    # no LLM answer (None) searches with the world model's own prior, as a policy without an LLM does
    bare = mcts_policy(cfg, seed=0).search_roots(hs, os_, vs)
    none = mcts_policy(cfg, seed=0, prior=prior).search_roots(hs, os_, vs, llm_probs=None)
    for a, b in zip(bare, none):
        np.testing.assert_array_equal(a.policy, b.policy)
        assert b.prior is None


def test_the_server_prices_the_next_batch_while_it_searches_one(address):
    """With the LLM on, stage 1 (the prior) of a batch runs while stage 2 searches the one before, and
    every answer carries the prior its root was priced with."""
    from pzstream.llm.factory import LocalPrior

    cfg = config("llm.enabled=true", "search_server.max_wait_ms=0", "search_server.max_batch=2", "search_server.pipeline=always")
    roots = game_roots(8, seed=3)
    server = ServerThread(cfg, address)
    answers: dict[tuple[int, int], wire.SearchReply] = {}
    try:
        def ask(i: int, client: SearchClient) -> None:
            _, o, v = roots[i]
            for rid in range(1, 4):  # the same root again: a new episode each time
                req = wire.SearchRequest(f"c{i}", rid, rid, True, o, tuple(v), "", 0.0, (), (), ())
                got = client.ask(req, timeout_s=60)
                assert isinstance(got, wire.SearchReply), got
                answers[(i, rid)] = got

        clients_at_once(address, len(roots), ask)
    finally:
        summary = server.stop()
    assert len(answers) == 3 * len(roots)
    assert summary["priced_while_searching"] >= 1, summary
    prior = LocalPrior(cfg.llm)
    for (i, _), reply in answers.items():
        _, o, v = roots[i]
        expected = prior.prior([[]], [o], [v])[0]
        np.testing.assert_allclose(reply.prior, expected, atol=1e-4)


def test_a_prior_in_its_own_process_prices_as_the_local_prior_and_comes_back_after_it_dies(address):
    """search_server.prior=process: the LLM prior is a child --role prior server over ipc; its answers
    equal the in-process prior's; killed, the server keeps answering (the world model's prior meanwhile)
    and starts it again."""
    import multiprocessing
    import os
    import signal

    from pzstream.llm.factory import LocalPrior

    cfg = config("llm.enabled=true", "search_server.prior=process", "search_server.max_batch=4", "llm.prior_timeout_s=2")
    roots = game_roots(4, seed=5)
    local = LocalPrior(cfg.llm)
    server = ServerThread(cfg, address)
    client = SearchClient(address)
    rid = 0

    def ask(i: int) -> wire.SearchReply:
        nonlocal rid
        rid += 1
        _, o, v = roots[i]
        got = client.ask(wire.SearchRequest("c", rid, rid, True, o, tuple(v), "", 0.0, (), (), ()), timeout_s=120)
        assert isinstance(got, wire.SearchReply), got
        return got

    def matches_local(reply: wire.SearchReply, i: int) -> bool:
        _, o, v = roots[i]
        return len(reply.prior) == len(v) and np.allclose(reply.prior, local.prior([[]], [o], [v])[0], atol=1e-4)

    try:
        assert all(matches_local(ask(i), i) for i in range(len(roots)))
        children = [p for p in multiprocessing.active_children() if p.name == "pzstream-prior"]
        assert len(children) == 1
        # stopped first, so that it cannot answer and is not yet restarted: the server answers on its own
        # (killed at once, the restarted child could answer the queued request within the timeout)
        os.kill(children[0].pid, signal.SIGSTOP)
        assert ask(0).prior == ()  # served on, with the world model's prior (no LLM prior in the reply)
        os.kill(children[0].pid, signal.SIGKILL)
        children[0].join(10)
        deadline = time.monotonic() + 120
        while not matches_local(ask(1), 1):  # the restarted child answers again
            assert time.monotonic() < deadline, "the LLM prior process did not come back"
        again = [p for p in multiprocessing.active_children() if p.name == "pzstream-prior"]
        assert len(again) == 1 and again[0].pid != children[0].pid
    finally:
        client.close()
        summary = server.stop()
    assert summary["prior_failures"] >= 1, summary
    assert not [p for p in multiprocessing.active_children() if p.name == "pzstream-prior"]  # stopped with the server


def test_malformed_and_oversized_requests_are_refused_and_the_server_keeps_serving(address):
    cfg = config("wire.max_candidates_per_step=8")
    server = ServerThread(cfg, address)
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(address)
    client = SearchClient(address)
    try:
        (h, o, v), = game_roots(1)
        cases = {
            b"\xc1 not msgpack": "malformed",
            wire.encode(full_request("c", 1, h, o, [f"act {i}" for i in range(9)])): "bad_value",  # over the cap
            wire.encode(wire.Heartbeat("c", 0.0, {})): "bad_value",  # not a search request
            wire.encode(wire.SearchRequest("c", 2, 0, False, o, tuple(v), "look", 0.0, (), (), ())): "resend_history",
        }
        for frame, reason in cases.items():
            raw.send(frame)
            assert raw.poll(30_000), f"no answer to a request that should be refused with {reason}"
            got = wire.decode(raw.recv())
            assert isinstance(got, wire.Reject) and got.reason == reason, got
        good = client.ask(full_request("good", 1, h, o, v), timeout_s=60)
        assert isinstance(good, wire.SearchReply) and len(good.visits) == len(v)
    finally:
        raw.close(0)
        ctx.term()
        client.close()
        summary = server.stop()
    assert summary["rejected_resend_history"] == 1 and summary["rejected_malformed"] == 1
    assert summary["rejected_bad_value"] == 2 and summary["roots"] == 1


def test_a_weights_swap_lands_between_batches_and_never_mixes_versions_in_an_answer():
    import torch

    from pzstream.model.world_model import WorldModel, weights_bytes

    cfg = config()
    roots = [Root(b"", f"c{i}", i, h, o, v, 0.0) for i, (h, o, v) in enumerate(game_roots(4))]
    torch.manual_seed(123)
    new = WorldModel(cfg.world_model())
    by_version = {}
    for version, model in ((0, None), (1, new)):
        p = mcts_policy(cfg, seed=0)
        if model is not None:
            p.offer(model, version)
        by_version[version] = [m.policy for m in p.search_roots([r.history for r in roots], [r.observation for r in roots],
                                                              [r.candidates for r in roots])]
    searcher = BatchSearch(mcts_policy(cfg, seed=0), None)
    data = weights_bytes(new)
    installer = threading.Thread(target=lambda: (time.sleep(0.05), searcher.install_wm(data, 1)))
    installer.start()
    seen = set()
    for _ in range(6):
        for reply in searcher.run(roots):
            seen.add(reply.wm_version)
            np.testing.assert_allclose(reply.visits, by_version[reply.wm_version][reply.request_id], atol=1e-6)
    installer.join()
    assert seen == {0, 1}
    assert any(not np.allclose(a, b) for a, b in zip(by_version[0], by_version[1])), "the two versions search alike"


def test_a_player_falls_back_when_its_server_dies_and_returns_when_it_restarts(address):
    cfg = config()
    server = ServerThread(cfg, address)
    game = open_game("default")
    local = mcts_policy(cfg, seed=0)
    served = ServedPolicy(local, SearchClient(address), "p0", deadline_s=10.0, retry_s=0.2)
    player = GamePlayer(game, served, "p0", segment_steps=5, max_episode_steps=100, seed=0)
    stop = threading.Event()
    try:
        segs = [player.play_segment(stop) for _ in range(2)]
        assert served.stats.served == 10 and served.stats.fallbacks == 0
        server.stop()  # killed: its contexts are gone with it
        served.deadline_s = 0.3
        segs += [player.play_segment(stop) for _ in range(2)]
        assert served.stats.fallbacks >= 1
        served_before = served.stats.served
        server = ServerThread(cfg, address)  # back, knowing no one
        served.deadline_s = 10.0
        time.sleep(0.3)
        segs += [player.play_segment(stop) for _ in range(2)]
        assert served.stats.served > served_before and served.stats.resends >= 1
    finally:
        server.stop()
        game.close()
        served.service.close()  # type: ignore[attr-defined]
    assert sum(s.n_steps for s in segs if s is not None) == player.stats.env_steps
    for s in segs:
        if s is not None:
            wire.validate_segment(s)


@pytest.mark.slow
def test_collectors_keep_streaming_through_a_server_restart_and_the_hub_loses_nothing(address, procs):
    import json

    search = f"tcp://127.0.0.1:{free_base_port()}"
    over = [*EXACT, "hub.heartbeat_s=0.2"]
    hub = HubThread(hub_config(address, "llm.enabled=false")).start()
    try:
        server = launch("--role", "search", "--search", search, "--learner", address, *over)
        procs.append(server)
        collectors = [launch("--role", "collector", "--learner", address, f"collector.id=c{i}", f"collector.seed={i}",
                             "collector.search=server", f"collector.search_server={search}",
                             "collector.search_deadline_ms=1500", "collector.search_retry_s=0.5",
                             "collector.segment_steps=5", *over) for i in range(2)]
        procs.extend(collectors)

        def stat(name: str) -> float:
            return sum(c.stats.get(name, 0.0) for c in hub.status().collectors.values())

        hub.wait_for(lambda h: stat("search_served") >= 10, 120, "moves served by the search server")
        server.kill()
        server.wait(10)
        fallbacks = stat("search_fallbacks")
        hub.wait_for(lambda h: stat("search_fallbacks") >= fallbacks + 5, 60, "local fallback moves")
        served = stat("search_served")
        procs.append(launch("--role", "search", "--search", search, "--learner", address, *over))
        hub.wait_for(lambda h: stat("search_served") >= served + 10, 120, "moves served again after the restart")
        results = []
        for c in collectors:
            c.terminate()
        for c in collectors:
            out, err = c.communicate(timeout=60)
            assert c.returncode == 0, err.decode()[-2000:]
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
        status = hub.status()
    finally:
        hub.stop()
    assert all(r["segments_unsent"] == 0 for r in results)
    assert sum(r["env_steps"] for r in results) == status.env_steps == sum(s.n_steps for s in hub.segments())
    assert all(r["search_fallbacks"] >= 1 and r["search_served"] >= 5 for r in results)


def test_a_flooding_collector_is_refused_past_its_share_and_others_are_still_served(address):
    cfg = config("search_server.max_batch=4")
    server = ServerThread(cfg, address)
    ctx = zmq.Context()
    flood = ctx.socket(zmq.DEALER)
    flood.setsockopt(zmq.LINGER, 0)
    flood.connect(address)
    quiet = SearchClient(address)
    try:
        (h, o, v), = game_roots(1)
        for i in range(40):  # far more than one collector's share of the queue, without waiting for answers
            flood.send(wire.encode(full_request("flood", i, h, o, v)))
        got = quiet.ask(full_request("quiet", 1, h, o, v), timeout_s=60)
        assert isinstance(got, wire.SearchReply)
        answers = []
        while len(answers) < 40 and flood.poll(5000):
            answers.append(wire.decode(flood.recv()))
    finally:
        flood.close(0)
        ctx.term()
        quiet.close()
        summary = server.stop()
    busy = [a for a in answers if isinstance(a, wire.Reject) and a.reason == "busy"]
    assert len(answers) == 40 and busy and summary["rejected_busy"] == len(busy)


class RecordingService:
    """A search service that records the requests and answers each with the first candidate."""

    def __init__(self) -> None:
        self.requests: list[wire.SearchRequest] = []

    def ask(self, req: wire.SearchRequest, timeout_s: float) -> wire.SearchReply:
        self.requests.append(req)
        k = len(req.candidates)
        return wire.SearchReply(req.request_id, 0, (1.0,) + (0.0,) * (k - 1), 0.0, (), 5, 0, 1)


def test_a_served_player_sends_deltas_resends_after_a_local_move_and_numbers_episodes():
    service = RecordingService()
    served = ServedPolicy(mcts_policy(config(), seed=0), service, "c", deadline_s=1.0)
    step = ("o0", "a0", 1.0)
    served.act([step], "o1", ["x", "y"])  # its first move is mid-episode: the history goes along
    served.act([step, ("o1", "x", 0.0)], "o2", ["x"])  # then only the delta
    served.act([], "p0", ["x"])  # a new episode
    served.act([("p0", "x", 0.0)], "p1", ["x"])
    first, delta, reset, next_delta = service.requests
    assert first.history_observations == ("o0",) and first.episode_id == 0 and not first.reset
    assert delta.history_observations == () and (delta.last_action, delta.last_reward) == ("x", 0.0)
    assert reset.reset and reset.episode_id == 1 and next_delta.episode_id == 1 and next_delta.last_action == "x"
    assert served.wm_version == 5 and served.stats.served == 4 and served.stats.fallbacks == 0


@pytest.mark.slow
def test_two_search_servers_serve_one_hub_and_both_follow_its_weights(address, procs, caplog):
    """Several servers per hub: each collector names its own; both servers are readers of the hub
    and install the weights it publishes, and stamp their answers with them. The hub's report line
    tells their load (issue 22, item 5): roots a second over both, mean batch, ms a batch."""
    import logging
    import re

    import torch

    from pzstream.model.world_model import WorldModel, weights_bytes

    searches = [f"tcp://127.0.0.1:{free_base_port()}" for _ in range(2)]
    over = [*EXACT, "hub.heartbeat_s=0.2"]
    caplog.set_level(logging.INFO, logger="pzstream.learner")
    hub = HubThread(hub_config(address, "llm.enabled=false", "hub.report_every_s=0.5")).start()
    try:
        for s in searches:
            procs.append(launch("--role", "search", "--search", s, "--learner", address, *over))
        for i, s in enumerate(searches):
            procs.append(launch("--role", "collector", "--learner", address, f"collector.id=c{i}", f"collector.seed={i}",
                                "collector.search=server", f"collector.search_server={s}", "collector.segment_steps=5",
                                "collector.search_deadline_ms=5000", *over))

        def served(h) -> list[float]:
            return [c.stats.get("search_served", 0.0) for c in h.status().collectors.values()]

        hub.wait_for(lambda h: len(served(h)) == 2 and min(served(h)) >= 5, 120, "both collectors served")
        assert len(hub.status().readers) == 2

        def loads() -> list[str]:
            return [m.group(0) for r in caplog.records if r.name == "pzstream.learner"
                    and (m := re.search(r"steps \d+ \([\d.]+/s\).*search [\d.]+ roots/s \(2 servers\), batch [\d.]+, \d+ ms",
                                        r.getMessage()))]

        hub.wait_for(lambda h: loads(), 30, "a report line with both servers' load")
        torch.manual_seed(7)
        version = hub.call(hub.hub.publish, "wm", weights_bytes(WorldModel(config().world_model())))

        def server_versions(h) -> list[float]:
            return [r.stats.get("wm_version", -1.0) for r in h.status().readers.values()]

        hub.wait_for(lambda h: server_versions(h) == [float(version)] * 2, 60, "both servers on the new weights")
        assert all(r.stats.get("roots", 0.0) >= 5 for r in hub.status().readers.values())
    finally:
        hub.stop()


def test_role_all_starts_a_search_server_where_it_was_measured_faster():
    from pzstream.roles.search_server import wants_search_server

    def wants(cpus: int, *over: str) -> bool:
        return wants_search_server(load_config(None, list(over)), cpus)[0]

    assert not wants(2)                                       # the embedded default: 2 collectors, 2 cores
    assert not wants(2, "collector.count=4")                  # measured 1.09x: not worth a process
    assert wants(2, "collector.count=8")                      # measured 1.3x (LLM) to 2.4x (world model alone)
    assert not wants(16, "collector.count=12")                # a core per collector: local
    assert wants(16, "collector.count=2", "search_server.device=cuda")
    assert not wants(2, "collector.count=8", "collector.policy=random")
    assert wants(2, "search_server.start=always") and not wants(2, "collector.count=8", "search_server.start=never")
    assert wants(2, "search_server.address=tcp://127.0.0.1:5700")
    why = wants_search_server(load_config(None, []), 2)[1]
    assert "local search is faster" in why


class FlakyService(RecordingService):
    """No answer for the first ``silent`` asks (a server that is down or busy), then answers."""

    def __init__(self, silent: int) -> None:
        super().__init__()
        self.silent = silent

    def ask(self, req: wire.SearchRequest, timeout_s: float) -> wire.SearchReply | None:
        if self.silent > 0:
            self.silent -= 1
            self.requests.append(req)
            return None
        return super().ask(req, timeout_s)


def test_a_waiting_player_asks_again_instead_of_searching_locally_until_it_stops():
    local = mcts_policy(config(), seed=0)
    waiting = ServedPolicy(local, FlakyService(silent=3), "c", deadline_s=0.1, retry_s=0.01, fallback="wait")
    move = waiting.act([], "o0", ["x", "y"])
    assert move.index == 0 and waiting.stats.served == 1 and waiting.stats.waits == 3 and waiting.stats.fallbacks == 0
    stopping = ServedPolicy(local, FlakyService(silent=10**6), "c", deadline_s=0.1, retry_s=0.01, fallback="wait")
    stopping.stopping = lambda: stopping.stats.waits >= 2  # the collector is shutting down: one local move
    stopping.act([], "o0", ["x", "y"])
    assert stopping.stats.fallbacks == 1 and stopping.stats.waits == 2
    with pytest.raises(ValueError, match="fallback"):
        ServedPolicy(local, FlakyService(0), "c", deadline_s=0.1, fallback="sometimes")
