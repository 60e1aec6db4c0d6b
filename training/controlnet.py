"""Task ``controlnet``: a ``ControlNetModel`` copied from the base UNet learns to steer the frozen base from
control maps (diffusers' ``train_controlnet.py`` on the trainer's loop).

Every frame is an independent image (the frames of a clip too): its control map is computed from the frame
itself by the preprocessor ``controlnet.preprocessor`` (:mod:`motion_adapters.clips.controls`), its latent
noised at its own timestep, and the loss is the frozen UNet's noise (or v) prediction MSE with the
ControlNet's residuals added to its skip connections and mid block. The base UNet, VAE and text encoder never
change; the result is one ``controlnet.safetensors`` in our format (diffusers ``ControlNetModel`` keys).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
from PIL import Image

from motion_adapters.base import BaseWeights, load_tokenizer
from motion_adapters.files import atomic_file
from motion_adapters.formats.controlnet import ControlNetWeights
from motion_adapters.formats.motion_module import MotionModuleWeights
from motion_adapters.formats.ours import save_controlnet
from motion_adapters.schedulers import make_scheduler
from motion_adapters.swap import build_text_encoder, build_vae
from motion_adapters.training.accelerator import frozen_dtype
from motion_adapters.training.config import ConfigError, TrainConfig
from motion_adapters.training.data import VideoDataset
from motion_adapters.training.diffusion import enable_memory_savers, encode_items, encode_prompts
from motion_adapters.training.losses import mse, sample_noise, target_for, train_scheduler
from motion_adapters.training.model import cast_frozen, to_fp16_file
from motion_adapters.training.task import LossPass
from motion_adapters.training.train_models import TrainModels, read_complete_base, unet_2d

log = logging.getLogger(__name__)
#: the conditioning embedding of SD 1.5 ControlNets (8× downsampling, as the SD VAE)
SD_EMBEDDING_CHANNELS = (16, 32, 96, 256)
OUTPUT = "controlnet.safetensors"


def embedding_channels(cfg: TrainConfig, vae_config: dict) -> tuple[int, ...]:
    """Channels of the map encoder: it downsamples the maps to the latent size, so one entry per VAE level."""
    return map_embedding_channels(tuple(cfg.controlnet.embedding_channels), vae_config, "controlnet.embedding_channels")


def map_embedding_channels(chosen: tuple[int, ...], vae_config: dict, key: str) -> tuple[int, ...]:
    """``chosen`` (the config value under ``key``) checked against the VAE's levels, or SD's cut to them."""
    levels = len(vae_config["block_out_channels"])
    if not chosen:
        return (SD_EMBEDDING_CHANNELS + (SD_EMBEDDING_CHANNELS[-1],) * levels)[:levels]
    if len(chosen) != levels:
        raise ConfigError(f"{key}: expected {levels} entries (the VAE downsamples "
                          f"{2 ** (levels - 1)}x), found {len(chosen)} ({list(chosen)})")
    return chosen


def build_controlnet_models(cfg: TrainConfig, device, dtype: torch.dtype | None) -> tuple[TrainModels,
                                                                                           ControlNetModel]:
    """The frozen base (2-D UNet, VAE, text encoder; stored in ``dtype`` under mixed precision) and a trainable
    fp32 ``ControlNetModel.from_unet`` of its UNet (zero convolutions: the base's output at step 0)."""
    base = read_complete_base(cfg, "controlnet")
    channels = embedding_channels(cfg, base.configs["vae"])
    unet = unet_2d(base, cfg.model.base, "cpu")
    torch.manual_seed(cfg.run.seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels)
    tm = frozen_train_models(cfg, base, unet, None, device, dtype)
    return tm, trainable(tm, controlnet, "controlnet", device)


def frozen_train_models(cfg: TrainConfig, base: BaseWeights, unet: torch.nn.Module,
                        motion: MotionModuleWeights | None, device, dtype: torch.dtype | None) -> TrainModels:
    """``unet`` (fp32 on the CPU) frozen and moved to ``device`` with the base's frozen VAE and text encoder,
    all stored in ``dtype`` under mixed precision (fp32 otherwise); no trainable group yet."""
    unet.requires_grad_(False).eval()
    if dtype is not None:
        cast_frozen(unet, dtype)
    vae = build_vae(base.configs["vae"], base.vae, cfg.model.base, dtype or torch.float32, device)
    te = build_text_encoder(base.configs["text_encoder"], base.text_encoder, cfg.model.base, dtype or torch.float32,
                            device)
    vae.requires_grad_(False).eval()
    te.requires_grad_(False).eval()
    return TrainModels(unet.to(device), vae, te, load_tokenizer(base), base, motion)


def trainable(tm: TrainModels, model: torch.nn.Module, group: str, device) -> torch.nn.Module:
    """``model`` on ``device`` in train mode, all its parameters registered as ``tm``'s group ``group``."""
    model = model.to(device).train()
    tm.groups[group] = [n for n, _ in model.named_parameters()]
    return model


def residual_prediction(unet: torch.nn.Module, noisy: torch.Tensor, t: torch.Tensor, emb: torch.Tensor,
                        down: list[torch.Tensor], mid: torch.Tensor) -> torch.Tensor:
    """The frozen ``unet``'s prediction with a control model's residuals added (all cast to its dtype)."""
    dtype = unet.dtype
    return unet(noisy.to(dtype), t, encoder_hidden_states=emb.to(dtype),
                down_block_additional_residuals=[r.to(dtype) for r in down],
                mid_block_additional_residual=mid.to(dtype)).sample


def trained_config_and_state(model: torch.nn.Module) -> tuple[dict, dict[str, torch.Tensor]]:
    """A trained diffusers model's public config and fp32 CPU copies of its weights."""
    config = {k: v for k, v in model.config.items() if not k.startswith("_")}
    return config, {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}


def finish_export(path: Path, cfg: TrainConfig) -> str:
    """The written file ``path``, halved to fp16 in place when ``run.export_dtype`` asks for it."""
    if cfg.run.export_dtype == "fp16":
        to_fp16_file(path)
    return str(path)


def save_validation_image(img: Image.Image, folder: Path, step: int, i: int, tb) -> Path:
    """``img`` saved as ``step-000100-0.png`` in ``folder`` (and logged to TensorBoard when ``tb`` is set)."""
    path = folder / f"step-{step:06d}-{i}.png"
    with atomic_file(path) as tmp:
        img.save(tmp)
    if tb is not None:
        tb.add_image(f"validation/{i}", np.asarray(img), step, dataformats="HWC")
    return path


def frame_seeds(seed: int, n: int) -> list[int]:
    """One noise/timestep seed per frame of an item (frames of a clip are independent images)."""
    return [int(s) for s in np.random.default_rng([seed, 17]).integers(0, 2**62, size=n)]


class ControlNetTask:
    """The trainer's task for ``controlnet`` (see the module docstring)."""

    validates = True

    def __init__(self, cfg: TrainConfig, accelerator):
        self.cfg = cfg
        self.accelerator = accelerator
        self.preprocessor = cfg.controlnet.preprocessor.strip().lower()
        self.tm, self.controlnet = build_controlnet_models(cfg, accelerator.device, frozen_dtype(accelerator))
        self.memory = enable_memory_savers(self.tm, cfg, accelerator, extra=(self.controlnet,))
        self.scheduler = train_scheduler(cfg.loss)
        self.prepared_controlnet: torch.nn.Module = self.controlnet

    @property
    def model(self) -> torch.nn.Module:
        return self.controlnet

    @property
    def trained(self) -> torch.nn.Module:
        return self.controlnet

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.controlnet.parameters()), "lr": self.cfg.optim.lr, "name": "controlnet"}]

    def prepared(self, model: torch.nn.Module, accelerator) -> None:
        self.prepared_controlnet = model

    # ----------------------------------------------------------------------------------------------- loss
    def frames(self, items: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
        """Every frame of the micro-batch: latents (N, C, 1, h, w), maps (N, 3, H, W), text embeddings
        (N, 77, D) and one seed per frame."""
        device = self.accelerator.device
        latents, maps, texts, seeds = [], [], [], []
        for it in items:
            z = encode_items(self.tm.vae, [it], device)[0].transpose(0, 1)  # (F, C, h, w)
            latents.append(z)
            maps.append(it["control"])
            texts += [it["text"]] * z.shape[0]
            seeds += frame_seeds(int(it["seed"]), z.shape[0])
        with torch.no_grad():
            emb = encode_prompts(self.tm.tokenizer, self.tm.text_encoder, texts, device)
        return torch.cat(latents).unsqueeze(2), torch.cat(maps).to(device), emb, seeds

    def loss(self, items: list[dict]) -> torch.Tensor:
        """MSE of the frozen UNet's prediction with the ControlNet's residuals (one timestep per frame)."""
        latents, maps, emb, seeds = self.frames(items)
        noise, t = sample_noise(latents, seeds, self.cfg.loss, self.scheduler.config.num_train_timesteps)
        noisy = self.scheduler.add_noise(latents, noise, t)[:, :, 0]
        target = target_for(self.scheduler, latents, noise, t)[:, :, 0]
        with self.accelerator.autocast():
            down, mid = self.prepared_controlnet(noisy, t, encoder_hidden_states=emb, controlnet_cond=maps,
                                                 return_dict=False)
            pred = residual_prediction(self.tm.unet, noisy, t, emb, down, mid)
        return mse(pred, target)

    def passes(self, items: list[dict], step: int) -> list[LossPass]:
        return [(lambda: self.loss(items), 1.0)]

    # ----------------------------------------------------------------------------------------------- output
    def weights(self) -> ControlNetWeights:
        """The trained ControlNet in memory (fp32 copies on the CPU)."""
        config, sd = trained_config_and_state(self.controlnet)
        return ControlNetWeights(config=config, state_dict=sd, source_format="ours", control_kind=self.preprocessor,
                                 family="sd15")

    def export(self, out_dir: Path, training: dict) -> dict[str, str]:
        summary = {**training, "preprocessor": self.preprocessor,
                   "conditioning_scale": self.cfg.controlnet.conditioning_scale}
        return {"controlnet": finish_export(save_controlnet(self.weights(), out_dir / OUTPUT, summary), self.cfg)}

    @torch.no_grad()
    def validate(self, out_dir: Path, step: int, tb) -> list[Path]:
        """Per prompt one PNG: the control map of a data frame | the sample it steers | that frame."""
        vc, cn = self.cfg.validation, self.controlnet
        data = VideoDataset(dataclasses.replace(self.cfg.data, latent_cache=None), vc.seed, sample="frame",
                            control=self.preprocessor)
        pipe = StableDiffusionControlNetPipeline(
            vae=self.tm.vae, text_encoder=self.tm.text_encoder, tokenizer=self.tm.tokenizer, unet=self.tm.unet,
            controlnet=cn, scheduler=make_scheduler("ddim"), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        folder = out_dir / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        cn.eval()
        paths = []
        try:
            for i, prompt in enumerate(vc.prompts):
                item = data[i]
                cond = item["control"][:1]
                size = cond.shape[-1]
                with self.accelerator.autocast():
                    out = pipe(prompt=prompt, image=cond, height=size, width=size, num_inference_steps=vc.steps,
                               guidance_scale=vc.guidance_scale, controlnet_conditioning_scale=
                               self.cfg.controlnet.conditioning_scale,
                               generator=torch.Generator("cpu").manual_seed(vc.seed), output_type="np")
                frame = (item["pixels"][0].permute(1, 2, 0).numpy() + 1) / 2
                row = [cond[0].permute(1, 2, 0).numpy(), np.asarray(out.images[0], dtype=np.float32), frame]
                img = Image.fromarray((np.clip(np.concatenate(row, axis=1), 0, 1) * 255).round().astype(np.uint8))
                paths.append(save_validation_image(img, folder, step, i, tb))
        finally:
            cn.train()
        return paths
