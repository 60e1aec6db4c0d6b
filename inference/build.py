"""The first build of a generator's pipeline: read base + motion module, assemble the models on the meta
device (loaded tensors are assigned, nothing is randomly initialised), pick device and dtype, apply memory
options."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from motion_adapters import registry
from motion_adapters.base import BaseWeights, configs_from_folder, load_tokenizer, tokenizer_dir_of
from motion_adapters.errors import AdapterFormatError, MotionAdapterError
from motion_adapters.formats.motion_module import MotionModuleWeights
from motion_adapters.hub import resolve_source
from motion_adapters.inference.pipeline import MotionAdaptersPipeline
from motion_adapters.loading import KIND_MOTION, KIND_SD, load_adapter
from motion_adapters.registry import base_config_for, is_registered
from motion_adapters.schedulers import make_scheduler
from motion_adapters.swap import (
    adapter_view,
    build_motion_unet,
    build_text_encoder,
    build_vae,
    check_motion_fits_base,
    identity_motion_module,
)

log = logging.getLogger(__name__)
DEFAULT_MOTION_ARG = "default"  # VideoGenerator(motion=...) default: the registered default motion module
NO_MOTION = "none"  # motion=None or "none": the all-zero identity motion module
_DTYPES = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16, "bf16": torch.bfloat16,
           "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """fp16 on CUDA and fp32 on CPU unless told otherwise."""
    if dtype is None:
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise MotionAdapterError(f"dtype: expected one of {sorted(_DTYPES)}, found {dtype!r}")
    return _DTYPES[dtype]


@dataclass
class FirstLoad:
    """What the first build reads: the base and motion weights, and how to name them in recipes."""

    base: BaseWeights
    motion: MotionModuleWeights
    base_name: str | Path  # as given (a registered name stays a name)
    base_path: str | Path  # resolved file or folder
    motion_source: str  # registered name, resolved path or "none"

    @property
    def base_source(self) -> str:
        return str(self.base_name) if is_registered(str(self.base_name)) else str(self.base_path)


def read_first_load(base: str | Path | None, motion: str | Path | None,
                    base_config: str | Path | None) -> FirstLoad:
    """Resolve and read base + motion module (defaults from the registry) and check that they fit together."""
    base_name = registry.default("base") if base is None else base
    if base_name is None:
        raise MotionAdapterError("base: expected a model path or registered name, found none (no embedded "
                                 "default base is registered)")
    if motion == DEFAULT_MOTION_ARG:
        motion = registry.default_motion_for(base_name)
        if motion is None:
            raise MotionAdapterError(
                "motion: expected a motion module (path or registered name), or None for no motion module; "
                f"found none (the default motion module {registry.default('motion')} only fits the bases it "
                "was trained with)")
    if base_config is None:
        base_config = base_config_for(base_name)
    base_path = resolve_source(base_name)
    base_cfgs = configs_from_folder(base_config) if base_config is not None else None
    base_w = load_adapter(base_path, expect=KIND_SD, base_configs=base_cfgs)
    if base_w.tokenizer_dir is None:
        base_w.tokenizer_dir = tokenizer_dir_of(base_config)
    if motion is None or str(motion) == NO_MOTION:
        motion_w, motion_source = identity_motion_module(base_w.configs["unet"]), NO_MOTION
    else:
        motion_path = resolve_source(motion)
        motion_w = load_adapter(motion_path, expect=KIND_MOTION)
        check_motion_fits_base(motion_w, base_w.configs["unet"], motion_path)
        motion_source = str(motion) if is_registered(str(motion)) else str(motion_path)
    if base_w.vae is None or base_w.text_encoder is None:
        missing = "VAE" if base_w.vae is None else "text encoder"
        raise AdapterFormatError(
            base_path, "a complete checkpoint for the first load (UNet, VAE, text encoder)", f"no {missing}")
    return FirstLoad(base_w, motion_w, base_name, base_path, motion_source)


def assemble_pipeline(loaded: FirstLoad, dtype: torch.dtype, device: str) -> MotionAdaptersPipeline:
    """UNet (base spatial layers + motion module), VAE and text encoder built from the loaded tensors."""
    base_w, source = loaded.base, loaded.base_path
    unet = build_motion_unet(base_w.configs["unet"], base_w.unet, loaded.motion, source, dtype, device)
    vae = build_vae(base_w.configs["vae"], base_w.vae, source, dtype, device)
    text_encoder = build_text_encoder(base_w.configs["text_encoder"], base_w.text_encoder, source, dtype,
                                      device)
    pipe = MotionAdaptersPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=load_tokenizer(base_w),
        unet=unet,
        motion_adapter=adapter_view(unet, loaded.motion.config),
        scheduler=make_scheduler("ddim"),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def apply_memory_options(pipe: MotionAdaptersPipeline, device: str, low_vram: bool) -> None:
    """SDPA is diffusers' default; xformers when installed on CUDA; offload and VAE slicing for low VRAM."""
    if str(device).startswith("cuda"):
        try:
            import xformers  # noqa: F401

            pipe.enable_xformers_memory_efficient_attention()
        except Exception:  # not installed or not supported by this build: keep SDPA
            pass
    if low_vram:
        # on the VAE itself: diffusers 0.42 pipelines no longer forward enable_vae_slicing/tiling
        pipe.vae.enable_slicing()
        pipe.vae.enable_tiling()
        if not str(device).startswith("cuda"):
            log.info("low_vram: model CPU offload needs CUDA; on %s only VAE slicing/tiling apply", device)
        enable_offload(pipe, device, low_vram)


def enable_offload(pipe: MotionAdaptersPipeline, device: str, low_vram: bool) -> None:
    """Model CPU offload for low VRAM on CUDA (again after a component is replaced); nothing otherwise."""
    if low_vram and str(device).startswith("cuda"):
        pipe.enable_model_cpu_offload(device=device)
