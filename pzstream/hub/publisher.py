"""The one authority over weights versions: numbers, stores and announces every version.

The trainer and the PPO worker hand over bytes; only ``PublishedVersions.publish`` decides
that they are version N+1 of their model. Version 0 is the untrained model every process
builds for itself: it is never published, only announced with empty bytes.

Versions only grow within a run directory: a hub restarted on the same run numbers on from the
newest version in its weights mirror, so collectors that outlived the old hub (and stamp their
segments with its versions) are neither refused as "from the future" nor offered a different
model under a version number they already hold.
"""
from __future__ import annotations

import logging

import anyio

from pzstream.stream import wire
from pzstream.stream.transport import NoticePublisher
from pzstream.stream.weights import HUB_URI, WeightsStore, latest_on_disk

log = logging.getLogger("pzstream.learner")

MODELS = ("wm", "llm")


class PublishedVersions:
    """Newest published version per model; bytes in ``store``, notices on ``notices`` once attached."""

    def __init__(self, store: WeightsStore):
        self.store = store
        self.notices: NoticePublisher | None = None
        self._latest = dict.fromkeys(MODELS, 0)
        self.publishes = dict.fromkeys(MODELS, 0)  # versions published by this hub process (a resumed run's too)
        if store.directory is not None and store.directory.is_dir():
            for model in MODELS:
                if (found := latest_on_disk(store.directory, model)) is not None:
                    self._latest[model] = found[0]
            if any(self._latest.values()):
                log.info("numbering weights on from the run's mirror %s: wm v%d, llm v%d", store.directory,
                         self._latest["wm"], self._latest["llm"])

    def published(self, model: str) -> int:
        return self._latest[model]

    @property
    def wm(self) -> int:
        return self._latest["wm"]

    @property
    def llm(self) -> int:
        return self._latest["llm"]

    async def publish(self, model: str, data: bytes) -> wire.Weights:
        """Store ``data`` as the next version of ``model`` and announce it."""
        if model not in self._latest:
            raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")
        version = self._latest[model] + 1
        notice = self.store.put(model, version, data)
        self._latest[model] = version
        self.publishes[model] += 1
        if self.notices is not None:
            await self.notices.publish(notice)
        # DEBUG: a world model publishes about once a second; the periodic report line counts them
        log.debug("published %s v%d (%d bytes, sha256 %s)", model, version, notice.nbytes, notice.sha256[:12])
        return notice

    async def announce(self) -> None:
        """Repeat the newest notices so late joiners learn them; bytes are fetched, never published."""
        if self.notices is None:
            return
        for model, version in self._latest.items():
            stored = self.store.latest(model)
            if stored is not None:
                await self.notices.publish(wire.Weights(model=model, version=stored.version, uri=HUB_URI,
                                                        sha256=stored.sha256, nbytes=len(stored.data)))
            else:
                await self.notices.publish(wire.Weights(model=model, version=version, uri="", sha256="", nbytes=0))

    async def run(self, every_s: float) -> None:
        while True:
            await self.announce()
            await anyio.sleep(every_s)
