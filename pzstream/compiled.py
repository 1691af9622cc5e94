"""``torch.compile`` of a model's repeated blocks (regional compilation).

The GPU steps of PPO and of world-model training are mostly small element-wise kernels between
the matmuls (norms, activations, residual adds, rotary embeddings): issue 13 measured ~3,400
launches per PPO micro-batch. Compiling each transformer block fuses them: the PPO update of a
0.5 B model went from 22.5% to 37.4% MFU on an H100 (plain torch, micro-batch 64; DeepSpeed ZeRO-2,
micro-batch 32: 21.0% -> 29.2%). Compiling the blocks,
not the whole model, keeps the compile time to one block's (the blocks share one compiled graph),
leaves the parameters and their names untouched (``state_dict`` and weight loading see the plain
modules), and keeps the parts that vary call to call (packing, gathers, losses) eager.

Compilation needs a working Triton on a GPU (and a C compiler for its launcher); where it fails,
the block logs it once and runs eagerly. Callers ask for it explicitly (``--compile``, ``ppo.compile``,
``trainer.compile``) and on a CPU nothing is compiled. Not under DeepSpeed ZeRO-3, whose
parameter hooks it broke (a wrong loss on the second step, H100).
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch

log = logging.getLogger("pzstream.compiled")


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The repeated decoder layers of a transformers causal LM (``model.model.layers`` for Qwen2 and Llama)."""
    prefix = getattr(model, "base_model_prefix", "model")
    layers = getattr(getattr(model, prefix, model), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no ModuleList of decoder layers at .{prefix}.layers")
    return layers


def _compile_errors() -> tuple[type[BaseException], ...]:
    from torch._dynamo import exc

    return (exc.BackendCompilerFailed, exc.InternalTorchDynamoError)


def _dispatch(eager: Callable[..., Any], compiled: Callable[..., Any], scoring: bool) -> Callable[..., Any]:
    """The compiled forward where gradients flow (and, with ``scoring``, in forward-only passes too),
    the eager one elsewhere; a compile that fails (no C compiler for Triton, an unsupported op) is
    logged once and the block runs eagerly from then on (the failed call is run again eagerly: a
    failed compile ran nothing)."""
    use = [compiled]

    def forward(*args: Any, **kwargs: Any) -> Any:
        if use[0] is eager or not (scoring or torch.is_grad_enabled()):
            return eager(*args, **kwargs)
        try:
            return use[0](*args, **kwargs)
        except _compile_errors() as e:
            log.warning("torch.compile of a block failed (%s: %s); it runs eagerly from now on",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            use[0] = eager
            return eager(*args, **kwargs)
    return forward


def compile_blocks(blocks: torch.nn.ModuleList, device: torch.device | str, scoring: bool = False) -> int:
    """Compile each block's forward in place (dynamic shapes) when ``device`` is a GPU; how many were.

    By default the compiled forward runs where gradients flow (training steps, the measured gain);
    forward-only passes keep the eager one (generation's KV-cache steps change shape every token).
    ``scoring=True`` (the LLM prior's model, ``llm.compile``): forward-only passes run compiled
    too: the prior's packed forwards are few and large, and their element-wise kernels between the
    matmuls were a third of their GPU time (bench/prior.py --profile). Compile AFTER any
    ``copy.deepcopy`` of the model: a copy would keep calling the original's blocks."""
    if torch.device(device).type != "cuda":
        return 0
    for block in blocks:
        block.forward = _dispatch(block.forward, torch.compile(block.forward, dynamic=True), scoring)
    return len(blocks)
