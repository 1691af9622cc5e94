"""Hub and collectors on different network addresses: two network namespaces joined by a veth pair.

Where namespaces cannot be made (not root, no iproute2), the same test runs on loopback and
says so in a warning; the summary line of pytest -ra shows which ran.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import warnings

import pytest

from pzstream.stream.transport import SecurityError, check_bind_security, generate_keys
from support import REPO, free_base_port, launch, wait_until


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def two_hosts():
    """Yield (hub_ip, hub_prefix, collector_prefix, mode): command prefixes that run inside each 'host'."""
    tag = f"{os.getpid() % 100000}"
    a, b, va, vb = f"pzA{tag}", f"pzB{tag}", f"pzva{tag}", f"pzvb{tag}"
    subnet = f"10.231.{os.getpid() % 250}"
    made: list[str] = []
    reason = ""
    if shutil.which("ip") is None:
        reason = "the ip command (iproute2) is not installed"
    elif os.geteuid() != 0:
        reason = "not root"
    else:
        try:
            for ns in (a, b):
                _ip("netns", "add", ns)
                made.append(ns)
            _ip("link", "add", va, "type", "veth", "peer", "name", vb)
            _ip("link", "set", va, "netns", a)
            _ip("link", "set", vb, "netns", b)
            for ns, dev, host in ((a, va, 1), (b, vb, 2)):
                _ip("-n", ns, "addr", "add", f"{subnet}.{host}/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except (subprocess.CalledProcessError, OSError) as e:
            reason = f"network namespaces unavailable: {getattr(e, 'stderr', b'') or e}"
    try:
        if reason:
            warnings.warn(f"multi-host test ran on LOOPBACK: {reason}")
            yield "127.0.0.1", [], [], "loopback"
        else:
            yield f"{subnet}.1", ["ip", "netns", "exec", a], ["ip", "netns", "exec", b], "netns"
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.slow
def test_hub_and_collector_on_different_hosts_with_curve(two_hosts, tmp_path, procs):
    hub_ip, on_hub, on_collector, mode = two_hosts
    keys = generate_keys(tmp_path / "keys")
    address = f"tcp://{hub_ip}:{free_base_port()}"
    py = [sys.executable, str(REPO / "launch.py")]
    common = ["hub.heartbeat_s=0.2", "hub.peer_timeout_heartbeats=10", "trainer.enabled=false", "collector.policy=random"]
    hub_err = tmp_path / "hub.err"
    hub = subprocess.Popen(on_hub + py + ["--role", "learner", "--learner", address, "--max-seconds", "600",
                                          f"security.curve_dir={keys}", f"run.out_dir={tmp_path}", *common],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=hub_err.open("wb"))
    procs.append(hub)
    remote = subprocess.Popen(on_collector + py + ["--role", "collector", "--learner", address, "--max-steps", "60",
                                                   "collector.id=remote", "collector.segment_steps=10",
                                                   f"security.curve_dir={keys}", *common],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    procs.append(remote)
    # a collector on the remote host without the keys: must get nowhere, and be counted. It runs until
    # the hub has logged its refusal (once per kind), however long a loaded machine takes to start it
    keyless = subprocess.Popen(on_collector + py + ["--role", "collector", "--learner", address, "--max-seconds", "300",
                                                    "collector.id=keyless", *common],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    procs.append(keyless)
    out, err = remote.communicate(timeout=300)
    assert remote.returncode == 0, err.decode()[-3000:]
    assert json.loads(out.decode().splitlines()[-1])["env_steps"] == 60
    wait_until(lambda: "rejected (handshake_failed)" in hub_err.read_text(errors="replace"), 240,
               "the hub's refusal of the keyless collector", hub, hub_err)
    keyless.send_signal(signal.SIGTERM)
    keyless.communicate(timeout=60)
    hub.send_signal(signal.SIGTERM)
    out, _ = hub.communicate(timeout=60)
    assert hub.returncode == 0, hub_err.read_text()[-3000:]
    summary = json.loads(out.decode().splitlines()[-1])
    assert summary["per_collector"]["remote"]["steps"] == 60, summary
    assert "keyless" not in summary["per_collector"]
    assert summary["connections_rejected"].get("handshake_failed", 0) >= 1, summary
    print(f"multi-host mode: {mode}, hub at {address}")


def test_binding_a_network_address_needs_curve_or_an_explicit_opt_out(tmp_path):
    with pytest.raises(SecurityError, match="allow_insecure"):
        check_bind_security("tcp://0.0.0.0:5555", None, allow_insecure=False)
    check_bind_security("tcp://0.0.0.0:5555", None, allow_insecure=True)
    check_bind_security("tcp://127.0.0.1:5555", None, allow_insecure=False)
    p = launch("--role", "learner", "--learner", f"tcp://0.0.0.0:{free_base_port()}", "--max-seconds", "5")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 2
    assert "refusing to bind" in err.decode() and "security.allow_insecure" in err.decode()


def test_cli_errors_are_clear():
    p = launch("--role", "learner", "hub.credit_windw=3")
    _, err = p.communicate(timeout=30)
    assert p.returncode == 2 and "hub.credit_windw" in err.decode()
    p = launch("--role", "collector", "--game", "no-such-game", "--max-seconds", "20",
               f"collector.learner=tcp://127.0.0.1:{free_base_port()}")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "no-such-game" in err.decode(), err.decode()[-2000:]
