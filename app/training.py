"""Training from the studio: a dataset from uploads (or a library folder), a validated config from a preset, a
child process that writes into the first models directory, and what the page shows while it runs."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import shutil
import time
from pathlib import Path

import yaml

from motion_adapters.app.jobs import DeviceBusy, TrainingJob
from motion_adapters.app.models import BASE, DATASET, MOTION, NO_MOTION
from motion_adapters.app.requests import TRAIN_TASKS, BadRequest, TrainRequest
from motion_adapters.formats import ours
from motion_adapters.io import read_safetensors_metadata
from motion_adapters.registry import generation_defaults
from motion_adapters.training.config import load_config, resolve_config_path, yaml_load

log = logging.getLogger(__name__)
TRAINED_DIR = "trained"


def preset_values(preset: str) -> dict:
    return yaml_load(resolve_config_path(preset).read_text()) or {}


def train_defaults(preset: str, base_registered: str | None = None) -> dict:
    """The Train tab's defaults for a preset; an embedded base trains at its own registered size and frame count."""
    if preset not in TRAIN_TASKS:
        raise BadRequest(f"Preset: expected one of {', '.join(TRAIN_TASKS)}, found {preset!r}")
    v = preset_values(preset)
    data, run, optim, lora = (v.get(k, {}) for k in ("data", "run", "optim", "lora"))
    out = {"steps": int(run.get("max_steps", 500)), "lr": float(optim.get("lr", 1e-4)),
           "rank": int(lora.get("rank", 16)), "frames": int(data.get("num_frames", 16)),
           "stride": int(data.get("stride", 4)), "resolution": int(data.get("resolution", 256)), "batch_size": 1}
    if base_registered:

        g = generation_defaults(base_registered)
        out.update(frames=int(g["num_frames"]), resolution=int(g["height"]), stride=1, rank=8)
    return out


def bitsandbytes_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def start_training(studio, request: TrainRequest) -> TrainingJob:
    """Check the request, write the dataset and the config into ``MODELS_DIR/trained/NAME/`` and start."""
    req = request.checked(studio.cfg.max_upload_bytes)
    lib = studio.library
    base = lib.resolve(BASE, req.base)
    motion = None if req.motion in (NO_MOTION, "", None) else lib.resolve(MOTION, req.motion)
    if motion is None and req.preset != "motion":
        raise BadRequest(f"Motion module: the {req.preset} preset trains on top of a motion module; choose one, "
                         "found none")
    dataset = lib.resolve(DATASET, req.dataset) if req.dataset else None
    if studio.runner.running or studio.gate.owner is not None:
        raise DeviceBusy("the device is busy (" + (studio.gate.owner or "training") + "): try again when it is free")
    name = req.name or f"{req.preset.replace('_', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = lib.workspace / TRAINED_DIR / name
    if out.exists():
        raise BadRequest(f"Name: {name!r} exists already in {TRAINED_DIR}/; expected a new name")
    out.mkdir(parents=True)
    try:
        data_dir = dataset.path if dataset is not None else write_dataset(out / "data", req.clips, req.captions)
        values, notes = run_values(studio, req, base, motion, data_dir, out)

        cfg = load_config(req.preset, values=values)
        config_path = out / "studio-config.yaml"
        config_path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        job = TrainingJob(name=name, task=req.preset, out_dir=out, config_path=config_path,
                          total_steps=cfg.run.max_steps, notes=notes)
        return studio.runner.start(job, before_start=studio.park)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        studio.unpark()
        raise


