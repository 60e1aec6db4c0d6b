"""Atomic, resumable accelerate checkpoints: ``checkpoints/step-000123/`` appears complete or not at all.

Only the trainable parameters are written (not the frozen base): accelerate's save/load pre-hooks replace
the full model file with ``trainable.safetensors``. Optimizer, LR schedule, RNG states and the trainer state
(step, failure counts) are saved by ``accelerator.save_state``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from motion_adapters.errors import MotionAdapterError
from motion_adapters.files import apply_umask, atomic_file, disk_full_guard

STEP_RE = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"
TRAINABLE_FILE = "trainable.safetensors"


def register_hooks(accelerator, unet_ref: list, extra=None) -> None:
    """Save/load only ``requires_grad`` parameters of the UNet (``unet_ref[0]`` is the unwrapped model, or any
    module holding every trained part). ``extra`` (an object with ``state_dict()``/``load_state_dict()`` whose
    keys contain ``::``, e.g. an :class:`~motion_adapters.training.ema.EMA`) is saved in the same file."""

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            unet = unet_ref[0]
            tensors = {n: p.detach().cpu().contiguous() for n, p in unet.named_parameters() if p.requires_grad}
            if extra is not None:
                tensors.update(extra.state_dict())
            save_file(tensors, str(Path(output_dir) / TRAINABLE_FILE))
        while weights:
            weights.pop()

    def load_hook(models, input_dir):
        unet = unet_ref[0]
        tensors = load_file(str(Path(input_dir) / TRAINABLE_FILE))
        if extra is not None:
            extra.load_state_dict({k: v for k, v in tensors.items() if "::" in k})
        tensors = {k: v for k, v in tensors.items() if "::" not in k}
        params = dict(unet.named_parameters())
        missing = [n for n, p in params.items() if p.requires_grad and n not in tensors]
        if missing or set(tensors) - set(params):
            raise MotionAdapterError(f"{input_dir}: expected a checkpoint of this run's trainable parameters, "
                                     f"found {len(missing)} missing (first {missing[:1]}) — another task/config?")
        with torch.no_grad():
            for n, t in tensors.items():
                params[n].copy_(t)
        while models:
            models.pop()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` (those with a trainer state), oldest first."""
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = STEP_RE.match(p.name)
        if m and (p / STATE_FILE).exists():
            out.append((int(m.group(1)), p))
    return sorted(out)


def resolve_resume(resume: str | None, root: Path) -> Path | None:
    """``None`` → start fresh; ``"latest"`` → newest complete checkpoint (fresh if none); else a path."""
    if not resume:
        return None
    if resume == "latest":
        found = checkpoints(root)
        return found[-1][1] if found else None
    p = Path(resume)
    if not (p / STATE_FILE).exists():
        raise MotionAdapterError(f"--resume {resume}: expected a checkpoint folder with {STATE_FILE}, "
                                 f"found {'a folder without it' if p.exists() else 'nothing'}")
    return p


def save_checkpoint(accelerator, root: Path, step: int, state: dict, keep: int) -> Path:
    """Write to ``.tmp-step-N`` then rename to ``step-N`` (all processes call this). A full disk raises
    :class:`~motion_adapters.files.DiskFullError` naming the checkpoint, and the partial folder is removed."""
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    try:
        with disk_full_guard(final):
            if accelerator.is_main_process:
                if tmp.exists():
                    shutil.rmtree(tmp)
                tmp.mkdir(parents=True)
            accelerator.wait_for_everyone()
            accelerator.save_state(str(tmp))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, default=str))
                apply_umask(tmp)  # safetensors writes 0600 files whatever the umask says
                if final.exists():
                    shutil.rmtree(final)
                tmp.rename(final)
    except BaseException:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if accelerator.is_main_process:
        for _, old in checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def read_state(ckpt: Path) -> dict:
    return json.loads((ckpt / STATE_FILE).read_text())


def trim_log(path: Path, step: int) -> int:
    """Drop the records of ``log.jsonl`` after ``step`` (and a line cut short by a kill), so that a run going
    on from ``step`` logs each step once. Rewritten atomically; returns how many lines were dropped."""
    if not path.exists():
        return 0
    keep, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
            ok = int(rec["step"]) <= step
        except (ValueError, KeyError, TypeError):
            ok = False
        if ok:
            keep.append(line + "\n")
        else:
            dropped += 1
    if dropped:
        with atomic_file(path) as tmp:
            tmp.write_text("".join(keep))
    return dropped
