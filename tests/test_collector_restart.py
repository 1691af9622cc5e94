"""Issue 14, finding 4: a collector restarted at once after a crash gets its id back (it no longer
dies of `collector_id_in_use`), and copying a live collector's host and pid (shown in every monitor
line) no longer takes its id over: only the hello's secret session continues a collector."""
from __future__ import annotations

import signal
import time

import pytest
import zmq
from support import HubThread, dealer, hub_config, launch, recv_kind
from test_hub_rejects import segment

from pzstream.stream import wire

GAME = "tw-default"


def test_host_and_pid_alone_do_not_take_a_live_id_over_but_the_session_does(address):
    hub = HubThread(hub_config(address)).start()
    socks: list[zmq.Socket] = []
    try:
        live = dealer(address)
        socks.append(live)
        live.send(wire.encode(wire.Hello(collector_id="c", game=GAME, host="h1", pid=7, session="s3cret")))
        assert isinstance(recv_kind(live, wire.Credit), wire.Credit)

        copycat = dealer(address)  # host and pid copied from a monitor line, no session
        socks.append(copycat)
        copycat.send(wire.encode(wire.Hello(collector_id="c", game=GAME, host="h1", pid=7)))
        assert recv_kind(copycat, wire.Reject).reason == "collector_id_in_use"

        guesser = dealer(address)  # a wrong session
        socks.append(guesser)
        guesser.send(wire.encode(wire.Hello(collector_id="c", game=GAME, host="h1", pid=7, session="guess")))
        assert recv_kind(guesser, wire.Reject).reason == "collector_id_in_use"

        again = dealer(address)  # the same process on a new connection: continues the collector
        socks.append(again)
        again.send(wire.encode(wire.Hello(collector_id="c", game=GAME, host="h1", pid=7, session="s3cret")))
        assert recv_kind(again, wire.Credit).ack == -1
        again.send(wire.encode(segment("c", 0)))
        assert recv_kind(again, wire.Credit).ack == 0
        assert hub.status().collectors["c"].accepted == 1
    finally:
        for s in socks:
            s.close(0)
        summary = hub.stop()
    assert "s3cret" not in repr(summary)  # the secret is never reported


def _collector(address: str, cid: str):
    return launch("--role", "collector", "--learner", address, f"collector.id={cid}", "hub.heartbeat_s=0.2",
                  "collector.segment_steps=5", "collector.policy=random")


@pytest.mark.slow
def test_a_collector_restarted_at_once_after_kill_9_gets_its_id_back(address, procs):
    # the hub declares a silent peer lost after 30 x 0.3 s: the restarted collector (a few seconds to
    # start) meets its old connection still live and must wait it out, not die of collector_id_in_use
    hub = HubThread(hub_config(address, "hub.heartbeat_s=0.3", "hub.peer_timeout_heartbeats=30")).start()
    procs.append(_collector(address, "r0"))
    hub.wait_for(lambda h: (c := h.status().collectors.get("r0")) is not None and c.accepted >= 2,
                 what="r0 streaming")
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait(5)
    time.sleep(0.5)  # what the first process had in flight is counted before the second starts
    first_run = hub.status().collectors["r0"].accepted
    restarted = time.monotonic()
    procs.append(_collector(address, "r0"))
    hub.wait_for(lambda h: h.status().rejected_by_reason.get("collector_id_in_use", 0) >= 1, timeout=30,
                 what="the restarted collector meets its old connection")
    # an id's counts outlive its losses: the restarted process's segments count on from the first's
    hub.wait_for(lambda h: (c := h.status().collectors.get("r0")) is not None and not c.lost
                 and c.accepted >= first_run + 3, timeout=60, what="the restarted r0 streaming again")
    back_after = time.monotonic() - restarted
    assert procs[1].poll() is None, procs[1].stderr.read().decode()[-2000:]
    procs[1].send_signal(signal.SIGTERM)
    procs[1].wait(30)
    assert procs[1].returncode == 0, procs[1].stderr.read().decode()[-2000:]
    summary = hub.stop()
    assert summary["per_collector"]["r0"]["accepted"] >= first_run + 3 and first_run >= 2
    print(f"restarted collector streaming again after {back_after:.1f}s")