def write_dataset(folder: Path, clips: list[str], captions: str) -> Path:
    """Copy uploaded clips to ``folder`` and write ``metadata.csv`` (one caption per clip, or one for all)."""
    folder.mkdir(parents=True)
    lines = captions.splitlines()
    rows = []
    for i, src in enumerate(clips):
        dst = folder / f"clip_{i:04d}{Path(src).suffix.lower()}"
        shutil.copyfile(src, dst)
        rows.append({"file_name": dst.name, "text": lines[i] if len(lines) > 1 else lines[0]})
    with open(folder / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file_name", "text"])
        w.writeheader()
        w.writerows(rows)
    return folder


def run_values(studio, req: TrainRequest, base, motion, data_dir: Path, out: Path) -> tuple[dict, list[str]]:
    """Config values over the preset, and notes on what was chosen for this machine."""
    import torch

    notes = []
    preset_run = preset_values(req.preset).get("run", {})
    device = studio.cfg.device or "auto"
    cuda = torch.cuda.is_available() and not device.startswith("cpu")
    mixed = preset_run.get("mixed_precision", "no") if cuda else "no"
    notes.append(f"device: {'CUDA' if cuda else 'CPU'}, mixed precision: {mixed}")
    optimizer = "adamw8bit" if req.use_8bit else "adamw"
    if req.use_8bit and not bitsandbytes_available():
        optimizer = "adamw"
        notes.append("8-bit AdamW asked for, but bitsandbytes is not installed: 32-bit AdamW instead "
                     "(pip install \"motion-adapters[train]\")")
    else:
        notes.append(f"optimizer: {'8-bit AdamW (bitsandbytes)' if req.use_8bit else 'AdamW (32-bit)'}")
    notes.append(f"gradient checkpointing: {'on' if req.gradient_checkpointing else 'off'}")
    guidance = 7.5
    if base.registered:

        guidance = float(generation_defaults(base.registered)["guidance_scale"])
    values = {
        "model": {"base": base.source, "motion_module": motion.source if motion else None},
        "data": {"path": str(data_dir), "num_frames": req.frames, "stride": req.stride,
                 "resolution": req.resolution},
        "lora": {"rank": req.rank},
        "optim": {"lr": req.lr, "optimizer": optimizer},
        "run": {"output_dir": str(out), "max_steps": req.steps, "batch_size": req.batch_size,
                "gradient_checkpointing": req.gradient_checkpointing, "mixed_precision": mixed,
                "device": "cuda" if cuda else "cpu",
                # the progress bar goes to train.log (one line per refresh: the page's Log box streams it)
                "progress": True, "tensorboard": False, "log_every": 1},
        "validation": {"prompts": [req.sample_prompt] if req.sample_prompt else [], "every": req.sample_every,
                       "num_frames": req.frames, "height": req.resolution, "width": req.resolution,
                       "steps": req.sample_steps, "guidance_scale": guidance},
    }
    return values, notes


def on_training_exit(studio, job: TrainingJob) -> None:
    """After the child exits: rescan (the result appears in the dropdowns) and give the GPU back to generation."""
    studio.library.scan()
    studio.unpark()


def snapshot(studio, job: TrainingJob | None) -> dict:
    """Everything the Train tab shows about a job, as plain data."""
    if job is None:
        return {"state": "idle"}
    state = job.state  # read once: "finished" means the outputs are in the library already (TrainingRunner)
    losses = job.losses()
    step = losses[-1][0] if losses else 0
    elapsed = job.elapsed()
    eta = elapsed / step * (job.total_steps - step) if step and state == "running" else None
    outputs = [p.resolve() for p in job.outputs()] if state == "finished" else []
    names = [e.name for e in studio.library.entries() if e.path in outputs]
    return {"name": job.name, "task": job.task, "state": state, "step": step, "total": job.total_steps,
            "loss": losses[-1][1] if losses else None, "losses": losses, "elapsed": elapsed, "eta": eta,
            "samples": [str(p) for p in job.samples()], "outputs": names, "notes": list(job.notes),
            "used": used_settings(job) if state == "finished" else None,
            "log": job.log_tail(), "returncode": job.returncode if state != "running" else None}


def used_settings(job: TrainingJob) -> dict | None:
    """What the trainer actually ran with (recorded in the adapter's header): optimizer, checkpointing, precision."""

    for f in job.outputs():
        if f.is_file():
            try:
                meta = ours.parse_metadata(read_safetensors_metadata(f))
                training = meta.get("training") or {}
                if isinstance(training, str):
                    training = json.loads(training)
                return training.get("memory")
            except Exception:  # a file of another layout: nothing recorded
                continue
    return None
