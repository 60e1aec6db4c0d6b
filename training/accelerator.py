"""The accelerate ``Accelerator`` of a run: device, mixed precision and gradient accumulation from the config."""

from __future__ import annotations

import os

import torch

from motion_adapters.compat import reset_accelerate_state
from motion_adapters.training.config import ConfigError, TrainConfig


def _reset_accelerate_state() -> None:
    """Allow several in-process runs (tests) with different settings; a no-op under torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        reset_accelerate_state()


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    cpu = cfg.run.device == "cpu" or (cfg.run.device == "auto" and not cuda)
    if cfg.run.device == "cuda" and not cuda:
        raise ConfigError("run.device: expected a CUDA GPU for 'cuda', found none (use auto or cpu)")
    mp = cfg.run.mixed_precision
    if cfg.run.low_vram and mp == "no":  # bf16 on CPU (autocast) and on GPUs that have it, else fp16
        mp = "bf16" if cpu or torch.cuda.is_bf16_supported() else "fp16"
    if cpu and mp == "fp16":
        raise ConfigError("run.mixed_precision: fp16 needs a GPU; on CPU use bf16 or no, found fp16")
    _reset_accelerate_state()
    return Accelerator(cpu=cpu, mixed_precision=mp, gradient_accumulation_steps=cfg.run.grad_accum)


def frozen_dtype(accelerator) -> torch.dtype | None:
    """Storage dtype of the frozen weights: the mixed-precision dtype (None = fp32, no mixed precision)."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision)
