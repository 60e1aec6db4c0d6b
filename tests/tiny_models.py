"""Test fixture: random-weight SD1.5-architecture components built from configs, for tests and benchmarks
(no download).

``tiny_*`` builders make models small enough for 2-core CI yet keep SD1.5's block layout (4 levels,
2 layers per block, cross-attention in the first three), so every real key pattern is exercised.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    MotionAdapter,
    SparseControlNetModel,
    StableDiffusionPipeline,
    T2IAdapter,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

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
# A CLIP image encoder for IP-Adapters (h94's are ViT-H/14 at 224 px: hidden 1280, projection 1024)
TINY_IMAGE_ENCODER = dict(image_size=32, patch_size=8, hidden_size=32, projection_dim=32, intermediate_size=37,
                          num_hidden_layers=2, num_attention_heads=4)
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


def tiny_sparsectrl(unet: UNet2DConditionModel, kind: str = "rgb", seed: int = 0) -> SparseControlNetModel:
    """A SparseCtrl encoder copied from ``unet``'s encoder (``SparseControlNetModel.from_unet``; motion heads 8
    and 32 frames, like :data:`TINY_MOTION`). ``rgb``: the one-convolution embedding of 4 latent channels + the
    mask; ``scribble``: the hint-embedding stack on 3 channels + the mask. Zero convolutions made non-zero."""
    torch.manual_seed(seed)
    unet = copy.deepcopy(unet)
    unet.register_to_config(down_block_types=list(unet.config.down_block_types))  # from_unet edits it in place
    model = SparseControlNetModel.from_unet(unet, conditioning_channels=4)
    if kind == "scribble":
        cfg = {**{k: v for k, v in model.config.items() if not k.startswith("_")}, "conditioning_channels": 3, "use_simplified_condition_embedding": False,
               "conditioning_embedding_out_channels": TINY_HINT_CHANNELS}
        scribble = SparseControlNetModel.from_config(cfg)
        kept = {k: v for k, v in model.state_dict().items() if not k.startswith("controlnet_cond_embedding")}
        scribble.load_state_dict(kept, strict=False)
        model = scribble
    g = torch.Generator().manual_seed(seed)
    emb = model.controlnet_cond_embedding
    zero = [emb if kind == "rgb" else emb.conv_out, model.controlnet_mid_block, *model.controlnet_down_blocks]
    with torch.no_grad():
        for p in (p for m in zero for p in m.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def tiny_image_encoder(seed: int = 0, **overrides) -> CLIPVisionModelWithProjection:
    """A tiny CLIP image encoder (32 px, 8 px patches: 17 tokens; hidden and projection 32 wide)."""
    torch.manual_seed(seed)
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**{**TINY_IMAGE_ENCODER, **overrides})).eval()


def tiny_ip_adapter(unet: UNet2DConditionModel, variant: str = "plain", embed_dim: int = 32, seed: int = 0,
                    cross_attention_dim: int | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """An IP-Adapter for ``unet`` in h94's layout (``{"image_proj": …, "ip_adapter": …}``), written key by
    key: ``ip_adapter`` ids 1, 3, 5, … one ``to_k_ip``/``to_v_ip`` pair per cross attention of the UNet, in
    the order of its attention processors. ``embed_dim``: the encoder's projection_dim (plain) or hidden_size
    (plus, plus-face, full-face)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.02

    cross = cross_attention_dim or unet.config.cross_attention_dim
    layers = [unet.get_submodule(name.removesuffix(".processor")) for name in unet.attn_processors
              if name.endswith("attn2.processor")]
    ip = {}
    for i, attn in enumerate(layers):
        ip[f"{2 * i + 1}.to_k_ip.weight"] = r(attn.to_k.out_features, cross)
        ip[f"{2 * i + 1}.to_v_ip.weight"] = r(attn.to_v.out_features, cross)
    if variant == "plain":  # ImageProjModel: 4 tokens from the projected image embeds
        proj = {"proj.weight": r(4 * cross, embed_dim), "proj.bias": r(4 * cross),
                "norm.weight": 1 + r(cross), "norm.bias": r(cross)}
    elif variant == "full-face":  # MLPProjModel over the hidden states: Linear, GELU, Linear, LayerNorm
        proj = {"proj.0.weight": r(embed_dim, embed_dim), "proj.0.bias": r(embed_dim),
                "proj.2.weight": r(cross, embed_dim), "proj.2.bias": r(cross),
                "proj.3.weight": 1 + r(cross), "proj.3.bias": r(cross)}
    else:  # plus / plus-face: the Resampler (16 queries, 4 layers, one 64-wide head, feed-forward ×4)
        dim, inner = cross, 64
        proj = {"latents": r(1, 16, dim), "proj_in.weight": r(dim, embed_dim), "proj_in.bias": r(dim),
                "proj_out.weight": r(cross, dim), "proj_out.bias": r(cross),
                "norm_out.weight": 1 + r(cross), "norm_out.bias": r(cross)}
        for n in range(4):
            proj.update({
                f"layers.{n}.0.norm1.weight": 1 + r(dim), f"layers.{n}.0.norm1.bias": r(dim),
                f"layers.{n}.0.norm2.weight": 1 + r(dim), f"layers.{n}.0.norm2.bias": r(dim),
                f"layers.{n}.0.to_q.weight": r(inner, dim), f"layers.{n}.0.to_kv.weight": r(2 * inner, dim),
                f"layers.{n}.0.to_out.weight": r(dim, inner),
                f"layers.{n}.1.0.weight": 1 + r(dim), f"layers.{n}.1.0.bias": r(dim),
                f"layers.{n}.1.1.weight": r(4 * dim, dim), f"layers.{n}.1.3.weight": r(dim, 4 * dim),
            })
    return {"image_proj": proj, "ip_adapter": ip}
