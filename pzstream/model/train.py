"""One optimisation step of the world model: model + EMA target model + AdamW."""
from __future__ import annotations

import copy

import torch

from .config import WorldModelConfig
from .losses import unizero_losses
from .targets import Batch
from .world_model import WorldModel


#: ``Trainer(autocast=...)`` names: the dtype the forward and losses run in (None: as stored, fp32).
AUTOCAST: dict[str, torch.dtype | None] = {"none": None, "bfloat16": torch.bfloat16}


class Trainer:
    """Owns the online model, its EMA target (latent targets) and the optimiser.

    step(batch) -> {"loss/total", "loss/latent", "loss/reward", "loss/value",
    "loss/policy", "loss/entropy", "grad_norm"} as floats.
    """

    def __init__(self, model: WorldModel, cfg: WorldModelConfig | None = None, device: str | torch.device = "cpu",
                 data_parallel: bool = False, autocast: str = "none"):
        if autocast not in AUTOCAST:
            raise ValueError(f"autocast must be one of {sorted(AUTOCAST)}, got {autocast!r}")
        self.cfg = (cfg or model.cfg).validate()
        self.device = torch.device(device)
        # bfloat16 autocast of the forward and losses (weights, gradients and optimiser stay fp32)
        self.autocast = AUTOCAST[autocast]
        self.model = model.to(self.device)
        self.target = copy.deepcopy(model).requires_grad_(False).eval()
        # data_parallel: torch DDP over the initialised process group; each rank steps on its share
        # of the global batch and gradients are averaged (pzstream/parallel.py launches the ranks)
        self.forward_model: torch.nn.Module = self.model
        if data_parallel:
            from torch.nn.parallel import DistributedDataParallel

            self.forward_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=False)  # every parameter takes part in each step's loss
        # nanoGPT convention: no weight decay on biases, norms and embedding tables
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "bag" not in n and "pos" not in n]
        other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "bag" not in n and "pos" not in n)]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.cfg.weight_decay},
                                      {"params": other, "weight_decay": 0.0}], lr=self.cfg.lr,
                                     **({"fused": True} if self.device.type == "cuda" else {"foreach": True}))
        self.steps = 0

    def step(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        batch = batch.to(self.device)
        self.model.train()
        with torch.no_grad():
            # UniZero: the latent target is the slowly moving target encoder on the real next obs
            need = batch.obs_idx[:, cfg.context_steps + 1:]
            uniq, inverse = torch.unique(need, return_inverse=True)  # encode only the next observations
            target_latent = self.target.encode_obs([batch.texts[i] for i in uniq.tolist()])[inverse]
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            losses = unizero_losses(self.forward_model(batch), batch, target_latent, cfg)
        self.opt.zero_grad(set_to_none=True)
        losses["loss/total"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.update_target()
        self.steps += 1
        out = {k: float(v.detach()) for k, v in losses.items()}
        out["grad_norm"] = float(grad_norm)
        return out

    @torch.no_grad()
    def update_target(self) -> None:
        """target <- (1 - tau) target + tau online, parameters and buffers alike."""
        tau = self.cfg.target_tau
        for t, s in zip(self.target.state_dict().values(), self.model.state_dict().values()):
            if t.dtype.is_floating_point:
                t.lerp_(s, tau)
            else:
                t.copy_(s)
