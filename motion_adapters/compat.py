"""Every reach into private internals of diffusers, accelerate and transformers, in one place.

Each entry says what the public API lacks and the version it was written against (diffusers 0.42.1,
accelerate 1.16, transformers 5.25). ``tests/test_compat.py`` checks each one against the installed versions
and fails naming them when an upgrade changes what we rely on. Imports nothing from the project.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import accelerate
import diffusers
import torch
import transformers
from accelerate.state import AcceleratorState, GradientState
from diffusers import AnimateDiffPipeline
from diffusers.loaders import lora_conversion_utils, single_file_utils
from diffusers.models.attention import BasicTransformerBlock, FreeNoiseTransformerBlock
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from diffusers.utils import state_dict_utils

WRITTEN_AGAINST = {"diffusers": "0.42.1", "accelerate": "1.16.0", "transformers": "5.25.0"}


def installed_versions() -> str:
    """``diffusers 0.42.1, accelerate 1.16.0, transformers 5.25.0``: for messages when an internal moved."""
    return ", ".join(f"{m.__name__} {m.__version__}" for m in (diffusers, accelerate, transformers))


# ------------------------------------------------------------------------------------ diffusers: FreeNoise
# diffusers' public enable_free_noise() rebuilds every motion transformer block and copies its weights (which
# drops PEFT LoRA wrappers and breaks in-place swaps), and disable_free_noise() crashes for motion modules
# without a mid block. So we switch the blocks' class in place and set the pipeline's FreeNoise state
# ourselves. Written against diffusers 0.42.1 (pipelines/free_noise_utils.py, models/attention.py).

FREE_NOISE_BLOCK_CLASSES = (BasicTransformerBlock, FreeNoiseTransformerBlock)
# The pipeline attributes enable_free_noise() sets and the FreeNoise code paths read, in our order.
FREE_NOISE_PIPELINE_ATTRS = (
    "_free_noise_context_length",
    "_free_noise_context_stride",
    "_free_noise_weighting_scheme",
    "_free_noise_noise_type",
    "_free_noise_prompt_interpolation_callback",
)
FREE_NOISE_WEIGHTING = "pyramid"
FREE_NOISE_NOISE_TYPE = "shuffle_context"


def set_free_noise_block(block: torch.nn.Module, length: int | None, stride: int) -> None:
    """Make one motion transformer block a FreeNoise block (``length`` frames, windows ``stride`` apart) or a
    plain one (``length`` None or 0). The two classes share every submodule and attribute, so the very same
    parameters (and any PEFT wrappers around them) stay in place."""
    if length:
        block.__class__ = FreeNoiseTransformerBlock
        block.set_free_noise_properties(length, stride, FREE_NOISE_WEIGHTING)
    else:
        block.__class__ = BasicTransformerBlock


def set_free_noise_state(pipe: AnimateDiffPipeline, length: int | None, stride: int) -> None:
    """The pipeline side of FreeNoise, as ``enable_free_noise`` sets it (``length`` None: off)."""
    values = (length, stride, FREE_NOISE_WEIGHTING, FREE_NOISE_NOISE_TYPE, pipe._lerp)
    for name, value in zip(FREE_NOISE_PIPELINE_ATTRS, values, strict=True):
        setattr(pipe, name, value)


def check_free_noise_inputs(pipe: AnimateDiffPipeline, prompt: dict, negative_prompt: dict,
                            num_frames: int) -> None:
    """diffusers' own checks of a prompt-travel map (keys from 0, below ``num_frames``): private only."""
    pipe._check_inputs_free_noise(prompt, negative_prompt, None, None, num_frames)


# Our pipeline overrides the private AnimateDiffPipeline._encode_prompt_free_noise (no public hook exists for
# how prompt travel encodes its keyframes); the override must take the parameters diffusers calls it with.
ENCODE_PROMPT_FREE_NOISE_PARAMS = (
    "self", "prompt", "num_frames", "device", "num_videos_per_prompt", "do_classifier_free_guidance",
    "negative_prompt", "prompt_embeds", "negative_prompt_embeds", "lora_scale", "clip_skip",
)


def execution_device(pipe: AnimateDiffPipeline) -> torch.device:
    """The device the pipeline runs its models on (with CPU offload: the accelerator, not where the weights
    rest). Only the private ``_execution_device`` property knows it."""
    return pipe._execution_device


