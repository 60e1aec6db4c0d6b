"""The diffusion tasks (motion, motion_lora, spatial_lora, spatial_full, joint, motiondirector, t2i).

A step: encode captions (frozen CLIP, or the trained one for t2i) and frames (frozen VAE or the latent cache);
per sample draw noise and one timestep from its own seed; run the video pass (clips) and/or the image pass
(F = 1 with the motion modules cancelled); for ``motiondirector`` a temporal pass on the clip and a spatial
pass on one of its frames.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from motion_adapters.training.accelerator import frozen_dtype
from motion_adapters.training.config import ConfigError, TrainConfig
from motion_adapters.training.data import LatentCache
from motion_adapters.training.losses import (
    appearance_debiased,
    mse,
    sample_noise,
    target_for,
    temporal_coherence,
    train_scheduler,
)
from motion_adapters.training.model import (
    SPATIAL,
    TEMPORAL,
    TrainModels,
    build_models,
    save_outputs,
    set_lora_scale,
)
from motion_adapters.training.params import temporal_bypass
from motion_adapters.training.task import LossPass
from motion_adapters.training.validation import render_clips

log = logging.getLogger(__name__)
ENCODE_CHUNK = 16


def enable_memory_savers(tm: TrainModels, cfg: TrainConfig, accelerator, extra: tuple = ()) -> dict:
    """Gradient checkpointing and the attention backend of the UNet (and the diffusers models in ``extra``);
    returns what is on (frozen dtype set by build_models)."""
    dtype = frozen_dtype(accelerator)
    on = {"gradient_checkpointing": cfg.run.gradient_checkpointing or cfg.run.low_vram,
          "adamw8bit": cfg.optim.optimizer == "adamw8bit" or cfg.run.low_vram,
          "mixed_precision": accelerator.mixed_precision, "attention": "sdpa",
          "frozen_dtype": str(dtype or torch.float32).removeprefix("torch."), "trainable_dtype": "float32"}
    models = (tm.unet, *extra)
    if on["gradient_checkpointing"]:
        for m in models:
            m.enable_gradient_checkpointing()
    if cfg.run.attention == "xformers":
        try:
            import xformers  # noqa: F401
        except ImportError as e:
            raise ConfigError("run.attention: xformers is not installed; use sdpa (the default)") from e
        if accelerator.device.type != "cuda":
            raise ConfigError("run.attention: xformers needs a CUDA device, found " + accelerator.device.type)
        for m in models:  # pragma: no cover - CUDA only
            m.enable_xformers_memory_efficient_attention()
        on["attention"] = "xformers"
    return on


def encode_prompts(tokenizer, text_encoder: torch.nn.Module, texts: list[str], device) -> torch.Tensor:
    """CLIP hidden states (B, 77, D) of ``texts`` (padded to the tokenizer's length)."""
    tok = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt")
    return text_encoder(tok.input_ids.to(device))[0]


@torch.no_grad()
def encode_items(vae: torch.nn.Module, items: list[dict], device) -> torch.Tensor:
    """(B, C, F, h, w) scaled latents of the items' frames (or their cached distributions), each sampled from
    the item's own seed, so cache hits and misses agree; a miss with a ``cache_path`` fills the cache."""
    out = []
    for it in items:
        if "latent_mean" in it:
            mean, std = it["latent_mean"], it["latent_std"]
        else:
            pix = it["pixels"].to(device, vae.dtype)
            means, stds = [], []
            for i in range(0, pix.shape[0], ENCODE_CHUNK):
                dist = vae.encode(pix[i:i + ENCODE_CHUNK]).latent_dist
                means.append(dist.mean.float().cpu())
                stds.append(dist.std.float().cpu())
            mean, std = torch.cat(means), torch.cat(stds)
            if "cache_path" in it:
                LatentCache.save(Path(it["cache_path"]), mean, std)
                mean, std = mean[it["indices"]], std[it["indices"]]
        g = torch.Generator().manual_seed(int(it["seed"]) ^ 0x5EED)
        z = mean + std * torch.randn(mean.shape, generator=g)
        out.append(z * vae.config.scaling_factor)
    return torch.stack(out).permute(0, 2, 1, 3, 4).to(device)


class DiffusionTask:
    """Noise-prediction training of a (motion) UNet; the trained groups and the export depend on ``cfg.task``."""

    def __init__(self, cfg: TrainConfig, accelerator):
        self.cfg = cfg
        self.accelerator = accelerator
        # mixed precision: frozen weights stored in half precision, trainable ones fp32 (autocast mixes them)
        self.tm = build_models(cfg, accelerator.device, frozen_dtype(accelerator))
        self.is_2d = self.tm.motion is None  # task t2i: a UNet2DConditionModel on images
        self.validates = not self.is_2d
        self.te_trains = cfg.model.train_text_encoder
        self.memory = enable_memory_savers(self.tm, cfg, accelerator)
        self.scheduler = train_scheduler(cfg.loss)
        params = dict(self.tm.unet.named_parameters())
        self.spatial_lora_params = [params[n] for n in self.tm.groups.get(SPATIAL, [])]
        self.unet = self.tm.unet  # the prepared (possibly DDP-wrapped) UNet once ``prepared`` ran
        self.text_encoder = self.tm.text_encoder
        # everything trained, under stable names (checkpoints, EMA): the UNet, plus the text encoder for t2i
        self._trained = (torch.nn.ModuleDict({"unet": self.tm.unet, "text_encoder": self.tm.text_encoder})
                         if self.te_trains else self.tm.unet)

    @property
    def model(self) -> torch.nn.Module:
        return self.tm.unet

    @property
    def trained(self) -> torch.nn.Module:
        return self._trained

    @property
    def raw_unet(self) -> torch.nn.Module:
        return self.tm.unet

    def param_groups(self) -> list[dict]:
        cfg = self.cfg
        lr_sp = cfg.optim.lr_spatial or cfg.optim.lr
        params = dict(self.tm.unet.named_parameters())
        groups = [{"params": [params[n] for n in self.tm.groups[g]], "lr": lr_sp if g == SPATIAL else cfg.optim.lr,
                   "name": g} for g in (TEMPORAL, SPATIAL) if g in self.tm.groups]
        if self.te_trains:
            groups.append({"params": list(self.tm.text_encoder.parameters()), "name": "text_encoder",
                           "lr": cfg.optim.lr_text_encoder or cfg.optim.lr})
        return groups

    def prepared(self, model: torch.nn.Module, accelerator) -> None:
        self.unet = model
        self.text_encoder = accelerator.prepare(self.tm.text_encoder) if self.te_trains else self.tm.text_encoder

    # ------------------------------------------------------------------------------------------- encoding
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        with torch.set_grad_enabled(self.te_trains and torch.is_grad_enabled()):
            return encode_prompts(self.tm.tokenizer, self.text_encoder, texts, self.accelerator.device)

    def encode_latents(self, items: list[dict]) -> torch.Tensor:
        """(B, C, F, h, w) latents, sampled from each item's own seed (cache hits and misses agree)."""
        return encode_items(self.tm.vae, items, self.accelerator.device)

    # ----------------------------------------------------------------------------------------------- losses
    def _forward(self, latents, texts, seeds, bypass: bool):
        noise, t = sample_noise(latents, seeds, self.cfg.loss, self.scheduler.config.num_train_timesteps)
        noisy = self.scheduler.add_noise(latents, noise, t)
        target = target_for(self.scheduler, latents, noise, t)
        if self.is_2d:  # images as (B, C, 1, h, w): the 2-D UNet sees (B, C, h, w)
            emb = self.encode_text(texts)
            with self.accelerator.autocast():
                pred = self.unet(noisy[:, :, 0], t, encoder_hidden_states=emb).sample.unsqueeze(2)
            return pred, target, noisy, t, emb
        emb = self.encode_text(texts).repeat_interleave(latents.shape[2], dim=0)
        ctx = temporal_bypass(self.raw_unet) if bypass else nullcontext()
        with ctx, self.accelerator.autocast():
            pred = self.unet(noisy, t, encoder_hidden_states=emb).sample
        return pred, target, noisy, t, emb

    def video_loss(self, items: list[dict]) -> torch.Tensor:
        lc = self.cfg.loss
        pred, target, *_ = self._forward(self.encode_latents(items), [i["text"] for i in items],
                                         [i["seed"] for i in items], bypass=False)
        loss = mse(pred, target)
        if lc.temporal_coherence_weight:
            loss = loss + lc.temporal_coherence_weight * temporal_coherence(pred, target)
        return loss

    def image_loss(self, items: list[dict]) -> torch.Tensor:
        pred, target, *_ = self._forward(self.encode_latents(items), [i["text"] for i in items],
                                         [i["seed"] for i in items], bypass=True)
        return mse(pred, target)

    def motiondirector_passes(self, items: list[dict], step: int) -> list[LossPass]:
        """Temporal pass on the clip (spatial LoRA on, not stepped by it), spatial pass on one frame."""
        lc, raw = self.cfg.loss, self.raw_unet
        names = self.tm.lora_adapters
        g = np.random.default_rng([self.cfg.run.seed, step, 7])  # same on every process
        mask_spatial = bool(g.random() < lc.spatial_mask_prob)
        latents = self.encode_latents(items)
        texts, seeds = [i["text"] for i in items], [i["seed"] for i in items]
        f = latents.shape[2]
        anchors = [int(np.random.default_rng([s, 11]).integers(f)) for s in seeds]
        frame = [int(np.random.default_rng([s, 13]).integers(f)) for s in seeds]

        def temporal():
            set_lora_scale(raw, names[SPATIAL], 0.0 if mask_spatial else 1.0)
            set_lora_scale(raw, names[TEMPORAL], 1.0)
            pred, target, *_ = self._forward(latents, texts, seeds, bypass=False)
            loss = mse(pred, target)
            if lc.appearance_debias_weight:
                loss = loss + lc.appearance_debias_weight * appearance_debiased(
                    pred, target, anchors, lc.appearance_debias_beta)
            return loss

        def spatial():
            for p in self.spatial_lora_params:  # the temporal pass (just back-propagated) must not step them
                if p.grad is not None:
                    p.grad.zero_()
            set_lora_scale(raw, names[SPATIAL], 1.0)
            set_lora_scale(raw, names[TEMPORAL], 0.0)
            noise, t = sample_noise(latents, seeds, lc, self.scheduler.config.num_train_timesteps)
            noisy = self.scheduler.add_noise(latents, noise, t)
            target = target_for(self.scheduler, latents, noise, t)
            ar = torch.arange(len(items))
            idx = torch.tensor(frame)
            one = noisy[ar, :, idx].unsqueeze(2)
            emb = self.encode_text(texts)
            with self.accelerator.autocast():
                pred = self.unet(one, t, encoder_hidden_states=emb).sample
            return lc.image_loss_weight * mse(pred[:, :, 0], target[ar, :, idx])

        passes = [(temporal, 1.0)]
        if not mask_spatial:
            passes.append((spatial, 1.0))
        return passes

    def passes(self, items: list[dict], step: int) -> list[LossPass]:
        """``[(loss_fn, weight), …]`` for this micro-batch."""
        if self.cfg.task == "motiondirector":
            return self.motiondirector_passes(items, step)
        videos = [i for i in items if i["kind"] == "video"]
        images = [i for i in items if i["kind"] == "image"] + [s for i in items for s in i.get("images", [])]
        n = len(videos) + len(images)
        out = []
        if videos:
            out.append((lambda: self.video_loss(videos), len(videos) / n))
        if images:
            out.append((lambda: self.cfg.loss.image_loss_weight * self.image_loss(images), len(images) / n))
        return out

    # ----------------------------------------------------------------------------------------------- output
    def export(self, out_dir: Path, training: dict) -> dict[str, str]:
        if self.cfg.task == "motiondirector":  # leave both LoRAs at full scale for export / validation
            for name in self.tm.lora_adapters.values():
                set_lora_scale(self.raw_unet, name, 1.0)
        return save_outputs(self.tm, self.raw_unet, self.cfg, out_dir, training)

    @torch.no_grad()
    def validate(self, out_dir: Path, step: int, tb) -> list[Path]:
        """GIF clips of the validation prompts through the AnimateDiff pipeline."""
        unet = self.raw_unet
        unet.eval()
        try:
            with self.accelerator.autocast():
                paths, motion = render_clips(self.tm, unet, self.cfg.validation, out_dir / "validation", step)
        finally:
            unet.train()
        for i, m in enumerate(motion):
            if tb is not None:
                tb.add_scalar(f"validation/motion_{i}", m, step)
            if m < 1e-3:
                log.warning("validation clip %d is (almost) static: mean frame difference %.2e", i, m)
        return paths
