"""The models of a PPO episode: policy, critic and reference, each trainable with a plain torch
optimiser or a DeepSpeed ZeRO engine. The same classes run in process and inside Ray actors.

A batch is a list of (prompt token ids, response token ids), packed and scored by
``pzstream.llm.logprobs`` (the forward SFT and RFT train through): every per-token quantity is
response-aligned, float [B, T] with ``mask`` 1 on real response tokens. The critic's value of
token t is read at the position whose logits predict it. The losses are ``pzstream.llm.losses``.
"""
from __future__ import annotations

import os
import socket
from typing import Any, Sequence

import torch

from pzstream.llm.logprobs import Packed, Seq, pack, to_device, token_logprobs  # noqa: F401  (Seq: the batch row type)
from pzstream.llm.losses import clip_fraction, k3_kl, masked_mean, ppo_clip_loss
from pzstream.orz import ppo_math
from pzstream.orz.rollout import transformers_sample

def _device_of(model: Any) -> torch.device:
    return next(model.parameters()).device


class ValueModel(torch.nn.Module):
    """A critic: the LLM's transformer body (initialised from the same weights) and a linear value head."""

    def __init__(self, path: str):
        super().__init__()
        from transformers import AutoModel

        self.body = AutoModel.from_pretrained(path, dtype=torch.float32)
        self.head = torch.nn.Linear(self.body.config.hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, pk: Packed) -> torch.Tensor:
        pk = to_device(pk, self.head.weight.device)
        h = self.body(input_ids=pk.input_ids, attention_mask=pk.attention_mask).last_hidden_state
        idx = pk.gather_pos.unsqueeze(-1).expand(-1, -1, h.shape[-1])
        return self.head(torch.gather(h, 1, idx)).squeeze(-1) * pk.mask


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_single_process_group() -> None:
    """DeepSpeed needs a process group; a lone trainer gets a gloo group of one on a free port."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if "WORLD_SIZE" not in os.environ:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", LOCAL_RANK="0",
                          WORLD_SIZE="1")
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo" if not torch.cuda.is_available() else "nccl")


def _on_cuda(module: torch.nn.Module) -> bool:
    return any(p.is_cuda for p in module.parameters())


def autocast_for(engine: Any, device: torch.device):
    """bfloat16 autocast for the plain-torch update on a GPU (its weights stay fp32 for AdamW);
    DeepSpeed's bf16 engine and CPU runs compute as they are."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=engine is None and device.type == "cuda")


class Trainable:
    """A module and its optimiser: ``torch`` (AdamW) or ``deepspeed`` (ZeRO ``zero_stage``, AdamW
    as the client optimiser: DeepSpeed's own CPU Adam needs a compiled op; ``zero_config``: more keys of
    its ``zero_optimization`` section, such as ZeRO-3's bucket sizes). ``step(losses_fn,
    micro_batches)`` accumulates gradients over the micro-batches and takes one optimiser step."""

    def __init__(self, module: torch.nn.Module, lr: float, engine: str = "torch", zero_stage: int = 2,
                 micro_batch: int = 1, accumulation: int = 1, grad_clip: float = 1.0,
                 zero_config: dict[str, Any] | None = None):
        if engine not in ("torch", "deepspeed"):
            raise ValueError(f"engine must be 'torch' or 'deepspeed', got {engine!r}")
        self.engine_kind = engine
        self.accumulation = accumulation
        self.grad_clip = grad_clip
        self.zero_stage = zero_stage
        # fused: one kernel for the whole step on a GPU (the unfused step was a measured cost, issue 13)
        opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=lr, weight_decay=0.0,
                                fused=torch.cuda.is_available() and engine == "deepspeed" or _on_cuda(module))
        if engine == "deepspeed":
            import deepspeed

            init_single_process_group()
            config = {"train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": accumulation,
                      "gradient_clipping": grad_clip, "zero_optimization": {"stage": zero_stage, **(zero_config or {})},
                      "zero_allow_untested_optimizer": True, "steps_per_print": 10**9, "wall_clock_breakdown": False}
            if torch.cuda.is_available():
                config["bf16"] = {"enabled": True}
            self.engine, self.optimizer, _, _ = deepspeed.initialize(model=module, optimizer=opt, config=config)
            self.module = self.engine.module
        else:
            self.engine, self.optimizer, self.module = None, opt, module

    def backward(self, loss: torch.Tensor) -> None:
        if self.engine is not None:
            self.engine.backward(loss)
            self.engine.step()  # DeepSpeed steps the optimiser at the accumulation boundary only
        else:
            (loss / self.accumulation).backward()

    def finish(self) -> None:
        if self.engine is None:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    def full_state(self) -> dict[str, torch.Tensor]:
        """The full (gathered, under ZeRO-3) state dict on CPU."""
        if self.engine is not None and self.zero_stage == 3:
            import deepspeed

            params = list(self.module.parameters())
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}
        return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}


