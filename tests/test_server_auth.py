"""The central servers (``--role search``, ``--role prior``) with CURVE admit only authorised clients
(issue 14): CURVE without a ZAP authenticator encrypts but lets any key pair in. Real servers on
loopback, real CURVE sockets: a client holding an authorised key gets answers, one with a freshly made
key pair that the server never authorised gets none, and the server keeps serving the good one."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import zmq
from support import LoopThread, free_base_port, hub_config

from pzstream.roles.serving import client_socket
from pzstream.stream import wire
from pzstream.stream.transport import CurveKeys, generate_keys

CTX = zmq.Context.instance()


def ask(address: str, curve: CurveKeys, request: object, answer: type, timeout_s: float) -> object | None:
    """``request`` sent on a fresh CURVE client socket; the first message of type ``answer``, or None."""
    sock = client_socket(CTX, address, curve)
    try:
        sock.send(wire.encode(request))
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if sock.poll(int(left * 1000) + 1):
                msg = wire.decode(sock.recv())
                if isinstance(msg, answer):
                    return msg
        return None
    finally:
        sock.close(0)


@pytest.fixture
def keys(tmp_path: Path) -> CurveKeys:
    return CurveKeys(generate_keys(tmp_path / "keys"))


@pytest.fixture
def intruder(tmp_path: Path, keys: CurveKeys) -> CurveKeys:
    """A fresh client key pair the servers never authorised, knowing the server's public key (as
    anyone may: it is public)."""
    other = generate_keys(tmp_path / "intruder")
    shutil.copy(keys.directory / "hub.key", other / "hub.key")
    return CurveKeys(other)


def check_admission(address: str, keys: CurveKeys, intruder: CurveKeys, request, answer: type,
                    first_timeout_s: float) -> None:
    assert ask(address, keys, request, answer, first_timeout_s) is not None, "the authorised client got no answer"
    assert ask(address, intruder, request, answer, 2.0) is None, "a client with an unauthorised key was served"
    assert ask(address, keys, request, answer, 30.0) is not None, "the server stopped serving the authorised client"


def test_the_search_server_serves_only_authorised_client_keys(keys, intruder):
    from pzstream.roles.search_server import run_search_server

    address = f"tcp://127.0.0.1:{free_base_port()}"
    cfg = hub_config(f"tcp://127.0.0.1:{free_base_port()}", "llm.enabled=false", "search_server.threads=1",
                     f"security.curve_dir={keys.directory}")
    server = LoopThread()
    server.serve(lambda stop: run_search_server(cfg, address, stop, keys))
    request = wire.SearchRequest("c", 1, 0, True, "You are in a small room. A door leads north.", ("north", "look"),
                                 "", 0.0, (), (), ())
    try:
        check_admission(address, keys, intruder, request, wire.SearchReply, first_timeout_s=60.0)
    finally:
        summary = server.stop()
    assert summary["requests"] == 2, summary


def test_the_prior_server_serves_only_authorised_client_keys(keys, intruder):
    from pzstream.roles.prior_server import run_prior_server

    address = f"tcp://127.0.0.1:{free_base_port()}"
    cfg = hub_config(f"tcp://127.0.0.1:{free_base_port()}", f"security.curve_dir={keys.directory}")
    server = LoopThread()
    server.serve(lambda stop: run_prior_server(cfg, address, stop, keys))
    request = wire.ScoreRequest(request_id=1, prompts=("you are in a room. Action:",), candidates=("north", "south"),
                                counts=(2,))
    try:
        check_admission(address, keys, intruder, request, wire.ScoreReply, first_timeout_s=120.0)
    finally:
        stats = server.stop()
    assert stats["requests"] == 2, stats


def test_a_closed_router_stops_its_authenticator_and_a_plain_one_starts_none(keys):
    import zmq.asyncio

    from pzstream.roles.serving import RequestRouter

    ctx = zmq.asyncio.Context()
    try:
        router = RequestRouter(ctx, f"tcp://127.0.0.1:{free_base_port()}", keys, wire.SearchRequest)
        auth = router.authenticator
        assert auth is not None and auth.is_alive()
        router.close()
        assert not auth.is_alive() and router.authenticator is None
        plain = RequestRouter(ctx, f"tcp://127.0.0.1:{free_base_port()}", None, wire.SearchRequest)
        assert plain.authenticator is None
        plain.close()
    finally:
        ctx.destroy(linger=0)


@pytest.mark.parametrize("role", ["search", "prior"])
def test_a_server_refuses_a_network_address_without_curve(role):
    """As the hub: no open port without CURVE unless security.allow_insecure says so."""
    import anyio

    from pzstream.roles.prior_server import run_prior_server
    from pzstream.roles.search_server import run_search_server
    from pzstream.stream.transport import SecurityError

    run = run_prior_server if role == "prior" else run_search_server
    cfg = hub_config("llm.enabled=false")
    with pytest.raises(SecurityError, match="allow_insecure"):
        anyio.run(run, cfg, f"tcp://0.0.0.0:{free_base_port()}", anyio.Event())
