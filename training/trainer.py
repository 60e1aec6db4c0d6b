"""The one training loop on ``accelerate``: one YAML config, any task, 1…N processes, resumable.

The loop (seeding, the data stream, optimizer and LR schedule, gradient accumulation, clipping, EMA, atomic
checkpoints and exact resume, ``log.jsonl`` / TensorBoard, the progress bar, the final export) is the same for
every task; what differs per task (the models, the loss passes of a micro-batch, what is written at the end)
is a :class:`~motion_adapters.training.task.Task`: :class:`~motion_adapters.training.diffusion.DiffusionTask`,
for ``vae`` :class:`~motion_adapters.training.autoencoder.AutoencoderTask`, for ``controlnet``
:class:`~motion_adapters.training.controlnet.ControlNetTask`, for ``sparsectrl``
:class:`~motion_adapters.training.sparsectrl.SparseCtrlTask`. Each loss pass of a
micro-batch is back-propagated separately (``no_sync`` for all but the last, so DDP reduces once).
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from motion_adapters.files import atomic_file, disk_full_guard
from motion_adapters.training.accelerator import make_accelerator
from motion_adapters.training.autoencoder import AutoencoderTask
from motion_adapters.training.checkpoint import (
    read_state,
    register_hooks,
    resolve_resume,
    save_checkpoint,
    trim_log,
)
from motion_adapters.training.config import TrainConfig
from motion_adapters.training.controlnet import ControlNetTask
from motion_adapters.training.data import FailureCounter, StreamSampler, VideoDataset, collate
from motion_adapters.training.diffusion import DiffusionTask
from motion_adapters.training.ema import EMA
from motion_adapters.training.model import TrainModels
from motion_adapters.training.optim import build_lr_scheduler, build_optimizer
from motion_adapters.training.sparsectrl import SparseCtrlTask
from motion_adapters.training.task import Task

log = logging.getLogger(__name__)


def make_task(cfg: TrainConfig, accelerator) -> Task:
    """The task object of ``cfg.task`` (its models built on the accelerator's device)."""
    if cfg.task == "vae":
        return AutoencoderTask(cfg, accelerator)
    if cfg.task == "controlnet":
        return ControlNetTask(cfg, accelerator)
    if cfg.task == "sparsectrl":
        return SparseCtrlTask(cfg, accelerator)
    return DiffusionTask(cfg, accelerator)


def control_of(cfg: TrainConfig) -> str | None:
    """The map preprocessor whose maps every data item carries (controlnet, scribble sparsectrl), else None."""
    if cfg.task == "controlnet":
        return cfg.controlnet.preprocessor.strip().lower()
    if cfg.task == "sparsectrl" and cfg.sparsectrl.kind == "scribble":
        return cfg.sparsectrl.preprocessor.strip().lower()
    return None


class Trainer:
    """Holds the run state; ``run()`` trains ``self.task`` to ``run.max_steps`` and writes what it trained."""

    def __init__(self, cfg: TrainConfig, resume: str | None = None):
        self.cfg = cfg
        self.out = Path(cfg.run.output_dir)
        self.accelerator = acc = make_accelerator(cfg)
        set_seed(cfg.run.seed)
        self.task = make_task(cfg, acc)
        self.memory = self.task.memory
        self.dataset = VideoDataset(cfg.data, cfg.run.seed, control=control_of(cfg))
        self.failures = FailureCounter(cfg.data.max_failed_fraction, self.dataset.folder)
        groups = self.task.param_groups()
        self.trainable = [p for g in groups for p in g["params"]]
        optimizer = build_optimizer(groups, cfg.optim, self.memory["adamw8bit"])
        lr_sched = build_lr_scheduler(optimizer, cfg.optim, cfg.run.max_steps, acc.num_processes)
        total = cfg.run.max_steps * cfg.run.grad_accum * cfg.run.batch_size * acc.num_processes
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=cfg.run.batch_size, sampler=StreamSampler(total),
                                             collate_fn=collate, num_workers=cfg.data.num_workers)
        self.model, self.optimizer, self.loader, self.lr_sched = acc.prepare(self.task.model, optimizer, loader,
                                                                             lr_sched)
        self.task.prepared(self.model, acc)
        self.ema = None
        if cfg.optim.ema_decay:
            self.ema = EMA({n: p for n, p in self.task.trained.named_parameters() if p.requires_grad},
                           cfg.optim.ema_decay)
        register_hooks(acc, [self.task.trained], extra=self.ema)
        self.step = 0
        self.grad_norm: float | None = None
        self.losses: list[float] = []
        self.ckpt_root = self.out / "checkpoints"
        ckpt = resolve_resume(resume, self.ckpt_root)
        if ckpt is not None:
            acc.load_state(str(ckpt))
            st = read_state(ckpt)
            self.step = int(st["step"])
            self.losses = list(st.get("losses", []))
            self.failures.load_state(st)
            if acc.is_main_process:
                print(f"resumed from {ckpt} at step {self.step}", flush=True)
        self.tb = self._tensorboard()

    def _tensorboard(self):
        if not (self.cfg.run.tensorboard and self.accelerator.is_main_process):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("tensorboard is not installed; logging to log.jsonl only")
            return None
        return SummaryWriter(str(self.out / "logs"), purge_step=self.step + 1)  # drop events after a resume point

    @property
    def tm(self) -> TrainModels | None:
        """The diffusion task's models (``None`` for task vae)."""
        return getattr(self.task, "tm", None)

    # ----------------------------------------------------------------------------------------------- loop
    def train_step(self, items: list[dict]) -> float:
        """One micro-batch: every loss pass back-propagated, then (on a sync step) clip, step, EMA.
        Returns the summed loss of the passes."""
        acc = self.accelerator
        total = 0.0
        with torch.enable_grad(), acc.accumulate(self.model):
            passes = self.task.passes(items, self.step)
            for k, (fn, weight) in enumerate(passes):
                last = k == len(passes) - 1
                with nullcontext() if last else acc.no_sync(self.model):
                    loss = fn() * weight
                    acc.backward(loss)
                total += float(loss.detach())
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
        return {"step": self.step, "losses": self.losses, **self.failures.state(), "task": self.cfg.task}

    def run(self) -> dict:
        """Train to ``run.max_steps`` (from the resumed step), then :meth:`finish`.

        The logged loss of a step is the sum over its micro-batches (and passes) of the undivided losses,
        averaged over processes."""
        acc, cfg = self.accelerator, self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if acc.is_main_process:
            with atomic_file(self.out / "config.json") as tmp:
                tmp.write_text(json.dumps(cfg.to_dict(), indent=2))
            # a resumed run logs again the steps after its checkpoint: drop those of the killed run
            trim_log(self.out / "log.jsonl", self.step)
        skip = self.step * cfg.run.grad_accum
        loader = acc.skip_first_batches(self.loader, skip) if skip else self.loader
        bar = None
        if cfg.run.progress and acc.is_main_process:
            bar = tqdm(total=cfg.run.max_steps, initial=self.step, desc=f"train {cfg.task}", dynamic_ncols=True)
        acc_loss, t0 = 0.0, time.perf_counter()
        for items in loader:
            if self.step >= cfg.run.max_steps:
                break
            self.failures.add(items)
            acc_loss += self.train_step(items)
            if not acc.sync_gradients:
                continue
            self.step += 1
            loss = float(acc.reduce(torch.tensor(acc_loss, device=acc.device), reduction="mean"))
            self.losses.append(loss)
            acc_loss = 0.0
            self._log(loss, time.perf_counter() - t0, bar)
            t0 = time.perf_counter()
            if self.step % cfg.run.checkpoint_every == 0 and self.step < cfg.run.max_steps:
                path = save_checkpoint(acc, self.ckpt_root, self.step, self.state(), cfg.run.keep_checkpoints)
                if acc.is_main_process:
                    print(f"checkpoint saved: {path}", flush=True)
            if self._validates() and cfg.validation.every and self.step % cfg.validation.every == 0:
                self.validate()
        if bar is not None:
            bar.close()
        return self.finish()

    def _validates(self) -> bool:
        return bool(self.cfg.validation.prompts) and self.task.validates

    def _log(self, loss: float, seconds: float, bar) -> None:
        if not self.accelerator.is_main_process:
            return
        rec = {"step": self.step, "loss": loss, "lr": self.lr_sched.get_last_lr()[0], "grad_norm": self.grad_norm,
               "seconds": round(seconds, 4)}
        path = self.out / "log.jsonl"
        with disk_full_guard(path), open(path, "a") as f:
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
                         "files_tried": len(self.failures.tried), "skipped": len(self.failures.failed),
                         "skipped_examples": list(self.failures.failed.items())[:5]}}

    def finish(self) -> dict:
        """Export (the EMA weights when on) and the final validation, on the main process."""
        acc = self.accelerator
        acc.wait_for_everyone()
        written = {}
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            with self.ema.applied() if self.ema is not None else nullcontext(), disk_full_guard(self.out):
                written = self.task.export(self.out, self.training_metadata())
                if self._validates():
                    self.validate()
            if self.tb is not None:
                self.tb.close()
            print("wrote " + ", ".join(f"{k}: {v}" for k, v in written.items()), flush=True)
        acc.wait_for_everyone()
        return {"steps": self.step, "losses": self.losses, "outputs": written, "memory": self.memory}

    def validate(self) -> list[Path]:
        """The task's validation samples at the current step (main process only)."""
        if not self.accelerator.is_main_process:
            return []
        with disk_full_guard(self.out / "validation"):
            return self.task.validate(self.out, self.step, self.tb)


def train(cfg: TrainConfig, resume: str | None = None) -> dict:
    """Train ``cfg`` (optionally resuming: ``"latest"`` or a checkpoint folder) and return a summary."""
    trainer = Trainer(cfg, resume=resume)
    if math.isfinite(cfg.run.max_steps) and trainer.step >= cfg.run.max_steps:
        return trainer.finish()
    return trainer.run()
