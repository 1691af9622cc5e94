"""The search's recurrent step replayed as CUDA graphs: one launch for the whole step instead of some
hundred (two layers' passes, the heads, the cache copies), so a GPU is not left waiting on Python
between the kernels of a step (issue 22, item 3).

``SearchAdapter.step`` is captured once per batch bucket (1, 2, 4, ..., 1024 parents) on static inputs:
a step of b parents pads them to the next bucket by repeating its first parent (the copies compute and
write the same child, so they change nothing), copies the four index rows into the graph's input in one
transfer and replays. The graph reads the node store where it lives, so a store that grows (new
tensors) drops every graph and the next step captures again; new weights come as a new adapter. Capture needs CUDA;
``capture=False`` runs the same padded, static-shape step eagerly (what the CPU tests compare with the
plain step). A capture that fails is logged once and the adapter steps eagerly from then on.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .inference import SearchAdapter

log = logging.getLogger("pzstream.search")

MAX_BUCKET = 1024  # search_server.max_batch's bound


def bucket(b: int) -> int:
    """The batch a step of b parents runs at: the next power of two (b >= 1)."""
    if b < 1:
        raise ValueError(f"a step needs at least one parent, got {b}")
    return 1 << (b - 1).bit_length()


def padded_inputs(handles: np.ndarray, acts: np.ndarray, lens: np.ndarray, children: np.ndarray,
                  size: int) -> np.ndarray:
    """int64 [4, size]: parents, actions, parent lengths and child rows, padded by repeating the first."""
    rows = np.stack([np.asarray(x, dtype=np.int64).reshape(-1) for x in (handles, acts, lens, children)])
    if rows.shape[1] > size:
        raise ValueError(f"{rows.shape[1]} parents do not fit a bucket of {size}")
    return np.concatenate([rows, np.repeat(rows[:, :1], size - rows.shape[1], axis=1)], axis=1)


class StepGraphs:
    """``SearchAdapter.step`` over static inputs, one per bucket; captured as CUDA graphs when ``capture``."""

    def __init__(self, adapter: "SearchAdapter", capture: bool):
        self.adapter = adapter
        self.capture = capture
        self.failed: str | None = None  # why a capture failed: the adapter steps eagerly from then on
        self.captures = 0
        self._inputs: dict[int, torch.Tensor] = {}  # bucket -> int64 [4, bucket] on the device
        self._graphs: dict[int, tuple[torch.Tensor, torch.cuda.CUDAGraph]] = {}  # bucket -> (output, graph)
        self._key: tuple[int, ...] = ()

    def fits(self, b: int) -> bool:
        return self.failed is None and 1 <= b <= MAX_BUCKET

    def _store_key(self) -> tuple[int, ...]:
        """What a graph has baked in that can move: the node and root stores' addresses (they are new tensors
        when they grow). The adapter's model is fixed for its life (new weights come as a new adapter)."""
        a = self.adapter
        return tuple(t.data_ptr() for t in (a._tokens, a._valid, a._root_of, a._act, a._keys, a._legal, *a._k, *a._v))

    def run(self, handles: np.ndarray, acts: np.ndarray, lens: np.ndarray, children: np.ndarray) -> torch.Tensor:
        """The step's float32 [b, 2 + max_candidates] output (read it before the next step: it is reused)."""
        b, size = len(handles), bucket(len(handles))
        key = self._store_key()
        if key != self._key:  # the store grew: every graph read the old tensors
            self._graphs.clear()
            self._key = key
        if size not in self._inputs:
            self._inputs[size] = torch.zeros(4, size, dtype=torch.long, device=self.adapter.device)
        idx = self._inputs[size]
        idx.copy_(torch.from_numpy(padded_inputs(handles, acts, lens, children, size)))
        if not self.capture:
            return self._step(idx)[:b]
        if size not in self._graphs:
            try:
                self._graphs[size] = self._capture(idx)
            except Exception as e:  # the step stays correct eagerly; say once why it is not graphed
                self.failed = f"{type(e).__name__}: {e}"
                log.warning("CUDA graph capture of the search's recurrent step failed (%s); stepping eagerly",
                            self.failed)
                return self._step(idx)[:b]
            self.captures += 1
        out, graph = self._graphs[size]
        graph.replay()
        return out[:b]

    def _step(self, idx: torch.Tensor) -> torch.Tensor:
        cfg = self.adapter.cfg
        return self.adapter.step(idx[0], idx[1], idx[2], idx[3], cfg.max_tokens, cfg.max_candidates)

    def _capture(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.CUDAGraph]:
        """Capture the step on ``idx`` as it is. Its warm-up runs write the children the replays write."""
        side = torch.cuda.Stream(device=idx.device)
        side.wait_stream(torch.cuda.current_stream(idx.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # lazy initialisation of the kernels' libraries, off the captured stream
                self._step(idx)
        torch.cuda.current_stream(idx.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the search server's other thread (the next batch's LLM prior) keeps using the device
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = self._step(idx)
        return out, graph


def step_graphs(adapter: "SearchAdapter", enabled: bool) -> StepGraphs | None:
    """The adapter's graphed step where it is enabled and the adapter is on a CUDA device, else None (the
    plain step: on a CPU the padded one only costs more, 0.7x in ``bench/serve.py --sweep``)."""
    if not enabled or adapter.device.type != "cuda":
        return None
    return StepGraphs(adapter, capture=True)