# -------------------------------------------------------------------------------------- diffusers: models
# The class of one motion module (the temporal transformer inside every motion block): diffusers exports it
# from no public module, yet it is how training tells temporal layers from spatial ones. diffusers 0.42.1.
MOTION_MODULE_CLASS = AnimateDiffTransformer3D


def init_config_keys(model_cls: type) -> set[str]:
    """The config keys ``model_cls.from_config`` takes: its ``__init__`` parameters. diffusers filters configs
    with the private ``ModelMixin._get_signature_keys``; we read the same signature with ``inspect``."""
    return {name for name in inspect.signature(model_cls.__init__).parameters if name != "self"}


# ---------------------------------------------------------------------------------- diffusers: converters
# diffusers converts single-file LDM checkpoints and kohya LoRAs only inside its loaders; the converters live
# in internal modules (diffusers.loaders.single_file_utils and lora_conversion_utils,
# diffusers.utils.state_dict_utils) and the kohya ones are private. We call them on state dicts we have
# already read and checked. Written against diffusers 0.42.1.


def convert_ldm_unet(state_dict: Mapping, unet_config: Mapping) -> dict:
    """LDM ``model.diffusion_model.*`` UNet keys → diffusers ``UNet2DConditionModel`` keys."""
    return single_file_utils.convert_ldm_unet_checkpoint(state_dict, unet_config)


def convert_ldm_vae(state_dict: Mapping, vae_config: Mapping) -> dict:
    """LDM ``first_stage_model.*`` VAE keys → diffusers ``AutoencoderKL`` keys."""
    return single_file_utils.convert_ldm_vae_checkpoint(state_dict, vae_config)


def convert_ldm_controlnet(state_dict: Mapping, config: Mapping) -> dict:
    """lllyasviel ControlNet keys (``input_blocks`` / ``input_hint_block`` / ``zero_convs`` /
    ``middle_block_out``, prefix stripped) → diffusers ``ControlNetModel`` keys; ``config`` needs only
    ``layers_per_block``. Missing tensors come back as ``None`` values."""
    return single_file_utils.convert_controlnet_checkpoint(state_dict, config)


def convert_ldm_clip(state_dict: Mapping) -> dict:
    """LDM ``cond_stage_model.transformer.*`` keys → transformers ``CLIPTextModel`` keys."""
    return single_file_utils.convert_ldm_clip_checkpoint(state_dict)


def kohya_lora_to_diffusers(state_dict: Mapping) -> tuple[dict, dict]:
    """kohya ``lora_unet_*`` / ``lora_te_*`` keys → diffusers processor-style keys, and the alphas found."""
    return lora_conversion_utils._convert_non_diffusers_lora_to_diffusers(state_dict)


def ldm_lora_blocks_to_diffusers(state_dict: Mapping, unet_config: object) -> dict:
    """kohya keys in LDM block naming (``input_blocks`` / ``middle_block`` / ``output_blocks``) → diffusers
    block naming; ``unet_config`` needs only ``layers_per_block``."""
    return lora_conversion_utils._maybe_map_sgm_blocks_to_diffusers(state_dict, unet_config)


def unet_lora_to_peft(state_dict: Mapping) -> dict:
    """diffusers processor-style UNet LoRA keys → PEFT keys."""
    return state_dict_utils.convert_unet_state_dict_to_peft(state_dict)


def text_encoder_lora_to_peft(state_dict: Mapping) -> dict:
    """Old diffusers text-encoder LoRA keys (``to_q_lora.down``) → PEFT keys, through diffusers' tables."""
    kinds = state_dict_utils.StateDictType
    sd = state_dict_utils.convert_state_dict_to_diffusers(state_dict, original_type=kinds.DIFFUSERS_OLD)
    return state_dict_utils.convert_state_dict_to_peft(sd, original_type=kinds.DIFFUSERS)


# --------------------------------------------------------------------------------------------- accelerate
def reset_accelerate_state() -> None:
    """Forget the process-wide Accelerator state so the next ``Accelerator`` may use other settings (several
    in-process runs with different mixed precision). accelerate has no public reset; its private
    ``_reset_state`` does it. Written against accelerate 1.16."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
