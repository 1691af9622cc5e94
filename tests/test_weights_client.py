"""The one weights client: follow notices, fetch, check, swap; and a run's mirror on disk."""
from __future__ import annotations

import dataclasses

import anyio
import pytest

from pzstream.stream.weights import BlobAssembler, WeightsError, WeightsStore
from pzstream.stream.weights_client import WeightsClient
from pzstream.stream.wire import Weights


class Loader:
    """An installer that refuses bytes starting with b"bad", as a model refuses a wrong shape."""

    def __init__(self) -> None:
        self.loaded: list[tuple[int, bytes]] = []

    def __call__(self, data: bytes, version: int) -> None:
        if data.startswith(b"bad"):
            raise ValueError("shape mismatch")
        self.loaded.append((version, data))


def _fetch_from(store: WeightsStore):
    async def fetch(note: Weights) -> bytes:  # the same chunked, checked path a connection uses
        asm = BlobAssembler(note)
        while not asm.done:
            asm.add(store.chunk(asm.next_request()))
        return asm.result()
    return fetch


def _run(client: WeightsClient, notes: list[Weights], store: WeightsStore) -> None:
    queue = list(notes)

    async def main() -> None:
        done = anyio.Event()

        async def recv() -> Weights:
            if not queue:
                done.set()
                await anyio.sleep_forever()
            return queue.pop(0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(client.follow, recv, _fetch_from(store))
            await done.wait()
            tg.cancel_scope.cancel()

    anyio.run(main)


def test_follow_installs_newer_versions_only_and_keeps_old_weights_on_faults():
    store = WeightsStore(keep=10)
    wm, llm = Loader(), Loader()
    client = WeightsClient({"wm": wm, "llm": llm}, who="test")
    n1 = store.put("wm", 1, b"wm-one" * 1000)
    n2_bad = store.put("wm", 2, b"bad weights")
    forged = dataclasses.replace(store.put("wm", 3, b"wm-three"), sha256="0" * 64)  # bytes do not match the notice
    n4 = store.put("wm", 4, b"wm-four")
    other = store.put("critic", 9, b"not ours")
    l1 = store.put("llm", 1, b"llm-one")
    _run(client, [n1, n1, n2_bad, forged, other, l1, n4, n2_bad, n1], store)
    assert wm.loaded == [(1, b"wm-one" * 1000), (4, b"wm-four")]
    assert llm.loaded == [(1, b"llm-one")]
    assert client.stats.versions == {"wm": 4, "llm": 1}
    assert client.stats.rejected == 2  # the refused load and the forged checksum, each tried once
    assert any("v3" in e and "fetch failed" in e for e in client.stats.errors)


def test_notice_without_bytes_is_not_fetched():
    store = WeightsStore()
    client = WeightsClient({"wm": Loader()})
    assert not client.wants(Weights(model="wm", version=5, uri="", sha256="", nbytes=0))
    assert client.wants(store.put("wm", 5, b"x"))


def test_mirror_is_checked_against_its_recorded_sha256(tmp_path):
    store = WeightsStore(keep=3, directory=tmp_path)
    store.put("wm", 1, b"one")
    store.put("wm", 2, b"two")
    loader = Loader()
    assert WeightsClient({"wm": loader, "llm": Loader()}).load_mirror(tmp_path) == {"wm": 2, "llm": 0}
    assert loader.loaded == [(2, b"two")]
    (tmp_path / "wm-v2.pt").write_bytes(b"tampered")
    client = WeightsClient({"wm": Loader()})
    assert client.load_mirror(tmp_path) == {"wm": 0}
    assert client.stats.rejected == 1 and "sha256" in client.stats.errors[0]


def test_read_mirrored_names_the_damaged_file(tmp_path):
    from pzstream.stream.weights import read_mirrored

    WeightsStore(directory=tmp_path).put("llm", 7, b"abc")
    assert read_mirrored(tmp_path, "llm") == (7, b"abc")
    (tmp_path / "llm-v7.pt").write_bytes(b"abd")
    with pytest.raises(WeightsError, match="llm-v7.pt"):
        read_mirrored(tmp_path, "llm")
