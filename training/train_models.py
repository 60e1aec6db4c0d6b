"""The models of a training run (:class:`TrainModels`), the parameter groups each task trains, and the base
it starts from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import UNetMotionModel

from motion_adapters.base import BaseWeights
from motion_adapters.formats.motion_module import MotionModuleWeights
from motion_adapters.hub import resolve_source
from motion_adapters.registry import base_config_for
from motion_adapters.training.config import TrainConfig

SPATIAL, TEMPORAL = "spatial", "temporal"


@dataclass
class TrainModels:
    unet: UNetMotionModel
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    base: BaseWeights
    motion: MotionModuleWeights | None  # None for task t2i (a 2-D UNet)
    groups: dict[str, list[str]] = field(default_factory=dict)  # group -> trainable parameter names
    lora_adapters: dict[str, str] = field(default_factory=dict)  # group -> PEFT adapter name


def resolve_base(cfg: TrainConfig) -> tuple[Path, str | Path | None]:
    """``model.base`` (a path or registered name) and the folder describing its architecture, if any."""
    config = cfg.model.base_config or base_config_for(cfg.model.base)
    return resolve_source(cfg.model.base), config


def trained_groups(task: str) -> tuple[str, ...]:
    return {"t2i": (SPATIAL,), "motion": (TEMPORAL,), "motion_lora": (TEMPORAL,), "spatial_lora": (SPATIAL,),
            "spatial_full": (SPATIAL,), "joint": (SPATIAL, TEMPORAL),
            "motiondirector": (SPATIAL, TEMPORAL)}[task]


def uses_lora(task: str) -> bool:
    return task in ("motion_lora", "spatial_lora", "motiondirector")
