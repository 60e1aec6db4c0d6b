"""Test fixture: random-weight SD1.5-architecture components built from configs, for tests and benchmarks
(no download).

``tiny_*`` builders make models small enough for 2-core CI yet keep SD1.5's block layout (4 levels,
2 layers per block, cross-attention in the first three), so every real key pattern is exercised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, MotionAdapter, StableDiffusionPipeline, UNet2DConditionModel
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
