"""In-place swaps of a built pipeline's base and motion module. Every incoming file is read and checked in
full before the first tensor is copied, so a failed swap leaves the pipeline exactly as it was."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from diffusers import UNetMotionModel

from motion_adapters.base import load_tokenizer, read_base
from motion_adapters.formats.motion_module import MotionModuleWeights
from motion_adapters.hub import resolve_source
from motion_adapters.inference.build import NO_MOTION
from motion_adapters.inference.pipeline import MotionAdaptersPipeline
from motion_adapters.loading import KIND_MOTION, load_adapter
from motion_adapters.registry import is_registered
from motion_adapters.swap import (
    adapter_view,
    apply_copy,
    build_motion_unet,
    check_motion_fits_base,
    identity_motion_module,
    live_tensors,
    motion_tensors,
    plan_copy,
    spatial_tensors,
)


def source_name(name: str | Path, resolved: str | Path) -> str:
    """How a model is named in recipes: its registered name, else its resolved path."""
    return str(name) if is_registered(str(name)) else str(resolved)


def swap_base(pipe: MotionAdaptersPipeline, src: str | Path, configs: dict[str, dict]) -> str:
    """Copy a base (UNet spatial layers, VAE and text encoder when the file has them, tokenizer) into the live
    models, which must have the architecture ``configs`` describe. Returns the base's recipe name."""
    name, src = src, resolve_source(src)
    base_w = read_base(src, configs=configs)
    plans = plan_copy(spatial_tensors(pipe.unet), base_w.unet, src, "SD UNet weights")
    if base_w.vae is not None:
        plans += plan_copy(live_tensors(pipe.vae), base_w.vae, src, "VAE weights")
    if base_w.text_encoder is not None:
        te = {k: v for k, v in base_w.text_encoder.items() if not k.endswith("position_ids")}
        plans += plan_copy(live_tensors(pipe.text_encoder), te, src, "text-encoder weights")
    tokenizer = load_tokenizer(base_w) if base_w.tokenizer_dir else None
    # validated: from here on nothing can fail for a reason the file controls
    apply_copy(plans)
    if tokenizer is not None:
        pipe.tokenizer = tokenizer
    return source_name(name, src)


def read_motion(src: str | Path | None, unet_config: Mapping) -> tuple[MotionModuleWeights, str | Path, str]:
    """A motion module that fits the base ``unet_config`` (``None`` / ``"none"``: the all-zero identity
    module), the path it came from and its recipe name."""
    if src is None or str(src) == NO_MOTION:
        mm, path, name = identity_motion_module(unet_config), NO_MOTION, NO_MOTION
    else:
        path = resolve_source(src)
        mm = load_adapter(path, expect=KIND_MOTION)
        name = source_name(src, path)
    check_motion_fits_base(mm, unet_config, path)
    return mm, path, name


def copy_motion(pipe: MotionAdaptersPipeline, mm: MotionModuleWeights, src) -> None:
    """Copy a motion module of the live architecture into the live UNet."""
    apply_copy(plan_copy(motion_tensors(pipe.unet), mm.state_dict, src, "motion-module weights"))


def rebuild_unet(pipe: MotionAdaptersPipeline, mm: MotionModuleWeights, src, unet_config: Mapping,
                 dtype: torch.dtype, device: str) -> UNetMotionModel:
    """Re-assemble the UNet around the live spatial tensors with a motion module of another architecture (no
    random init, no re-read of the base) and put it in the pipeline. LoRAs and hooks are the caller's."""
    spatial = spatial_tensors(pipe.unet)
    unet = build_motion_unet(unet_config, spatial, mm, src, dtype, device, copy_spatial=False)
    pipe.register_modules(unet=unet, motion_adapter=adapter_view(unet, mm.config))
    return unet
