"""The models of a training run (:class:`TrainModels`), the parameter groups each task trains, and the base
it starts from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel, UNetMotionModel

from motion_adapters.base import BaseWeights, configs_from_folder, read_base, tokenizer_dir_of
from motion_adapters.formats.motion_module import MotionModuleWeights
from motion_adapters.hub import resolve_source
from motion_adapters.registry import base_config_for
from motion_adapters.swap import materialize
from motion_adapters.training.config import ConfigError, TrainConfig

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


def read_complete_base(cfg: TrainConfig, task: str) -> BaseWeights:
    """``model.base`` read in full; a task that builds every model from it needs UNet, VAE and text encoder."""
    base_src, base_config = resolve_base(cfg)
    base = read_base(base_src, configs=configs_from_folder(base_config) if base_config else None,
                     tokenizer_dir=tokenizer_dir_of(base_config))
    if base.vae is None or base.text_encoder is None:
        raise ConfigError(f"model.base: task {task} needs a complete checkpoint (UNet, VAE, text encoder), "
                          f"found {cfg.model.base} without a {'VAE' if base.vae is None else 'text encoder'}")
    return base


def unet_2d(base: BaseWeights, source, device) -> UNet2DConditionModel:
    """The base's 2-D UNet in fp32 on ``device`` (built on the meta device, the loaded tensors assigned)."""
    cfg = {k: v for k, v in base.configs["unet"].items() if not k.startswith("_")}
    return materialize(lambda: UNet2DConditionModel.from_config(cfg), base.unet, source, "UNet weights",
                       torch.float32, device)


def trained_groups(task: str) -> tuple[str, ...]:
    return {"t2i": (SPATIAL,), "motion": (TEMPORAL,), "motion_lora": (TEMPORAL,), "spatial_lora": (SPATIAL,),
            "spatial_full": (SPATIAL,), "joint": (SPATIAL, TEMPORAL),
            "motiondirector": (SPATIAL, TEMPORAL)}[task]


def uses_lora(task: str) -> bool:
    return task in ("motion_lora", "spatial_lora", "motiondirector")
