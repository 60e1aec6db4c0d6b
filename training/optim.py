"""Optimizers (torch AdamW or bitsandbytes AdamW8bit) and the constant-with-warmup LR schedule."""

from __future__ import annotations

import torch

from .config import ConfigError, OptimConfig


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


def constant_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """AnimateDiff uses a constant LR; an optional linear warmup over ``warmup_steps``."""
    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in optimizer state tensors (moments, quantisation maps and scales)."""
    total = 0
    for state in optimizer.state.values():
        for v in state.values():
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
    return total
