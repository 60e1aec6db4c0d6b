"""Task ``sparsectrl``: a SparseCtrl encoder (diffusers ``SparseControlNetModel``) learns to steer the frozen
base UNet + motion module from a few conditioned keyframes of each clip (SparseCtrl, Guo et al. 2023).

The encoder is ``SparseControlNetModel.from_unet`` of the base's 2-D UNet (its down blocks and mid block, zero
convolutions at every output, so step 0 is the plain text-to-video model); its temporal layers start from the
motion module's (same key names; the encoder's motion blocks have one self-attention, so the module's second
attention stays out). Each clip draws a keyframe mask from its own seed (see
:class:`~motion_adapters.training.config.SparseCtrlTrainConfig`): an ``rgb`` encoder sees the clip's own
latents at the keyframes plus the mask channel (diffusers' simplified condition embedding), a ``scribble``
encoder the keyframes' maps from ``sparsectrl.preprocessor`` through a map encoder. The loss is the frozen
motion UNet's noise (or v) MSE with the encoder's residuals added at scale 1, as the AnimateDiff SparseCtrl
pipeline adds them. Writes ``sparsectrl.safetensors`` in our format (diffusers keys, kind ``sparsectrl``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from diffusers import AnimateDiffSparseControlNetPipeline, SparseControlNetModel
from PIL import Image

from motion_adapters.formats.motion_module import MotionModuleWeights, is_pe_key
from motion_adapters.formats.ours import save_sparsectrl
from motion_adapters.formats.sparsectrl import SparseCtrlWeights
from motion_adapters.hub import resolve_source
from motion_adapters.loading import KIND_MOTION, load_adapter
from motion_adapters.schedulers import make_scheduler
from motion_adapters.swap import (
    adapter_view,
    build_motion_unet,
    check_motion_fits_base,
)
from motion_adapters.training.accelerator import frozen_dtype
from motion_adapters.training.config import ConfigError, TrainConfig
from motion_adapters.training.controlnet import (
    finish_export,
    frozen_train_models,
    map_embedding_channels,
    residual_prediction,
    save_validation_image,
    trainable,
    trained_config_and_state,
)
from motion_adapters.training.data import VideoDataset
from motion_adapters.training.diffusion import enable_memory_savers, encode_items, encode_prompts
from motion_adapters.training.losses import mse, sample_noise, target_for, train_scheduler
from motion_adapters.training.task import LossPass
from motion_adapters.training.train_models import TrainModels, read_complete_base, unet_2d

log = logging.getLogger(__name__)
OUTPUT = "sparsectrl.safetensors"
#: channels of an rgb encoder's condition: the keyframes' VAE latents (the mask channel is added by diffusers)
LATENT_CHANNELS = 4


def keyframes(seed: int, num_frames: int, cfg: TrainConfig) -> list[int]:
    """The conditioned frames of one clip, drawn from its seed: ``[0]``, ``[0, F-1]``, ``[]`` or 1 to
    ``max_keyframes`` random frames, with the probabilities of ``cfg.sparsectrl``."""
    sc = cfg.sparsectrl
    rng = np.random.default_rng([seed, 23])
    u = float(rng.random())
    if u < sc.first_prob:
        return [0]
    u -= sc.first_prob
    if u < sc.first_last_prob:
        return sorted({0, num_frames - 1})
    u -= sc.first_last_prob
    if u < sc.uncond_prob:
        return []
    k = int(rng.integers(1, min(sc.max_keyframes, num_frames) + 1))
    return sorted(int(i) for i in rng.choice(num_frames, size=k, replace=False))


def motion_into_encoder(encoder: SparseControlNetModel, motion: MotionModuleWeights) -> dict[str, list[str]]:
    """Copy the motion module's temporal weights into the encoder's motion modules (same key names).

    Returns ``{"copied": keys, "not_in_encoder": module keys the encoder has no place for (its motion blocks
    have one self-attention), "not_from_module": encoder motion keys the module lacks}``; a key of both whose
    shapes differ is an error (e.g. other heads or channels)."""
    live = encoder.state_dict()
    enc_keys = {k for k in live if ".motion_modules." in k and not is_pe_key(k)}
    copied, extra = [], []
    with torch.no_grad():
        for k, v in motion.state_dict.items():
            if k not in enc_keys:
                extra.append(k)
                continue
            if live[k].shape != v.shape:
                raise ConfigError(f"model.motion_module: {k} has shape {tuple(v.shape)}, the encoder expects "
                                  f"{tuple(live[k].shape)}")
            live[k].copy_(v.to(live[k].dtype))
            copied.append(k)
    return {"copied": copied, "not_in_encoder": extra, "not_from_module": sorted(enc_keys - set(copied))}


def new_encoder(cfg: TrainConfig, base, motion: MotionModuleWeights) -> tuple[SparseControlNetModel, dict]:
    """``SparseControlNetModel.from_unet`` of the base UNet with the motion module's temporal settings and
    weights; an rgb encoder has the simplified (latent) condition embedding, a scribble one a map encoder."""
    sc = cfg.sparsectrl
    unet = unet_2d(base, cfg.model.base, "cpu")
    rgb = sc.kind == "rgb"
    channels = None if rgb else map_embedding_channels(tuple(sc.embedding_channels), base.configs["vae"],
                                                       "sparsectrl.embedding_channels")
    torch.manual_seed(cfg.run.seed)
    template = SparseControlNetModel.from_unet(unet, conditioning_channels=LATENT_CHANNELS if rgb else 3,
                                               conditioning_embedding_out_channels=channels)
    # from_unet keeps diffusers' temporal defaults; the motion module's length and heads (and the condition
    # embedding of the kind) need a model built with them, holding the same copied spatial weights
    config = {k: v for k, v in template.config.items() if not k.startswith("_")}
    config.update(motion_max_seq_length=int(motion.config["motion_max_seq_length"]),
                  motion_num_attention_heads=motion.config["motion_num_attention_heads"],
                  use_simplified_condition_embedding=rgb, concat_conditioning_mask=True)
    torch.manual_seed(cfg.run.seed)
    encoder = SparseControlNetModel.from_config(config)
    own = encoder.state_dict()
    spatial = {k: v for k, v in template.state_dict().items()
               if ".motion_modules." not in k and k in own and own[k].shape == v.shape}
    encoder.load_state_dict(spatial, strict=False)
    report = motion_into_encoder(encoder, motion)
    if report["not_from_module"]:
        raise ConfigError(f"model.motion_module: the encoder's temporal layers need {report['not_from_module'][:3]}"
                          f" that the motion module does not have")
    # diffusers' encoder normalises its temporal layers with the base's group count, not the module's
    groups = {"motion_module": motion.config.get("motion_norm_num_groups"), "encoder": config["norm_num_groups"]}
    if groups["motion_module"] != groups["encoder"]:
        log.warning("the encoder's temporal GroupNorms use %s groups (the base's), the motion module's %s: its "
                    "copied weights start under another grouping", groups["encoder"], groups["motion_module"])
    report["norm_groups"] = groups
    return encoder, report


def build_sparsectrl_models(cfg: TrainConfig, device, dtype: torch.dtype | None
                            ) -> tuple[TrainModels, SparseControlNetModel, dict]:
    """The frozen base + motion module (a ``UNetMotionModel``), VAE and text encoder (in ``dtype`` under mixed
    precision) and a trainable fp32 encoder; also what :func:`motion_into_encoder` copied."""
    base = read_complete_base(cfg, "sparsectrl")
    motion = load_adapter(resolve_source(cfg.model.motion_module), expect=KIND_MOTION)
    check_motion_fits_base(motion, base.configs["unet"], cfg.model.motion_module)
    if cfg.data.num_frames > motion.config["motion_max_seq_length"]:
        raise ConfigError(f"data.num_frames: expected at most {motion.config['motion_max_seq_length']} "
                          f"(the motion module's frame cap), found {cfg.data.num_frames}")
    encoder, report = new_encoder(cfg, base, motion)
    unet = build_motion_unet(base.configs["unet"], base.unet, motion, cfg.model.base, torch.float32, "cpu")
    tm = frozen_train_models(cfg, base, unet, motion, device, dtype)
    return tm, trainable(tm, encoder, "sparsectrl", device), report


def condition(latents: torch.Tensor, maps: torch.Tensor | None, frames: list[list[int]]
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(condition (B, C, F, h', w'), mask (B, 1, F, h', w')): the keyframes' latents (rgb) or maps (``maps``
    (B, 3, F, H, W), scribble) at ``frames[b]``, zeros elsewhere, as diffusers' pipeline lays them out."""
    src = latents if maps is None else maps
    cond = torch.zeros_like(src)
    mask = torch.zeros((src.shape[0], 1, *src.shape[2:]), dtype=src.dtype, device=src.device)
    for b, idx in enumerate(frames):
        if idx:
            cond[b, :, idx] = src[b, :, idx]
            mask[b, :, idx] = 1.0
    return cond, mask


