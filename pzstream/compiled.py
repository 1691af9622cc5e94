"""``torch.compile`` of a model's repeated blocks (regional compilation).

The GPU steps of PPO and of world-model training are mostly small element-wise kernels between
the matmuls (norms, activations, residual adds, rotary embeddings): issue 13 measured ~3,400
launches per PPO micro-batch. Compiling each transformer block fuses them. Compiling the blocks,
not the whole model, keeps the compile time to one block's (the blocks share one compiled graph),
leaves the parameters and their names untouched (``state_dict`` and weight loading see the plain
modules), and keeps the parts that vary call to call (packing, gathers, losses) eager.

Compilation needs a working Triton on a GPU (and a C compiler for its launcher); where it fails,
the first call raises, so callers ask for it explicitly (``--compile``, ``ppo.compile``,
``trainer.compile``) and on a CPU nothing is compiled.
"""
from __future__ import annotations

from typing import Any

import torch


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The repeated decoder layers of a transformers causal LM (``model.model.layers`` for Qwen2 and Llama)."""
    prefix = getattr(model, "base_model_prefix", "model")
    layers = getattr(getattr(model, prefix, model), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no ModuleList of decoder layers at .{prefix}.layers")
    return layers


def compile_blocks(blocks: torch.nn.ModuleList, device: torch.device | str) -> int:
    """Compile each block in place (``Module.compile``, dynamic shapes) when ``device`` is a GPU; how many were."""
    if torch.device(device).type != "cuda":
        return 0
    for block in blocks:
        block.compile(dynamic=True)
    return len(blocks)
