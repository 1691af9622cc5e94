"""Weights travel as a notice plus a checked fetch; bad weights never replace good ones."""
from __future__ import annotations

import json
import signal
import time

import pytest

from pzstream.stream.weights import CHUNK_BYTES, BlobAssembler, WeightsError, WeightsStore
from pzstream.stream.wire import Blob, Fetch
from support import HubThread, hub_config, launch


def fetch_all(store: WeightsStore, notice) -> bytes:
    asm = BlobAssembler(notice)
    while not asm.done:
        asm.add(store.chunk(asm.next_request()))
    return asm.result()


def test_store_serves_chunks_and_assembler_checks_them():
    store = WeightsStore(keep=2)
    data = bytes(range(256)) * (3 * CHUNK_BYTES // 256 + 7)
    notice = store.put("wm", 1, data)
    assert notice.nbytes == len(data) and notice.uri == "hub"
    assert fetch_all(store, notice) == data
    store.put("wm", 2, b"x")
    store.put("wm", 3, b"y")
    assert store.latest("wm").version == 3
    assert store.chunk(Fetch("wm", 1, 0, 10)).total == 0  # evicted: keep=2
    with pytest.raises(WeightsError, match="no longer"):
        fetch_all(store, notice)


def test_assembler_rejects_checksum_and_size_mismatch():
    store = WeightsStore()
    notice = store.put("wm", 1, b"a" * 100)
    store._by_model["wm"][1] = store._by_model["wm"][1].__class__("wm", 1, notice.sha256, b"b" * 100)  # corrupted bytes
    with pytest.raises(WeightsError, match="sha256"):
        fetch_all(store, notice)
    asm = BlobAssembler(notice)
    with pytest.raises(WeightsError, match="notice said"):
        asm.add(Blob("wm", 1, 0, 99, notice.sha256, b"a" * 99))
    with pytest.raises(WeightsError, match="expected 0"):
        asm.add(Blob("wm", 1, 5, 100, notice.sha256, b"a" * 10))


def collector_stats(hub, cid: str) -> dict:
    """The collector's last heartbeat numbers, from the hub's status (``hub``: a HubThread)."""
    c = hub.status().collectors.get(cid)
    return c.stats if c is not None else {}


def test_collector_fetches_new_weights_and_keeps_old_ones_on_bad_checksum_or_shape(address, procs):
    import torch

    from pzstream.config import load_config
    from pzstream.model.world_model import WorldModel, weights_bytes

    hub = HubThread(hub_config(address)).start()
    procs.append(launch("--role", "collector", "--learner", address, "collector.id=w0", "hub.heartbeat_s=0.2",
                        "collector.segment_steps=5", "search.num_simulations=2"))
    try:
        hub.wait_for(lambda h: collector_stats(h, "w0").get("env_steps", 0) >= 5, timeout=90, what="collector playing")
        assert collector_stats(hub, "w0")["wm_version"] == 0

        # wrong shape: a model of another size
        torch.manual_seed(1)
        small = WorldModel(load_config(None, ["model.latent_dim=32"]).world_model())
        hub.hub.weights.put("wm", 1, weights_bytes(small))
        hub.wait_for(lambda h: collector_stats(h, "w0").get("weights_rejected", 0) >= 1, timeout=30, what="shape rejected")
        # wrong checksum: the stored bytes no longer match the notice's sha256
        good = weights_bytes(WorldModel(load_config().world_model()))
        notice = hub.hub.weights.put("wm", 2, good)
        entry = hub.hub.weights._by_model["wm"][2]
        hub.hub.weights._by_model["wm"][2] = entry.__class__("wm", 2, notice.sha256, good[:-1] + bytes([good[-1] ^ 1]))
        hub.wait_for(lambda h: collector_stats(h, "w0").get("weights_rejected", 0) >= 2, timeout=30, what="checksum rejected")
        time.sleep(0.5)
        assert collector_stats(hub, "w0")["wm_version"] == 0, "bad weights must not replace the old ones"
        # good weights arrive and are swapped in between moves
        hub.hub.weights.put("wm", 3, good)
        hub.wait_for(lambda h: collector_stats(h, "w0").get("wm_version", 0) == 3, timeout=60, what="v3 in use")
    finally:
        procs[0].send_signal(signal.SIGTERM)
        out, err = procs[0].communicate(timeout=30)
        hub.stop()
    assert procs[0].returncode == 0, err.decode()[-2000:]
    assert json.loads(out.decode().splitlines()[-1])["weights_rejected"] == 2