def _compile_trainable(trainable: Trainable, body: Any) -> int:
    from pzstream.compiled import compile_blocks, decoder_layers

    if trainable.engine is not None and trainable.zero_stage == 3:
        return 0
    module = trainable.module
    return compile_blocks(decoder_layers(body(module)), _device_of(module))


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


class PolicyModel:
    """The policy being trained: log-probs, the PPO update, and its weights as safetensors bytes."""

    def __init__(self, path: str, lr: float, engine: str = "torch", zero_stage: int = 2, micro_batch: int = 8,
                 accumulation: int = 1, seed: int = 0, device: str = "cpu", zero_config: dict[str, Any] | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(seed)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        if engine == "torch":  # DeepSpeed places the module on its rank's GPU itself
            model = model.to(device)
        self.tied = bool(getattr(model.config, "tie_word_embeddings", False))
        self.micro_batch = micro_batch
        self.trainable = Trainable(model, lr, engine, zero_stage, micro_batch, accumulation, zero_config=zero_config)
        self.model = self.trainable.module
        self._z3 = self.trainable.engine if engine == "deepspeed" and zero_stage == 3 else None

    def compile(self) -> int:
        """``torch.compile`` the decoder layers' training forward on a GPU (``pzstream.compiled``); how many were.
        Call it after any copy of ``self.model`` is made. Not under ZeRO-3 (it broke the loss there)."""
        return _compile_trainable(self.trainable, lambda m: m)

    @torch.no_grad()
    def logprobs(self, seqs: Sequence[Seq], micro: int = 16) -> torch.Tensor:
        self.model.eval()
        return _cat_rows([token_logprobs(self.model, pack(seqs[s], self.pad_id), self._z3).cpu()
                          for s in _chunks(len(seqs), micro)])

    def train(self, seqs: Sequence[Seq], old_logp: torch.Tensor, adv: torch.Tensor, ref_logp: torch.Tensor | None,
              update_steps: int, eps_clip: float, kl_coef: float) -> dict[str, float]:
        """``update_steps`` optimiser steps over disjoint mini-batches, each accumulated over micro-batches."""
        self.model.train()
        n = len(seqs)
        mini = n // update_steps
        totals = {"policy_loss": 0.0, "kl": 0.0, "clip_frac": 0.0}
        count = 0
        for u in range(update_steps):
            for s in _chunks(mini, self.micro_batch):
                rows = slice(u * mini + s.start, u * mini + s.stop)
                dev = _device_of(self.model)
                pk = to_device(pack(seqs[rows], self.pad_id), dev)
                T = pk.mask.shape[1]
                old = old_logp[rows, :T].to(dev)
                with autocast_for(self.trainable.engine, dev):
                    logp = token_logprobs(self.model, pk, self._z3)
                loss = ppo_clip_loss(logp, old, adv[rows, :T].to(dev), eps_clip, pk.mask)
                kl = torch.zeros((), device=dev)
                if ref_logp is not None:
                    kl = masked_mean(k3_kl(logp, ref_logp[rows, :T].to(dev)), pk.mask)
                    loss = loss + kl_coef * kl
                self.trainable.backward(loss)
                totals["policy_loss"] += float(loss.detach())
                totals["kl"] += float(kl.detach())
                totals["clip_frac"] += float(clip_fraction(logp, old, eps_clip, pk.mask))
                count += 1
            self.trainable.finish()
        return {k: v / max(count, 1) for k, v in totals.items()}

    def state_bytes(self) -> bytes:
        """Safetensors bytes in the layout collectors load (a tied lm_head is left out, as
        ``TransformersBackend.state_dict_bytes`` does)."""
        from safetensors.torch import save

        state = self.trainable.full_state()
        if self.tied:
            state.pop("lm_head.weight", None)
        return save({k: v.contiguous() for k, v in state.items()})

    @torch.no_grad()
    def greedy(self, prompt_ids: Sequence[list[int]], max_new_tokens: int) -> list[list[int]]:
        """Greedy continuation token ids, all prompts in one batch (each gets its answer alone, tested)."""
        return [a[0] for a in transformers_sample(self.model, self.tokenizer, prompt_ids, 1, max_new_tokens, 0.0, 0)]


class CriticModel:
    """The value model: per-token values and the clipped value-loss update."""

    def __init__(self, path: str, lr: float, engine: str = "torch", zero_stage: int = 2, micro_batch: int = 8,
                 accumulation: int = 1, seed: int = 0, pad_id: int = 0, device: str = "cpu"):
        torch.manual_seed(seed)
        self.pad_id = pad_id
        self.micro_batch = micro_batch
        value = ValueModel(path)
        self.trainable = Trainable(value.to(device) if engine == "torch" else value, lr, engine, zero_stage, micro_batch,
                                   accumulation)
        self.model = self.trainable.module

    def compile(self) -> int:
        """As ``PolicyModel.compile``, for the critic's transformer body."""
        return _compile_trainable(self.trainable, lambda m: m.body)

    @torch.no_grad()
    def values(self, seqs: Sequence[Seq], micro: int = 16) -> torch.Tensor:
        self.model.eval()
        return _cat_rows([self.model(pack(seqs[s], self.pad_id)).float().cpu() for s in _chunks(len(seqs), micro)])

    def train(self, seqs: Sequence[Seq], old_values: torch.Tensor, returns: torch.Tensor, update_steps: int,
              value_clip: float) -> dict[str, float]:
        self.model.train()
        n = len(seqs)
        mini = n // update_steps
        total, count = 0.0, 0
        for u in range(update_steps):
            for s in _chunks(mini, self.micro_batch):
                rows = slice(u * mini + s.start, u * mini + s.stop)
                dev = self.model.head.weight.device
                pk = to_device(pack(seqs[rows], self.pad_id), dev)
                T = pk.mask.shape[1]
                with autocast_for(self.trainable.engine, dev):
                    values = self.model(pk)
                loss = ppo_math.value_loss(values.float(), old_values[rows, :T].to(dev), returns[rows, :T].to(dev),
                                           pk.mask, value_clip)
                self.trainable.backward(loss)
                total += float(loss.detach())
                count += 1
            self.trainable.finish()
        return {"value_loss": total / max(count, 1)}


class ReferenceModel:
    """The frozen initial policy, for the KL term."""

    def __init__(self, path: str, device: str = "cpu"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def logprobs(self, seqs: Sequence[Seq], micro: int = 16) -> torch.Tensor:
        return _cat_rows([token_logprobs(self.model, pack(seqs[s], self.pad_id)).cpu() for s in _chunks(len(seqs), micro)])


def _cat_rows(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate [b_i, T_i] blocks along rows, right-padding to the widest T with 0."""
    T = max(p.shape[1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, T - p.shape[1])) for p in parts], dim=0)
