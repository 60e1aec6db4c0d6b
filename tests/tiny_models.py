"""Test fixture: random-weight SD1.5-architecture components built from configs, for tests and benchmarks
(no download).

``tiny_*`` builders make models small enough for 2-core CI yet keep SD1.5's block layout (4 levels,
2 layers per block, cross-attention in the first three), so every real key pattern is exercised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    MotionAdapter,
    StableDiffusionPipeline,
    T2IAdapter,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from motion_adapters.schedulers import make_scheduler
from motion_adapters.tokenizer import clip_tokenizer

TINY_UNET = dict(
    block_out_channels=(32, 32, 64, 64),
    layers_per_block=2,
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=4,
    norm_num_groups=8,
)
TINY_VAE = dict(
    block_out_channels=(16, 16, 32, 32),
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=8,
    sample_size=64,
)
TINY_TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=4,
    num_hidden_layers=2,
    vocab_size=49408,
    max_position_embeddings=77,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
    projection_dim=32,
)
# Motion-adapter defaults of the official SD1.5 releases (8 heads, 32 groups), so original-layout files
# written from it load without a config, exactly like the real ones.
TINY_MOTION = dict(
    block_out_channels=(32, 32, 64, 64),
    motion_layers_per_block=2,
    motion_norm_num_groups=32,
    motion_num_attention_heads=8,
    motion_max_seq_length=32,
    use_motion_mid_block=False,
)
# ControlNet hint embedding: the four levels of SD1.5's (16, 32, 96, 256), narrower
TINY_HINT_CHANNELS = (8, 8, 16, 16)
# An SDXL-layout ControlNet: text_time embeddings, 2048-wide cross-attention, two transformer layers deep
TINY_SDXL_CONTROLNET = dict(
    block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    layers_per_block=2,
    cross_attention_dim=2048,
    transformer_layers_per_block=(1, 2),
    attention_head_dim=(2, 4),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=32 + 6 * 8,
    norm_num_groups=8,
    conditioning_embedding_out_channels=TINY_HINT_CHANNELS,
)


@dataclass
class SDComponents:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel


def tiny_sd_components(seed: int = 0) -> SDComponents:
    """A tiny SD1.5-layout UNet, VAE (8× downsampling) and CLIP text encoder with random weights."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**TINY_VAE)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT))
    return SDComponents(unet.eval(), vae.eval(), text_encoder.eval())


def tiny_motion_adapter(seed: int = 0, **overrides) -> MotionAdapter:
    """A tiny MotionAdapter matching :func:`tiny_sd_components`, with random (non-zero) ``proj_out``."""
    torch.manual_seed(seed)
    return MotionAdapter(**{**TINY_MOTION, **overrides}).eval()


def save_sd_folder(components: SDComponents, out_dir: str | Path) -> Path:
    """Save components as a diffusers StableDiffusion pipeline folder (the layout model hubs use)."""
    pipe = StableDiffusionPipeline(
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=clip_tokenizer(),
        unet=components.unet,
        scheduler=make_scheduler("ddim"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out_dir))
    return Path(out_dir)


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """Overwrite every parameter with seeded normal noise in place (fast stand-in for real weights)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * std)
    return module


def _fill_zero_convs_(cn: ControlNetModel, seed: int, std: float = 0.05) -> ControlNetModel:
    """Give the zero-initialised convolutions (and the hint embedding's last conv) random weights, so the
    ControlNet changes what the UNet computes."""
    g = torch.Generator().manual_seed(seed)
    zero = [cn.controlnet_cond_embedding.conv_out, cn.controlnet_mid_block, *cn.controlnet_down_blocks]
    with torch.no_grad():
        for p in (p for m in zero for p in m.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return cn


def tiny_controlnet(unet: UNet2DConditionModel, seed: int = 0, **overrides) -> ControlNetModel:
    """A ControlNet copied from ``unet``'s encoder (``ControlNetModel.from_unet``), zero convs made non-zero."""
    torch.manual_seed(seed)
    kw = {"conditioning_embedding_out_channels": TINY_HINT_CHANNELS, **overrides}
    return _fill_zero_convs_(ControlNetModel.from_unet(unet, **kw), seed).eval()


def tiny_sdxl_controlnet(seed: int = 0) -> ControlNetModel:
    """A tiny SDXL-layout ControlNet (2048-wide cross-attention, text_time embeddings)."""
    torch.manual_seed(seed)
    return _fill_zero_convs_(ControlNetModel(**TINY_SDXL_CONTROLNET), seed).eval()


def tiny_t2i_adapter(seed: int = 0) -> T2IAdapter:
    """A tiny diffusers T2I-Adapter (full adapter, SD1.5-like channel widths)."""
    torch.manual_seed(seed)
    return T2IAdapter(in_channels=3, channels=[32, 32, 64, 64], num_res_blocks=1, downscale_factor=8,
                      adapter_type="full_adapter").eval()


def t2i_adapter_to_original(state_dict: dict[str, torch.Tensor], num_res_blocks: int = 1) -> dict[str, torch.Tensor]:
    """diffusers T2I-Adapter keys → TencentARC's (``conv_in``, ``body.N.block1`` …)."""
    out = {}
    for k, v in state_dict.items():
        k = k.removeprefix("adapter.")
        parts = k.split(".")
        if parts[0] == "body" and parts[2] == "resnets":
            k = ".".join(["body", str(int(parts[1]) * num_res_blocks + int(parts[3])), *parts[4:]])
        out[k] = v
    return out
