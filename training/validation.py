"""Validation clips during training: the AnimateDiff pipeline on the live (training) modules, saved as GIF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import AnimateDiffPipeline
from diffusers.utils import export_to_gif
from PIL import Image

from motion_adapters.files import atomic_file
from motion_adapters.schedulers import make_scheduler
from motion_adapters.swap import adapter_view
from motion_adapters.training.config import ValidationConfig


def motion_score(frames: np.ndarray) -> float:
    """Mean absolute difference of consecutive frames (0 = static clip), a weight-free motion check."""
    if frames.shape[0] < 2:
        return 0.0
    return float(np.abs(np.diff(frames.astype(np.float32), axis=0)).mean())


@torch.no_grad()
def render_clips(tm, unet, cfg: ValidationConfig, folder: Path, step: int) -> tuple[list[Path], list[float]]:
    """One GIF per prompt in ``folder`` (``step-000100-0.gif`` …) and each clip's motion score."""
    flags = {n: p.requires_grad for n, p in unet.named_parameters()}
    try:
        return _render(tm, unet, cfg, folder, step)
    finally:  # adapter_view shares (and freezes) the UNet's motion modules: restore what trains
        for n, p in unet.named_parameters():
            p.requires_grad_(flags[n])


def _render(tm, unet, cfg: ValidationConfig, folder: Path, step: int) -> tuple[list[Path], list[float]]:
    pipe = AnimateDiffPipeline(vae=tm.vae, text_encoder=tm.text_encoder, tokenizer=tm.tokenizer, unet=unet,
                               motion_adapter=adapter_view(unet, tm.motion.config),
                               scheduler=make_scheduler("ddim"))
    pipe.set_progress_bar_config(disable=True)
    folder.mkdir(parents=True, exist_ok=True)
    paths, scores = [], []
    for i, prompt in enumerate(cfg.prompts):
        out = pipe(prompt=prompt, num_frames=cfg.num_frames, height=cfg.height, width=cfg.width,
                   num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                   generator=torch.Generator("cpu").manual_seed(cfg.seed), output_type="np")
        frames = np.asarray(out.frames[0], dtype=np.float32)
        scores.append(motion_score(frames))
        images = [Image.fromarray((np.clip(f, 0, 1) * 255).round().astype(np.uint8)) for f in frames]
        path = folder / f"step-{step:06d}-{i}.gif"
        with atomic_file(path) as tmp:  # the temp name keeps .gif: PIL picks the format from the suffix
            export_to_gif(images, str(tmp), fps=cfg.fps)
        paths.append(path)
    return paths, scores
