"""What a state dict is, told by its keys: the kind names and the descriptions used in error messages."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .formats.controlnet import is_diffusers_controlnet, is_ldm_controlnet, is_t2i_adapter
from .formats.ip_adapter import is_ip_adapter
from .formats.lora import detect_lora_format
from .formats.sparsectrl import is_sparsectrl

KIND_MOTION = "motion_module"
KIND_MOTION_LORA = "motion_lora"
KIND_SPATIAL_LORA = "spatial_lora"
KIND_SD = "sd_checkpoint"
KIND_CONTROLNET = "controlnet"
KIND_SPARSECTRL = "sparsectrl"
KIND_IP_ADAPTER = "ip_adapter"
T2I_ADAPTER = "unsupported: a T2I-Adapter, not a ControlNet"


def describe_keys(tensors: Mapping[str, torch.Tensor], n: int = 3) -> str:
    """A short description of a state dict for error messages: count, sample keys and a guess."""
    if not tensors:
        return "no tensors at all"
    keys = list(tensors)
    sample = ", ".join(repr(k) for k in keys[:n])
    guess = sniff_keys(tensors)
    return f"{len(keys)} tensors ({guess}), e.g. {sample}"


def sniff_keys(tensors: Mapping[str, torch.Tensor]) -> str:
    """Classify a state dict by its keys: one of the KIND_* names or an 'unsupported: …' description."""
    keys = list(tensors)
    if not keys:
        return "empty"
    if is_ip_adapter(keys):  # before LoRAs: FaceID files hold LoRA keys too
        return KIND_IP_ADAPTER
    if detect_lora_format(keys) is not None:
        lw_kind = "motion_lora" if any("motion_modules" in k or "temporal" in k for k in keys) else "spatial_lora"
        return lw_kind
    if is_sparsectrl(keys):  # before motion modules: a SparseCtrl encoder holds some
        return KIND_SPARSECTRL
    if is_ldm_controlnet(keys) or is_diffusers_controlnet(keys):  # before KIND_SD: v1.0 files hold SD too
        return KIND_CONTROLNET
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return KIND_SD
    if is_t2i_adapter(keys):
        return T2I_ADAPTER
    if any("temporal_attentions." in k or k.endswith("pos_encoder.positional_encoding") for k in keys):
        return "unsupported: HotshotXL motion module"
    if any("motion_modules." in k for k in keys):
        return KIND_MOTION
    if any(k.startswith(("conv_in.", "down_blocks.", "module.conv_in.")) for k in keys):
        return "unsupported: an SD UNet without motion modules (image-finetune checkpoint?)"
    if any(k.startswith(("encoder.down.", "decoder.up.", "encoder.down_blocks.")) for k in keys):
        return "unsupported: a VAE"
    return "unknown"


