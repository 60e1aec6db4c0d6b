"""Task ``t2i``: text-to-image training of a UNet2DConditionModel (+ optionally its CLIP text encoder).

From scratch (``model.unet_config`` set): a new UNet and text encoder on top of a trained VAE
(``model.vae``, e.g. the output of task ``vae``) and a CLIP tokenizer folder (``model.tokenizer``). Otherwise a DreamBooth-style finetune of every UNet weight of ``model.base``
(a personalised "community" checkpoint). Either way the result is a diffusers SD folder ``base/`` (and with
``run.export_ldm`` a single-file LDM ``model.safetensors``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from motion_adapters.base import (
    BaseWeights,
    is_diffusers_folder,
    load_tokenizer,
    tokenizer_dir_of,
)
from motion_adapters.swap import build_text_encoder, build_vae
from motion_adapters.training.config import ConfigError, TrainConfig
from motion_adapters.training.train_models import SPATIAL, TrainModels, read_complete_base, unet_2d


def load_tokenizer_from(spec: str) -> CLIPTokenizer:
    """A CLIP tokenizer folder (or a diffusers SD folder's ``tokenizer/``)."""
    p = Path(spec)
    tok_dir = tokenizer_dir_of(p) or p
    if not tok_dir.is_dir():
        raise ConfigError(f"model.tokenizer: expected a tokenizer folder, found {spec!r}")
    return CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)


def load_vae_from(src: str, device) -> AutoencoderKL:
    """An ``AutoencoderKL`` folder (task vae output) or the ``vae/`` of a diffusers SD folder."""
    p = Path(src)
    if is_diffusers_folder(p):
        p = p / "vae"
    if not (p / "config.json").exists():
        raise ConfigError(f"model.vae: expected an AutoencoderKL folder (config.json + weights), found {src!r}")
    vae = AutoencoderKL.from_pretrained(str(p), torch_dtype=torch.float32)
    return vae.to(device).eval().requires_grad_(False)


def text_config_for(tokenizer, config: dict) -> CLIPTextConfig:
    """A CLIP text config sized to the tokenizer (vocabulary, special tokens, max length)."""
    return CLIPTextConfig(**{**config, "vocab_size": len(tokenizer),
                             "max_position_embeddings": int(tokenizer.model_max_length),
                             "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                             "pad_token_id": tokenizer.pad_token_id})


def build_t2i_models(cfg: TrainConfig, device):
    """``TrainModels`` with a 2-D UNet (every weight trainable) and no motion module."""
    m = cfg.model
    if m.unet_config:
        tokenizer = load_tokenizer_from(m.tokenizer)
        vae = load_vae_from(m.vae, device)
        torch.manual_seed(cfg.run.seed)
        unet = UNet2DConditionModel(**m.unet_config)
        torch.manual_seed(cfg.run.seed + 1)
        te = CLIPTextModel(text_config_for(tokenizer, m.text_encoder_config))
        unet, te = unet.to(device), te.to(device)
        configs = {"unet": dict(unet.config), "vae": dict(vae.config), "text_encoder": te.config.to_dict()}
        base = BaseWeights("scratch", "scratch", "sd15", {}, None, None, configs)
    else:
        base = read_complete_base(cfg, "t2i")
        unet = unet_2d(base, m.base, device)
        vae = build_vae(base.configs["vae"], base.vae, m.base, torch.float32, device)
        te = build_text_encoder(base.configs["text_encoder"], base.text_encoder, m.base, torch.float32, device)
        tokenizer = load_tokenizer(base)
    vae.requires_grad_(False).eval()
    te.requires_grad_(m.train_text_encoder)
    te.train(m.train_text_encoder)
    unet.requires_grad_(True)
    unet.train()
    tm = TrainModels(unet, vae, te, tokenizer, base, None)
    tm.groups[SPATIAL] = [n for n, _ in unet.named_parameters()]
    return tm
