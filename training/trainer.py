"""The training loop on ``accelerate``: one YAML config, any task, 1…N processes, resumable.

A step: encode captions (frozen CLIP) and frames (frozen VAE or the latent cache); per sample draw noise and
one timestep from its own seed; run the video pass (clips) and/or the image pass (F = 1 with the motion
modules cancelled); for ``motiondirector`` a temporal pass on the clip and a spatial pass on one of its
frames. Each pass is back-propagated separately (``no_sync`` for all but the last, so DDP reduces once).
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from motion_adapters.training.accelerator import frozen_dtype, make_accelerator
from motion_adapters.training.autoencoder import AutoencoderTrainer
from motion_adapters.training.checkpoint import read_state, register_hooks, resolve_resume, save_checkpoint
from motion_adapters.training.config import ConfigError, TrainConfig
from motion_adapters.training.data import FailureCounter, LatentCache, StreamSampler, VideoDataset, collate
from motion_adapters.training.ema import EMA
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
from motion_adapters.training.optim import build_lr_scheduler, build_optimizer
from motion_adapters.training.params import temporal_bypass
from motion_adapters.training.validation import render_clips

log = logging.getLogger(__name__)
ENCODE_CHUNK = 16


def _enable_memory_savers(tm: TrainModels, cfg: TrainConfig, accelerator) -> dict:
    """Gradient checkpointing and the attention backend; returns what is on (frozen dtype set by build_models)."""
    dtype = frozen_dtype(accelerator)
    on = {"gradient_checkpointing": cfg.run.gradient_checkpointing or cfg.run.low_vram,
          "adamw8bit": cfg.optim.optimizer == "adamw8bit" or cfg.run.low_vram,
          "mixed_precision": accelerator.mixed_precision, "attention": "sdpa",
          "frozen_dtype": str(dtype or torch.float32).removeprefix("torch."), "trainable_dtype": "float32"}
    if on["gradient_checkpointing"]:
        tm.unet.enable_gradient_checkpointing()
    if cfg.run.attention == "xformers":
        try:
            import xformers  # noqa: F401
        except ImportError as e:
            raise ConfigError("run.attention: xformers is not installed; use sdpa (the default)") from e
        if accelerator.device.type != "cuda":
            raise ConfigError("run.attention: xformers needs a CUDA device, found " + accelerator.device.type)
        tm.unet.enable_xformers_memory_efficient_attention()  # pragma: no cover - CUDA only
        on["attention"] = "xformers"
    return on


class Trainer:
    """Holds the run state; ``run()`` trains to ``run.max_steps`` and writes the adapters."""

    def __init__(self, cfg: TrainConfig, resume: str | None = None):
        self.cfg = cfg
        self.out = Path(cfg.run.output_dir)
        self.accelerator = make_accelerator(cfg)
        acc = self.accelerator
        from accelerate.utils import set_seed

        set_seed(cfg.run.seed)
        # mixed precision: frozen weights stored in half precision, trainable ones fp32 (autocast mixes them)
        self.tm = build_models(cfg, acc.device, frozen_dtype(acc))
        self.is_2d = self.tm.motion is None  # task t2i: a UNet2DConditionModel on images
        self.te_trains = cfg.model.train_text_encoder
        self.memory = _enable_memory_savers(self.tm, cfg, acc)
        self.scheduler = train_scheduler(cfg.loss)
        self.dataset = VideoDataset(cfg.data, cfg.run.seed)
        self.failures = FailureCounter(cfg.data.max_failed_fraction, self.dataset.folder)
        lr_sp = cfg.optim.lr_spatial or cfg.optim.lr
        params = dict(self.tm.unet.named_parameters())
        groups = [{"params": [params[n] for n in self.tm.groups[g]], "lr": lr_sp if g == SPATIAL else cfg.optim.lr,
                   "name": g} for g in (TEMPORAL, SPATIAL) if g in self.tm.groups]
        if self.te_trains:
            groups.append({"params": list(self.tm.text_encoder.parameters()), "name": "text_encoder",
                           "lr": cfg.optim.lr_text_encoder or cfg.optim.lr})
        self.trainable = [p for g in groups for p in g["params"]]
        self.spatial_lora_params = [params[n] for n in self.tm.groups.get(SPATIAL, [])]
        optimizer = build_optimizer(groups, cfg.optim, self.memory["adamw8bit"])
        lr_sched = build_lr_scheduler(optimizer, cfg.optim, cfg.run.max_steps, acc.num_processes)
        total = cfg.run.max_steps * cfg.run.grad_accum * cfg.run.batch_size * acc.num_processes
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=cfg.run.batch_size, sampler=StreamSampler(total),
                                             collate_fn=collate, num_workers=cfg.data.num_workers)
        self.unet, self.optimizer, self.loader, self.lr_sched = acc.prepare(self.tm.unet, optimizer, loader, lr_sched)
        self.text_encoder = acc.prepare(self.tm.text_encoder) if self.te_trains else self.tm.text_encoder
        self._unet_ref = [self.tm.unet]
        # everything trained, under stable names (checkpoints, EMA): the UNet, plus the text encoder for t2i
        self.trained_module = (torch.nn.ModuleDict({"unet": self.tm.unet, "text_encoder": self.tm.text_encoder})
                               if self.te_trains else self.tm.unet)
        self.ema = None
        if cfg.optim.ema_decay:

            self.ema = EMA({n: p for n, p in self.trained_module.named_parameters() if p.requires_grad},
                           cfg.optim.ema_decay)
        register_hooks(acc, [self.trained_module], extra=self.ema)
        self.step = 0
        self.losses: list[float] = []
        self.ckpt_root = self.out / "checkpoints"
        ckpt = resolve_resume(resume, self.ckpt_root)
        if ckpt is not None:
            acc.load_state(str(ckpt))
            st = read_state(ckpt)
            self.step = int(st["step"])
            self.losses = list(st.get("losses", []))
            self.failures.attempts = int(st.get("attempts", 0))
            self.failures.failed = [tuple(x) for x in st.get("failed", [])]
            if acc.is_main_process:
                print(f"resumed from {ckpt} at step {self.step}", flush=True)
        self.tb = self._tensorboard()

    # ------------------------------------------------------------------------------------------- helpers
    def _tensorboard(self):
        if not (self.cfg.run.tensorboard and self.accelerator.is_main_process):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("tensorboard is not installed; logging to log.jsonl only")
            return None
        return SummaryWriter(str(self.out / "logs"))

    @property
    def raw_unet(self):
        return self._unet_ref[0]

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tok = self.tm.tokenizer(texts, padding="max_length", max_length=self.tm.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        with torch.set_grad_enabled(self.te_trains and torch.is_grad_enabled()):
            return self.text_encoder(tok.input_ids.to(self.accelerator.device))[0]

    @torch.no_grad()
    def encode_latents(self, items: list[dict]) -> torch.Tensor:
        """(B, C, F, h, w) latents, sampled from each item's own seed (cache hits and misses agree)."""
        vae = self.tm.vae
        out = []
        for it in items:
            if "latent_mean" in it:
                mean, std = it["latent_mean"], it["latent_std"]
            else:
                pix = it["pixels"].to(self.accelerator.device, vae.dtype)
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
        return torch.stack(out).permute(0, 2, 1, 3, 4).to(self.accelerator.device)

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

    def motiondirector_passes(self, items: list[dict]):
        """Temporal pass on the clip (spatial LoRA on, not stepped by it), spatial pass on one frame."""
        lc, raw = self.cfg.loss, self.raw_unet
        names = self.tm.lora_adapters
        g = np.random.default_rng([self.cfg.run.seed, self.step, 7])  # same on every process
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

    def passes(self, items: list[dict]):
        """``[(loss_fn, weight), …]`` for this micro-batch."""
        if self.cfg.task == "motiondirector":
            return self.motiondirector_passes(items)
        videos = [i for i in items if i["kind"] == "video"]
        images = [i for i in items if i["kind"] == "image"] + [s for i in items for s in i.get("images", [])]
        n = len(videos) + len(images)
        out = []
        if videos:
            out.append((lambda: self.video_loss(videos), len(videos) / n))
        if images:
            out.append((lambda: self.cfg.loss.image_loss_weight * self.image_loss(images), len(images) / n))
        return out

    # ----------------------------------------------------------------------------------------------- loop
    def train_step(self, items: list[dict]) -> float:
        acc = self.accelerator
        total = 0.0
        with torch.enable_grad(), acc.accumulate(self.unet):
            passes = self.passes(items)
            for k, (fn, weight) in enumerate(passes):
                last = k == len(passes) - 1
                ctx = nullcontext() if last else acc.no_sync(self.unet)
                with ctx:
                    loss = fn() * weight
                    acc.backward(loss)
                total += float(loss.detach())
                if self.cfg.task == "motiondirector" and k == 0 and not last:
                    for p in self.spatial_lora_params:  # the temporal loss must not step the spatial LoRA
                        if p.grad is not None:
                            p.grad.zero_()
            self.grad_norm = None
            if acc.sync_gradients and self.cfg.optim.max_grad_norm > 0:
                self.grad_norm = float(acc.clip_grad_norm_(self.trainable, self.cfg.optim.max_grad_norm))
            self.optimizer.step()
            self.lr_sched.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None and acc.sync_gradients:
                self.ema.update()
        return total

    def state(self) -> dict:
        return {"step": self.step, "losses": self.losses, "attempts": self.failures.attempts,
                "failed": self.failures.failed[:1000], "task": self.cfg.task}

    def run(self) -> dict:
        acc, cfg = self.accelerator, self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if acc.is_main_process:
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        skip = self.step * cfg.run.grad_accum
        loader = acc.skip_first_batches(self.loader, skip) if skip else self.loader
        bar = None
        if cfg.run.progress and acc.is_main_process:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.run.max_steps, initial=self.step, desc=f"train {cfg.task}", dynamic_ncols=True)
        micro, acc_loss, t0 = 0, 0.0, time.perf_counter()
        for items in loader:
            if self.step >= cfg.run.max_steps:
                break
            self.failures.add(items)
            acc_loss += self.train_step(items)
            micro += 1
            if not acc.sync_gradients:
                continue
            self.step += 1
            loss = float(acc.reduce(torch.tensor(acc_loss, device=acc.device), reduction="mean"))
            self.losses.append(loss)
            acc_loss, micro = 0.0, 0
            self._log(loss, time.perf_counter() - t0, bar)
            t0 = time.perf_counter()
            if self.step % cfg.run.checkpoint_every == 0 and self.step < cfg.run.max_steps:
                path = save_checkpoint(acc, self.ckpt_root, self.step, self.state(), cfg.run.keep_checkpoints)
                if acc.is_main_process:
                    print(f"checkpoint saved: {path}", flush=True)
            if (cfg.validation.every and cfg.validation.prompts and not self.is_2d
                    and self.step % cfg.validation.every == 0):
                self.validate()
        if bar is not None:
            bar.close()
        return self.finish()

    def _log(self, loss: float, seconds: float, bar) -> None:
        if not self.accelerator.is_main_process:
            return
        rec = {"step": self.step, "loss": loss, "lr": self.lr_sched.get_last_lr()[0], "grad_norm": self.grad_norm,
               "seconds": round(seconds, 4)}
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            self.tb.add_scalar("train/loss", loss, self.step)
            if self.grad_norm is not None:
                self.tb.add_scalar("train/grad_norm", self.grad_norm, self.step)
            self.tb.add_scalar("train/lr", rec["lr"], self.step)
        if bar is not None:
            bar.update(1)
            if self.step % self.cfg.run.log_every == 0 or self.step == 1:
                bar.set_postfix(loss=f"{loss:.4f}", gn=f"{self.grad_norm or 0:.3f}")

    def training_metadata(self) -> dict:
        acc = self.accelerator
        return {"task": self.cfg.task, "steps": self.step, "final_loss": self.losses[-1] if self.losses else None,
                "num_processes": acc.num_processes,
                "global_batch": self.cfg.run.batch_size * self.cfg.run.grad_accum * acc.num_processes,
                "memory": self.memory, "config": self.cfg.to_dict(),
                "data": {**self.dataset.summary(), "load_attempts": self.failures.attempts,
                         "skipped": len(self.failures.failed), "skipped_examples": self.failures.failed[:5]}}

    def finish(self) -> dict:
        acc = self.accelerator
        acc.wait_for_everyone()
        written = {}
        if acc.is_main_process:
            if self.cfg.task == "motiondirector":  # leave both LoRAs at full scale for export / validation
                for name in self.tm.lora_adapters.values():
                    set_lora_scale(self.raw_unet, name, 1.0)
            with self.ema.applied() if self.ema is not None else nullcontext():
                written = save_outputs(self.tm, self.raw_unet, self.cfg, self.out, self.training_metadata())
                if self.cfg.validation.prompts and not self.is_2d:
                    self.validate()
            if self.tb is not None:
                self.tb.close()
            print("wrote " + ", ".join(f"{k}: {v}" for k, v in written.items()), flush=True)
        acc.wait_for_everyone()
        return {"steps": self.step, "losses": self.losses, "outputs": written, "memory": self.memory}

    @torch.no_grad()
    def validate(self) -> list[Path]:
        """GIF clips of the validation prompts through the AnimateDiff pipeline (main process only)."""
        if not self.accelerator.is_main_process:
            return []

        unet = self.raw_unet
        unet.eval()
        try:
            with self.accelerator.autocast():
                paths, motion = render_clips(self.tm, unet, self.cfg.validation,
                                             self.out / "validation", self.step)
        finally:
            unet.train()
        for i, m in enumerate(motion):
            if self.tb is not None:
                self.tb.add_scalar(f"validation/motion_{i}", m, self.step)
            if m < 1e-3:
                log.warning("validation clip %d is (almost) static: mean frame difference %.2e", i, m)
        return paths


def train(cfg: TrainConfig, resume: str | None = None) -> dict:
    """Train ``cfg`` (optionally resuming: ``"latest"`` or a checkpoint folder) and return a summary."""
    if cfg.task == "vae":

        trainer = AutoencoderTrainer(cfg, resume=resume)
        return trainer.finish() if trainer.step >= cfg.run.max_steps else trainer.run()
    trainer = Trainer(cfg, resume=resume)
    if math.isfinite(cfg.run.max_steps) and trainer.step >= cfg.run.max_steps:
        return trainer.finish()
    return trainer.run()