class SparseCtrlTask:
    """The trainer's task for ``sparsectrl`` (see the module docstring)."""

    validates = True

    def __init__(self, cfg: TrainConfig, accelerator):
        self.cfg = cfg
        self.accelerator = accelerator
        self.kind = cfg.sparsectrl.kind
        self.preprocessor = cfg.sparsectrl.preprocessor.strip().lower() if self.kind == "scribble" else None
        self.tm, self.encoder, self.copied = build_sparsectrl_models(cfg, accelerator.device,
                                                                     frozen_dtype(accelerator))
        self.memory = enable_memory_savers(self.tm, cfg, accelerator, extra=(self.encoder,))
        self.scheduler = train_scheduler(cfg.loss)
        self.prepared_encoder: torch.nn.Module = self.encoder

    @property
    def model(self) -> torch.nn.Module:
        return self.encoder

    @property
    def trained(self) -> torch.nn.Module:
        return self.encoder

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.encoder.parameters()), "lr": self.cfg.optim.lr, "name": "sparsectrl"}]

    def prepared(self, model: torch.nn.Module, accelerator) -> None:
        self.prepared_encoder = model

    # ----------------------------------------------------------------------------------------------- loss
    def loss(self, items: list[dict]) -> torch.Tensor:
        """MSE of the frozen motion UNet's prediction with the encoder's residuals (one timestep per clip)."""
        device = self.accelerator.device
        latents = encode_items(self.tm.vae, items, device)  # (B, C, F, h, w)
        f = latents.shape[2]
        seeds = [int(it["seed"]) for it in items]
        frames = [keyframes(s, f, self.cfg) for s in seeds]
        maps = None
        if self.kind == "scribble":
            maps = torch.stack([it["control"] for it in items]).permute(0, 2, 1, 3, 4).to(device)
        cond, mask = condition(latents, maps, frames)
        with torch.no_grad():
            emb = encode_prompts(self.tm.tokenizer, self.tm.text_encoder, [it["text"] for it in items], device)
        emb = emb.repeat_interleave(f, dim=0)
        noise, t = sample_noise(latents, seeds, self.cfg.loss, self.scheduler.config.num_train_timesteps)
        noisy = self.scheduler.add_noise(latents, noise, t)
        target = target_for(self.scheduler, latents, noise, t)
        with self.accelerator.autocast():
            down, mid = self.prepared_encoder(noisy, t, encoder_hidden_states=emb, controlnet_cond=cond,
                                              conditioning_mask=mask, return_dict=False)
            pred = residual_prediction(self.tm.unet, noisy, t, emb, down, mid)
        return mse(pred, target)

    def passes(self, items: list[dict], step: int) -> list[LossPass]:
        return [(lambda: self.loss(items), 1.0)]

    # ----------------------------------------------------------------------------------------------- output
    def weights(self) -> SparseCtrlWeights:
        """The trained encoder in memory (fp32 copies on the CPU)."""
        config, sd = trained_config_and_state(self.encoder)
        return SparseCtrlWeights(config=config, state_dict=sd, source_format="ours", control_kind=self.kind,
                                 family="sd15")

    def export(self, out_dir: Path, training: dict) -> dict[str, str]:
        sc = self.cfg.sparsectrl
        summary = {**training, "control_kind": self.kind, "preprocessor": self.preprocessor,
                   "conditioning_scale": sc.conditioning_scale,
                   "keyframes": {"first": sc.first_prob, "first_last": sc.first_last_prob, "none": sc.uncond_prob,
                                 "max_random": sc.max_keyframes},
                   "motion_module": self.cfg.model.motion_module,
                   "motion_keys_copied": len(self.copied["copied"]),
                   "motion_keys_left_out": len(self.copied["not_in_encoder"]),
                   "temporal_norm_groups": self.copied["norm_groups"]}
        return {"sparsectrl": finish_export(save_sparsectrl(self.weights(), out_dir / OUTPUT, summary), self.cfg)}

    @torch.no_grad()
    def validate(self, out_dir: Path, step: int, tb) -> list[Path]:
        """Per prompt one PNG strip: frame 0 of a data clip (the keyframe) | the clip it starts."""
        vc, enc = self.cfg.validation, self.encoder
        data = VideoDataset(dataclasses.replace(self.cfg.data, latent_cache=None), vc.seed, control=self.preprocessor)
        pipe = AnimateDiffSparseControlNetPipeline(
            vae=self.tm.vae, text_encoder=self.tm.text_encoder, tokenizer=self.tm.tokenizer, unet=self.tm.unet,
            motion_adapter=adapter_view(self.tm.unet, self.tm.motion.config), controlnet=enc,
            scheduler=make_scheduler("ddim"))
        pipe.set_progress_bar_config(disable=True)
        folder = out_dir / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        enc.eval()
        paths = []
        try:
            for i, prompt in enumerate(vc.prompts):
                item = data[i]
                key = item["control"][0] if self.preprocessor else (item["pixels"][0] + 1) / 2
                size = key.shape[-1]
                picture = Image.fromarray((key.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8))
                with self.accelerator.autocast():
                    out = pipe(prompt=prompt, num_frames=vc.num_frames, height=size, width=size,
                               num_inference_steps=vc.steps, guidance_scale=vc.guidance_scale,
                               conditioning_frames=[picture], controlnet_frame_indices=[0],
                               controlnet_conditioning_scale=self.cfg.sparsectrl.conditioning_scale,
                               generator=torch.Generator("cpu").manual_seed(vc.seed), output_type="np")
                frames = np.asarray(out.frames[0], dtype=np.float32)
                row = np.concatenate([np.asarray(picture, dtype=np.float32) / 255.0, *frames], axis=1)
                img = Image.fromarray((np.clip(row, 0, 1) * 255).round().astype(np.uint8))
                paths.append(save_validation_image(img, folder, step, i, tb))
        finally:
            enc.train()
        return paths
