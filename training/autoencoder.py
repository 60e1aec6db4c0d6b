"""Task ``vae``: train an ``AutoencoderKL`` from scratch on images (the shapes world's 4× VAE).

The loss is the reconstruction error of ``decode(mean + latent_noise·ε)``: the encoder's mean plus a little
fixed noise keeps the decoder robust to the diffusion model's imperfect latents while the KL term stays off
(``vae.kl_weight`` 0), as the issue's prototype found best. At export the latent ``scaling_factor`` is set to
1/std of the encoder means, so the diffusion model sees unit-variance latents as with SD. Same config,
accelerate set-up, atomic checkpoints, resume and EMA as the diffusion tasks.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from motion_adapters.training.accelerator import make_accelerator
from motion_adapters.training.checkpoint import read_state, register_hooks, resolve_resume, save_checkpoint
from motion_adapters.training.config import TrainConfig
from motion_adapters.training.data import StreamSampler, VideoDataset, collate
from motion_adapters.training.ema import EMA
from motion_adapters.training.model import to_fp16_file
from motion_adapters.training.optim import build_lr_scheduler, build_optimizer

SCALE_BATCHES = 4


def pixels_of(items: list[dict], device) -> torch.Tensor:
    """(B, 3, H, W) pixels in [-1, 1] of one frame per item."""
    return torch.cat([it["pixels"][:1] for it in items]).to(device)


def vae_loss(vae: AutoencoderKL, x: torch.Tensor, noise: float, kl_weight: float, l1_weight: float,
             generator: torch.Generator | None = None) -> torch.Tensor:
    dist = vae.encode(x).latent_dist
    eps = torch.randn(dist.mean.shape, generator=generator).to(x.device)
    rec = vae.decode(dist.mean + noise * eps).sample
    loss = F.mse_loss(rec, x)
    if l1_weight:
        loss = loss + l1_weight * F.l1_loss(rec, x)
    if kl_weight:
        loss = loss + kl_weight * dist.kl().mean() / x[0].numel()
    return loss


class AutoencoderTrainer:
    """``run()`` trains to ``run.max_steps`` and writes ``OUTPUT_DIR/vae`` (an AutoencoderKL folder)."""

    def __init__(self, cfg: TrainConfig, resume: str | None = None):
        from accelerate.utils import set_seed

        self.cfg = cfg
        self.out = Path(cfg.run.output_dir)
        self.accelerator = acc = make_accelerator(cfg)
        set_seed(cfg.run.seed)
        torch.manual_seed(cfg.run.seed)
        self.vae = AutoencoderKL(**cfg.model.vae_config).to(acc.device).train()
        self.dataset = VideoDataset(cfg.data, cfg.run.seed)
        optimizer = build_optimizer([{"params": list(self.vae.parameters()), "lr": cfg.optim.lr, "name": "vae"}],
                                    cfg.optim, cfg.optim.optimizer == "adamw8bit")
        lr_sched = build_lr_scheduler(optimizer, cfg.optim, cfg.run.max_steps, acc.num_processes)
        total = cfg.run.max_steps * cfg.run.grad_accum * cfg.run.batch_size * acc.num_processes
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=cfg.run.batch_size, sampler=StreamSampler(total),
                                             collate_fn=collate, num_workers=cfg.data.num_workers)
        self._raw = self.vae
        self.model, self.optimizer, self.loader, self.lr_sched = acc.prepare(self.vae, optimizer, loader, lr_sched)
        self.ema = None
        if cfg.optim.ema_decay:

            self.ema = EMA(dict(self._raw.named_parameters()), cfg.optim.ema_decay)
        register_hooks(acc, [self._raw], extra=self.ema)
        self.step, self.losses = 0, []
        self.ckpt_root = self.out / "checkpoints"
        ckpt = resolve_resume(resume, self.ckpt_root)
        if ckpt is not None:
            acc.load_state(str(ckpt))
            st = read_state(ckpt)
            self.step, self.losses = int(st["step"]), list(st.get("losses", []))
            print(f"resumed from {ckpt} at step {self.step}", flush=True)

    def state(self) -> dict:
        return {"step": self.step, "losses": self.losses, "task": "vae"}

    def run(self) -> dict:
        acc, cfg, vc = self.accelerator, self.cfg, self.cfg.vae
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        skip = self.step * cfg.run.grad_accum
        loader = acc.skip_first_batches(self.loader, skip) if skip else self.loader
        bar = None
        if cfg.run.progress and acc.is_main_process:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.run.max_steps, initial=self.step, desc="train vae", dynamic_ncols=True)
        acc_loss, t0 = 0.0, time.perf_counter()
        for items in loader:
            if self.step >= cfg.run.max_steps:
                break
            g = torch.Generator().manual_seed(int(items[0]["seed"]))
            with acc.accumulate(self.model), acc.autocast():
                loss = vae_loss(self.model, pixels_of(items, acc.device), vc.latent_noise, vc.kl_weight,
                                vc.l1_weight, g)
                acc.backward(loss)
                if acc.sync_gradients and cfg.optim.max_grad_norm > 0:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.optim.max_grad_norm)
                self.optimizer.step()
                self.lr_sched.step()
                self.optimizer.zero_grad(set_to_none=True)
            acc_loss += float(loss.detach())
            if not acc.sync_gradients:
                continue
            if self.ema is not None:
                self.ema.update()
            self.step += 1
            self.losses.append(acc_loss / cfg.run.grad_accum)
            acc_loss = 0.0
            with open(self.out / "log.jsonl", "a") as f:
                f.write(json.dumps({"step": self.step, "loss": self.losses[-1],
                                    "seconds": round(time.perf_counter() - t0, 4)}) + "\n")
            t0 = time.perf_counter()
            if bar is not None:
                bar.update(1)
                if self.step % cfg.run.log_every == 0 or self.step == 1:
                    bar.set_postfix(loss=f"{self.losses[-1]:.4f}")
            if self.step % cfg.run.checkpoint_every == 0 and self.step < cfg.run.max_steps:
                save_checkpoint(acc, self.ckpt_root, self.step, self.state(), cfg.run.keep_checkpoints)
        if bar is not None:
            bar.close()
        return self.finish()

    @torch.no_grad()
    def latent_scale(self) -> float:
        """1 / std of the encoder means over a few batches (SD's ``scaling_factor``)."""
        vals = []
        for p in range(SCALE_BATCHES * self.cfg.run.batch_size):
            it = self.dataset[p]
            vals.append(self._raw.encode(it["pixels"][:1].to(self.accelerator.device)).latent_dist.mean.flatten())
        std = float(torch.cat(vals).std())
        return 1.0 / max(std, 1e-6)

    def finish(self) -> dict:
        self._raw.eval()
        folder = self.out / "vae"
        with self.ema.applied() if self.ema is not None else nullcontext():
            self._raw.register_to_config(scaling_factor=self.latent_scale())
            tmp = self.out / ".vae.tmp"
            self._raw.save_pretrained(str(tmp))
        if self.cfg.run.export_dtype == "fp16":

            for f in tmp.glob("*.safetensors"):
                to_fp16_file(f)
        (tmp / "training.json").write_text(json.dumps({"task": "vae", "steps": self.step,
                                                        "final_loss": self.losses[-1] if self.losses else None,
                                                        "config": self.cfg.to_dict()}, indent=2, default=str))
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        tmp.rename(folder)
        print(f"wrote vae: {folder}", flush=True)
        return {"steps": self.step, "losses": self.losses, "outputs": {"vae": str(folder)}}
