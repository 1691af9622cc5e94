"""Many games per collector (issue 22, item 1): one search for the moves of every instance that waits,
and a collector of several games against a real hub."""
from __future__ import annotations

import json
import threading
import time
from collections import defaultdict

import numpy as np
import pytest
from support import HubThread, LoopThread, free_base_port, hub_config, launch

from pzstream.agent import mcts_policy
from pzstream.config import load_config
from pzstream.env import open_game
from pzstream.move_batcher import MoveBatcher

EXACT = ("search.root_noise_fraction=0", "search.temperature=0", "llm.enabled=false", "ppo.enabled=false")


def roots(n: int) -> list[tuple[list, str, list[str]]]:
    """n different states of the default game: (history, observation, valid actions)."""
    game = open_game("default", seed=0)
    obs, history, out = game.reset(seed=0), [], []
    for _ in range(n):
        valid = game.valid_actions()
        out.append((list(history), obs, valid))
        r = game.step(valid[len(out) % len(valid)])
        history.append((obs, valid[len(out) % len(valid)], r.reward))
        obs = r.observation
    game.close()
    return out


def act_together(batcher: MoveBatcher, asks) -> list:
    moves: list = [None] * len(asks)

    def one(i: int) -> None:
        moves[i] = batcher.seat(i).act(*asks[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(asks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return moves


def test_the_waiting_instances_moves_are_one_search_with_the_visits_each_would_get_alone():
    cfg = load_config(None, list(EXACT))
    asks = roots(3)
    alone = [mcts_policy(cfg, 0).act(*a) for a in asks]
    batcher = MoveBatcher(mcts_policy(cfg, 0), seats=3, max_wait_s=5.0)
    together = act_together(batcher, asks)
    assert batcher.stats.batches == 1 and batcher.stats.roots == 3 and batcher.stats.full == 1
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a.policy, b.policy, atol=1e-6)
        assert a.index == b.index


def test_a_closed_seat_is_not_waited_for_and_a_slow_one_holds_the_others_only_max_wait():
    cfg = load_config(None, list(EXACT))
    ask = roots(1)[0]
    batcher = MoveBatcher(mcts_policy(cfg, 0), seats=3, max_wait_s=30.0)
    batcher.seat(1).close()
    batcher.seat(2).close()
    t = time.monotonic()
    batcher.seat(0).act(*ask)
    assert time.monotonic() - t < 10 and batcher.stats.full == 1  # not 30 s: the closed seats are not waited for
    with pytest.raises(RuntimeError, match="closed"):
        batcher.seat(1).act(*ask)

    slow = MoveBatcher(mcts_policy(cfg, 0), seats=2, max_wait_s=0.2)  # seat 1 never asks (its game is slow)
    t = time.monotonic()
    slow.seat(0).act(*ask)
    assert 0.2 <= time.monotonic() - t < 10 and slow.stats.full == 0 and slow.stats.roots == 1


def test_a_search_that_fails_raises_in_every_thread_of_its_batch_and_the_next_batch_searches():
    cfg = load_config(None, list(EXACT))
    asks = roots(2)
    policy = mcts_policy(cfg, 0)
    batcher = MoveBatcher(policy, seats=2, max_wait_s=5.0)
    real = policy.search_roots
    policy.search_roots = lambda *a, **k: (_ for _ in ()).throw(ValueError("model on fire"))  # type: ignore[method-assign]
    errors = []

    def one(i: int) -> None:
        try:
            batcher.seat(i).act(*asks[i])
        except ValueError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == ["model on fire", "model on fire"]
    policy.search_roots = real  # type: ignore[method-assign]
    assert all(m is not None for m in act_together(batcher, asks)) and batcher.stats.batches == 1


def test_a_seat_without_seats_is_refused():
    with pytest.raises(ValueError, match="at least one seat"):
        MoveBatcher(mcts_policy(load_config(None, list(EXACT)), 0), seats=0)


@pytest.mark.slow
def test_a_collector_of_three_games_streams_each_as_its_own_peer_with_its_own_seqs(address, procs):
    hub = HubThread(hub_config(address)).start()
    try:
        procs.append(launch("--role", "collector", "--learner", address, "collector.id=multi", "collector.games=3",
                            "collector.segment_steps=10", "--max-steps", "30", "hub.heartbeat_s=0.2", *EXACT))
        out, err = procs[-1].communicate(timeout=240)
        assert procs[-1].returncode == 0, err.decode()[-3000:]
        result = json.loads(out.decode().strip().splitlines()[-1])
        hub.wait_for(lambda h: sum(c.steps for c in h.status().collectors.values()) == 90, 30, "90 steps at the hub")
    finally:
        summary = hub.stop()
    assert result["games"] == 3 and result["env_steps"] == 90 and result["instances_failed"] == 0
    assert result["batch_mean"] > 1.0, result  # the instances' moves were searched together
    assert summary["segments_rejected"] == 0
    segs = defaultdict(list)
    for seg in hub.segments():
        segs[seg.header.collector_id].append(seg.header.seq)
    assert sorted(segs) == ["multi-g0", "multi-g1", "multi-g2"]
    for cid, seqs in segs.items():
        assert sorted(seqs) == list(range(len(seqs))), f"{cid}: seqs per instance, contiguous"


class _DiesAfter:
    """A game that raises on its ``n``-th step (a crashed interpreter)."""

    def __init__(self, game, n: int):
        self._game, self._left = game, n

    def __getattr__(self, name):
        return getattr(self._game, name)

    def step(self, action):
        self._left -= 1
        if self._left < 0:
            raise RuntimeError("the interpreter died")
        return self._game.step(action)


def test_an_instance_whose_game_dies_stops_alone_and_the_others_play_on(address, monkeypatch):
    import pzstream.roles.collector as collector_mod
    from pzstream.roles.collector import run_collector

    opened = []
    real_open = collector_mod.open_game

    def open_game_(*a, **k):
        game = real_open(*a, **k)
        opened.append(game)
        return _DiesAfter(game, 3) if len(opened) == 2 else game  # instance 1 dies at its 4th step

    monkeypatch.setattr(collector_mod, "open_game", open_game_)
    cfg = hub_config(address, "collector.id=m", "collector.games=3", "collector.segment_steps=5",
                     "collector.max_steps=20", "collector.policy=random", *EXACT)
    hub = HubThread(hub_config(address)).start()
    runner = LoopThread()
    try:
        runner.serve(lambda stop: run_collector(cfg, stop))
        def steps(h) -> dict[str, int]:
            return {c: s.steps for c, s in h.status().collectors.items()}

        hub.wait_for(lambda h: steps(h).get("m-g0") == 20 and steps(h).get("m-g2") == 20, 120,
                     "the healthy instances' 20 steps each")
        result = runner.stop()
    finally:
        runner.stop()
        hub.stop()
    by_id = {r["collector_id"]: r for r in result["instances"]}
    assert result["instances_failed"] == 1 and "the interpreter died" in by_id["m-g1"]["failed"]
    assert by_id["m-g0"]["env_steps"] == 20 and by_id["m-g2"]["env_steps"] == 20 and by_id["m-g1"]["env_steps"] == 3


@pytest.mark.slow
def test_a_collector_of_two_games_asks_a_search_server_for_each_instance(address, procs):
    search = f"tcp://127.0.0.1:{free_base_port()}"
    hub = HubThread(hub_config(address)).start()
    try:
        procs.append(launch("--role", "search", "--search", search, "--learner", address, "hub.heartbeat_s=0.2", *EXACT))
        procs.append(launch("--role", "collector", "--learner", address, "collector.id=s", "collector.games=2",
                            "collector.search=server", f"collector.search_server={search}",
                            "collector.search_deadline_ms=20000", "collector.segment_steps=5", "--max-steps", "15",
                            "hub.heartbeat_s=0.2", *EXACT))
        out, err = procs[-1].communicate(timeout=240)
        assert procs[-1].returncode == 0, err.decode()[-3000:]
    finally:
        hub.stop()
    result = json.loads(out.decode().strip().splitlines()[-1])
    by_id = {r["collector_id"]: r for r in result["instances"]}
    assert sorted(by_id) == ["s-g0", "s-g1"] and result["env_steps"] == 30
    assert all(r["search_served"] == 15 and r["search_fallbacks"] == 0 for r in by_id.values()), by_id
