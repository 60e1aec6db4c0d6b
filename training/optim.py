"""Optimizers (torch AdamW or bitsandbytes AdamW8bit) and the LR schedule (constant or cosine, with warmup)."""

from __future__ import annotations

import torch
from diffusers.optimization import get_scheduler

from motion_adapters.training.config import ConfigError, OptimConfig


def build_optimizer(groups: list[dict], cfg: OptimConfig, use_8bit: bool) -> torch.optim.Optimizer:
    """``groups``: ``[{"params": [...], "lr": float, "name": str}]``. 8-bit state via bitsandbytes (CPU too)."""
    kw = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if use_8bit:
        try:
            import bitsandbytes as bnb
        except ImportError as e:  # pragma: no cover - bitsandbytes is in the [train] extra
            raise ConfigError("optim.optimizer: adamw8bit needs bitsandbytes (pip install 'motion-adapters[train]'), "
                              "found it not installed") from e
        return bnb.optim.AdamW8bit(groups, **kw)
    return torch.optim.AdamW(groups, **kw)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int,
                       num_processes: int = 1) -> torch.optim.lr_scheduler.LambdaLR:
    """diffusers' schedule ``cfg.lr_schedule`` with ``cfg.warmup_steps`` of linear warmup: ``constant`` (what
    AnimateDiff uses) or ``cosine`` (decays to 0 at ``max_steps``; small models converge further with it).

    accelerate steps a prepared scheduler once per process per optimizer step, hence ``num_processes``."""
    name = "constant_with_warmup" if cfg.lr_schedule == "constant" else "cosine"
    return get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup_steps * num_processes,
                         num_training_steps=max_steps * num_processes)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in optimizer state tensors (moments, quantisation maps and scales)."""
    total = 0
    for state in optimizer.state.values():
        for v in state.values():
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
    return total
