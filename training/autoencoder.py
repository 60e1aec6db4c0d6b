"""Task ``vae``: train an ``AutoencoderKL`` from scratch on images (e.g. a small 4× VAE).

The loss is the reconstruction error of ``decode(mean + latent_noise·ε)``: the encoder's mean plus a little
fixed noise keeps the decoder robust to the diffusion model's imperfect latents while the KL term stays off
(``vae.kl_weight`` 0), as the issue's prototype found best. At export the latent ``scaling_factor`` is set to
1/std of the encoder means, so the diffusion model sees unit-variance latents as with SD. The loop (accelerate,
atomic checkpoints, resume, EMA, logging) is the trainer's, as for the diffusion tasks.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from motion_adapters.files import atomic_dir, only_names
from motion_adapters.training.config import TrainConfig
from motion_adapters.training.data import VideoDataset
from motion_adapters.training.model import to_fp16_file
from motion_adapters.training.task import LossPass

SCALE_BATCHES = 4
#: what an exported VAE folder holds: such a folder is replaced by the next export
VAE_FOLDER_NAMES = frozenset({"config.json", "diffusion_pytorch_model.safetensors", "training.json"})


def pixels_of(items: list[dict], device) -> torch.Tensor:
    """(B, 3, H, W) pixels in [-1, 1] of one frame per item."""
    return torch.cat([it["pixels"][:1] for it in items]).to(device)


def vae_loss(vae: AutoencoderKL, x: torch.Tensor, noise: float, kl_weight: float, l1_weight: float,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE (+ ``l1_weight``·L1) of ``decode(mean + noise·ε)`` against ``x`` (+ ``kl_weight``·KL per element)."""
    dist = vae.encode(x).latent_dist
    eps = torch.randn(dist.mean.shape, generator=generator).to(x.device)
    rec = vae.decode(dist.mean + noise * eps).sample
    loss = F.mse_loss(rec, x)
    if l1_weight:
        loss = loss + l1_weight * F.l1_loss(rec, x)
    if kl_weight:
        loss = loss + kl_weight * dist.kl().mean() / x[0].numel()
    return loss


@torch.no_grad()
def latent_scale(vae: AutoencoderKL, dataset: VideoDataset, n: int, device) -> float:
    """1 / std of the encoder means of the first frames of ``dataset[0:n]`` (SD's ``scaling_factor``)."""
    vals = [vae.encode(dataset[p]["pixels"][:1].to(device)).latent_dist.mean.flatten() for p in range(n)]
    std = float(torch.cat(vals).std())
    return 1.0 / max(std, 1e-6)


class AutoencoderTask:
    """Every weight of a new ``AutoencoderKL`` trains; the export is ``OUTPUT_DIR/vae`` (an AutoencoderKL folder
    with ``training.json``)."""

    validates = False

    def __init__(self, cfg: TrainConfig, accelerator):
        self.cfg = cfg
        self.accelerator = accelerator
        torch.manual_seed(cfg.run.seed)
        self.vae = AutoencoderKL(**cfg.model.vae_config).to(accelerator.device).train()
        self.prepared_vae: torch.nn.Module = self.vae
        self.memory = {"adamw8bit": cfg.optim.optimizer == "adamw8bit",
                       "mixed_precision": accelerator.mixed_precision, "trainable_dtype": "float32"}

    @property
    def model(self) -> torch.nn.Module:
        return self.vae

    @property
    def trained(self) -> torch.nn.Module:
        return self.vae

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.vae.parameters()), "lr": self.cfg.optim.lr, "name": "vae"}]

    def prepared(self, model: torch.nn.Module, accelerator) -> None:
        self.prepared_vae = model

    def passes(self, items: list[dict], step: int) -> list[LossPass]:
        vc, acc = self.cfg.vae, self.accelerator

        def reconstruction() -> torch.Tensor:
            g = torch.Generator().manual_seed(int(items[0]["seed"]))
            with acc.autocast():
                return vae_loss(self.prepared_vae, pixels_of(items, acc.device), vc.latent_noise, vc.kl_weight,
                                vc.l1_weight, g)

        return [(reconstruction, 1.0)]

    def export(self, out_dir: Path, training: dict) -> dict[str, str]:
        self.vae.eval()
        n = SCALE_BATCHES * self.cfg.run.batch_size
        items = VideoDataset(self.cfg.data, self.cfg.run.seed)  # the run's items (a function of seed and position)
        self.vae.register_to_config(scaling_factor=latent_scale(self.vae, items, n, self.accelerator.device))

        def write(tmp: Path) -> None:
            self.vae.save_pretrained(str(tmp))
            if self.cfg.run.export_dtype == "fp16":
                for f in tmp.glob("*.safetensors"):
                    to_fp16_file(f)
            (tmp / "training.json").write_text(json.dumps(training, indent=2, default=str))

        folder = atomic_dir(out_dir / "vae", write, overwrite=True, label="export",
                            replaceable=only_names(VAE_FOLDER_NAMES))
        return {"vae": str(folder)}

    def validate(self, out_dir: Path, step: int, tb) -> list[Path]:
        return []
