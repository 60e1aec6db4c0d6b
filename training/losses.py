"""Noise schedule, noising and the training losses: noise-prediction MSE (or v-prediction), offset noise,
zero-terminal-SNR, TF-T2V's temporal coherence and MotionDirector's appearance debiasing.
Latents are (B, C, F, H, W)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from motion_adapters.training.config import LossConfig


def train_scheduler(cfg: LossConfig) -> DDPMScheduler:
    """The training schedule: AnimateDiff's linear 0.00085–0.012 by default, optional zero-terminal-SNR rescale."""
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        rescale_betas_zero_snr=cfg.zero_terminal_snr,
        clip_sample=False,
        steps_offset=1,
    )


def sample_noise(latents: torch.Tensor, seeds: list[int], cfg: LossConfig, num_timesteps: int):
    """Per-sample noise and ONE timestep per video (shared by its frames), each from its own seeded generator.

    Offset noise adds ``o·randn(C, F, 1, 1)`` (per frame) or ``o·randn(C, 1, 1, 1)`` (clip-shared).
    """
    noises, steps = [], []
    for i, s in enumerate(seeds):
        g = torch.Generator().manual_seed(int(s))
        shape = latents[i].shape  # C, F, H, W
        n = torch.randn(shape, generator=g)
        if cfg.offset_noise:
            off_shape = (shape[0], shape[1] if cfg.offset_noise_per_frame else 1, 1, 1)
            n = n + cfg.offset_noise * torch.randn(off_shape, generator=g)
        noises.append(n)
        steps.append(torch.randint(0, num_timesteps, (1,), generator=g))
    noise = torch.stack(noises).to(latents.device, latents.dtype)
    return noise, torch.cat(steps).to(latents.device)


def target_for(scheduler: DDPMScheduler, latents, noise, timesteps) -> torch.Tensor:
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred.float(), target.float(), reduction="mean")


def temporal_coherence(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """TF-T2V: adjacent-frame differences of the prediction match those of the target (F > 1 only)."""
    if pred.shape[2] < 2:
        return pred.new_zeros(())
    dp = pred[:, :, 1:].float() - pred[:, :, :-1].float()
    dt = target[:, :, 1:].float() - target[:, :, :-1].float()
    return F.mse_loss(dp, dt)


def appearance_debiased(pred: torch.Tensor, target: torch.Tensor, anchors: list[int], beta: float) -> torch.Tensor:
    """MotionDirector: ``φ(x)_j = √(β²+1)·x_j − β·x_k`` with one anchor frame k per sample; MSE(φ(ŷ), φ(y))."""
    a = (beta**2 + 1) ** 0.5
    idx = torch.tensor(anchors, device=pred.device)
    ar = torch.arange(pred.shape[0], device=pred.device)
    pk = pred[ar, :, idx].unsqueeze(2)
    tk = target[ar, :, idx].unsqueeze(2)
    return F.mse_loss((a * pred - beta * pk).float(), (a * target - beta * tk).float())
