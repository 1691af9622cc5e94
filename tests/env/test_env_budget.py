"""pzstream.env: the valid-action time budget (helper process, fallback, late fill, shares).

The game tests play omniquest, whose states take 1-10 s to list valid actions: a move there
must still return within the budget. Skipped when the Jericho suite is absent.
"""
import time

import pytest

from pzstream.env import COMMON_COMMANDS, ValidActionCache, default_games_dir, open_game

GAMES = default_games_dir()
needs_suite = pytest.mark.skipif(not (GAMES / "omniquest.z5").is_file(),
                                 reason=f"Jericho suite not found at {GAMES} (set PZSTREAM_GAMES_DIR)")

BUDGET_S = 0.2
SLACK_S = 0.35  # world hash (1-3.5 ms), state digest, queueing, and a loaded 2-core machine
#: What Inform and Infocom parsers answer to a command they could not parse.
PARSER_ERRORS = ("don't know the word", "not a verb i recogni", "didn't understand", "no verb in that",
                 "only understood you as far as", "you used the word", "i don't understand", "can't see any such")


def _wait_for(pred, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_find_store_and_budget_counters():
    c = ValidActionCache()
    assert c.find("g", b"s1", lambda: "w1") == (None, "miss", "w1")
    c.store("g", b"s1", "w1", ["a", "b"])
    assert c.find("g", b"s1", lambda: 1 / 0) == (["a", "b"], "exact", None)
    assert c.find("g", b"s2", lambda: "w1")[:2] == (["a", "b"], "world")
    c.count("g", over_budget=1, fallbacks=1, late_fills=1)
    st = c.stats("g")
    assert (st["hits"], st["misses"], st["over_budget"], st["fallbacks"], st["late_fills"]) == (2, 1, 1, 1, 1)
    assert st["over_budget_share"] == pytest.approx(1 / 3) and st["fallback_share"] == pytest.approx(1 / 3)


def test_hub_summary_reports_the_share_per_game():
    from pzstream.hub.report import valid_action_shares
    from pzstream.hub.status import CollectorStatus, HubStatus

    def col(cid, game, valid_s, play_s, over, steps):
        return CollectorStatus(cid, game, "mcts", 1, 0, steps, False, False,
                               {"valid_s": valid_s, "play_s": play_s, "va_over_budget": over, "env_steps": steps})

    cols = {"a": col("a", "omniquest", 6.0, 10.0, 3, 20), "b": col("b", "omniquest", 2.0, 10.0, 1, 20),
            "c": col("c", "zork1", 1.0, 10.0, 0, 50)}
    s = HubStatus(0, 90, 0, {}, {}, cols, {}, 0, {"omniquest": {"steps": 40}, "zork1": {"steps": 50}},
                  {}, {}, 0, 0, 1.0)
    shares = valid_action_shares(s)
    assert shares["omniquest"] == {"valid_action_share": 0.4, "over_budget_share": 0.1}
    assert shares["zork1"] == {"valid_action_share": 0.1, "over_budget_share": 0.0}
    from pzstream.hub.report import ingest_summary

    assert ingest_summary(s)["per_game"]["omniquest"]["valid_action_share"] == 0.4


@pytest.fixture(scope="module")
def omniquest():
    g = open_game("omniquest", valid_actions_budget_s=BUDGET_S)
    assert g.wait_ready(120), "the valid-action helper process did not start"
    yield g
    g.close()


def _parser_rejects(game, state, command: str) -> bool:
    game.set_state(state)
    out = game.step(command).observation.lower()
    game.set_state(state)
    return any(p in out for p in PARSER_ERRORS)


@needs_suite
def test_move_waits_at_most_the_budget_then_falls_back_to_commands_the_game_parses(omniquest):
    omniquest.reset()
    s0 = omniquest.get_state()
    t0 = time.perf_counter()
    acts = omniquest.valid_actions()
    waited = time.perf_counter() - t0
    assert waited < BUDGET_S + SLACK_S, f"a move waited {waited:.2f} s with a {BUDGET_S} s budget"
    assert omniquest.last_lookup == "fallback:common"
    assert acts and set(acts) <= set(COMMON_COMMANDS) and "north" in acts
    rejected = [a for a in acts if _parser_rejects(omniquest, s0, a)]
    assert rejected == [], f"fallback commands the game did not parse: {rejected}"
    st = omniquest.cache_stats()
    assert st["over_budget"] >= 1 and st["fallbacks"] >= 1 and st["over_budget_share"] > 0


@needs_suite
def test_late_answer_fills_the_cache_for_the_next_visit(omniquest):
    omniquest.reset()
    s0 = omniquest.get_state()
    omniquest.valid_actions()                      # a miss past the budget, or already filled by the last test
    assert _wait_for(lambda: omniquest.cache_stats()["late_fills"] >= 1, 120), omniquest.worker_stats()
    omniquest.set_state(s0)
    t0 = time.perf_counter()
    acts = omniquest.valid_actions()
    assert time.perf_counter() - t0 < 0.05 and omniquest.last_lookup in ("exact", "world")
    assert not set(acts) <= set(COMMON_COMMANDS), acts  # the game's own list, not the fallback
    assert omniquest.cache_stats()["worker_s"] > 0


@needs_suite
def test_unknown_state_in_a_known_room_falls_back_to_the_rooms_candidates(omniquest):
    omniquest.reset()
    s0 = omniquest.get_state()
    omniquest.valid_actions()
    assert _wait_for(lambda: omniquest.cache_stats()["late_fills"] >= 1, 120)
    omniquest.set_state(s0)
    known = omniquest.valid_actions()
    room = omniquest.room()
    for a in known:                                # a move that changes the world but not the room
        omniquest.set_state(s0)
        omniquest.step(a)
        world = omniquest._env.get_world_state_hash()
        if omniquest.room() == room and omniquest.cache._get((omniquest.name, "w", world)) is None:
            break
    else:
        pytest.skip("no same-room move with an unseen world state from omniquest's start")
    t0 = time.perf_counter()
    acts = omniquest.valid_actions()
    if omniquest.last_lookup == "miss":
        pytest.skip("the helper answered within the budget")
    assert time.perf_counter() - t0 < BUDGET_S + SLACK_S
    assert omniquest.last_lookup == "fallback:room" and acts == known


@needs_suite
def test_without_a_budget_the_move_waits_and_counts_over_budget():
    g = open_game("omniquest", cache=ValidActionCache())
    g.reset()
    acts = g.valid_actions()
    st = g.cache_stats()
    assert g.last_lookup == "miss" and acts and g.worker_stats() == {}
    assert st["fallbacks"] == 0 and st["over_budget"] == (1 if st["valid_action_s"] > 0.5 else 0)
    g.close()


@pytest.mark.skipif(not (GAMES / "acorncourt.z5").is_file(), reason=f"Jericho suite not found at {GAMES}")
def test_acorncourt_moves_never_stall_while_the_helper_computes_10_s_states():
    g = open_game("acorncourt", valid_actions_budget_s=BUDGET_S)
    try:
        assert g.wait_ready(120)
        g.reset()
        waits = []
        for _ in range(6):
            t0 = time.perf_counter()
            acts = g.valid_actions()
            waits.append(time.perf_counter() - t0)
            g.step(acts[0])
        assert max(waits) < BUDGET_S + SLACK_S, waits
        st = g.cache_stats()
        assert st["over_budget"] >= 5 and st["over_budget_share"] >= 5 / 6
        assert g.worker_stats()["jobs"] == 6
    finally:
        t0 = time.perf_counter()
        g.close()                                  # ends the helper mid-computation
        assert time.perf_counter() - t0 < 10


@needs_suite
def test_prefetched_next_state_is_a_hit_and_the_game_state_is_unchanged(omniquest):
    omniquest.reset()
    omniquest.valid_actions()
    assert _wait_for(lambda: not omniquest._worker.busy(), 120)
    s0 = omniquest.get_state()
    acts = omniquest.valid_actions()
    new = [a for a in acts if omniquest.prefetch([a]) == 1]   # the moves to states not seen yet
    assert new, acts
    assert omniquest.get_state().machine[0].tobytes() == s0.machine[0].tobytes()
    assert omniquest.valid_actions() == acts and omniquest.last_lookup == "exact"   # still here
    assert _wait_for(lambda: not omniquest._worker.busy(), 120)
    omniquest.step(new[0])
    t0 = time.perf_counter()
    omniquest.valid_actions()
    assert time.perf_counter() - t0 < 0.05 and omniquest.last_lookup in ("exact", "world")
    assert omniquest.cache_stats()["prefetched"] >= 1


@pytest.mark.skipif(not (GAMES / "acorncourt.z5").is_file(), reason=f"Jericho suite not found at {GAMES}")
def test_two_helpers_compute_the_new_state_while_the_left_one_still_runs():
    g = open_game("acorncourt", valid_actions_budget_s=0.05, valid_action_helpers=2)
    try:
        assert _wait_for(lambda: all(h.ready for h in g._worker._helpers), 120)
        g.reset()
        g.step(g.valid_actions()[0])               # helper 1 takes the start state (10-20 s)
        g.valid_actions()                          # helper 2 takes this one at once
        assert _wait_for(lambda: len(g._worker._running) == 2, 5), g.worker_stats()
    finally:
        g.close()


@pytest.mark.skipif(not (GAMES / "zork1.z5").is_file(), reason=f"Jericho suite not found at {GAMES}")
def test_a_killed_helper_is_restarted_and_moves_go_on_meanwhile():
    g = open_game("zork1", valid_actions_budget_s=0.05)
    try:
        assert g.wait_ready(120)
        g._worker._helpers[0].proc.kill()
        g._worker._helpers[0].proc.wait()
        g.reset()
        t0 = time.perf_counter()
        acts = g.valid_actions()                   # the helper is loading again: fall back at once
        assert time.perf_counter() - t0 < 0.05 + SLACK_S and g.last_lookup == "fallback:common" and acts
        assert _wait_for(lambda: g.cache_stats()["late_fills"] >= 1, 120), g.worker_stats()
        assert g.worker_stats()["restarts"] == 1
        assert g.valid_actions() != acts and g.last_lookup == "exact"
    finally:
        g.close()
