"""Embedded model registry: short names (``shapes-base``, ``shapes-motion`` …) for the shipped shapes-world
models, usable wherever a path is (``--base``, ``--motion``, ``--lora``, ``VideoGenerator``, training configs).

The weights live in ``motion_adapters/assets/toy/`` (package data; ``MOTION_ADAPTERS_TOY_DIR`` points
elsewhere, e.g. a test build) and are made by ``motion-adapters toy build``; ``manifest.json`` beside them
records the build and each model's generation defaults (size, frames, steps, guidance, fps).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import MotionAdapterError

ENV_DIR = "MOTION_ADAPTERS_TOY_DIR"
MANIFEST = "manifest.json"
DEFAULT_BASE = "shapes-base"
DEFAULT_MOTION = "shapes-motion"
#: generation defaults of the shapes world (overridden by the manifest of a build)
TOY_GENERATION = {"height": 32, "width": 32, "num_frames": 8, "num_inference_steps": 25, "guidance_scale": 4.0,
                  "fps": 8.0}


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    kind: str          # sd_checkpoint | motion_module | motion_lora
    file: str          # path inside the toy directory (a diffusers folder or a single file)
    description: str
    config: str | None = None  # registered name whose folder describes this single-file base's architecture


MODELS: dict[str, RegisteredModel] = {m.name: m for m in (
    RegisteredModel("shapes-base", "sd_checkpoint", "shapes-base",
                    "shapes-world text-to-image base (UNet + CLIP text encoder + 4x VAE), diffusers folder"),
    RegisteredModel("shapes-navy", "sd_checkpoint", "shapes-navy.safetensors",
                    "personalised checkpoint: the base finetuned DreamBooth-style on a dark navy background "
                    "(single-file LDM)", config="shapes-base"),
    RegisteredModel("shapes-paper", "sd_checkpoint", "shapes-paper.safetensors",
                    "personalised checkpoint: the base finetuned on a paper-texture background (single-file LDM)",
                    config="shapes-base"),
    RegisteredModel("shapes-hq", "sd_checkpoint", "shapes-hq.safetensors",
                    "VideoCrafter2-style spatial finetune of the base on shaded high-quality images "
                    "(single-file LDM)", config="shapes-base"),
    RegisteredModel("shapes-motion", "motion_module", "shapes-motion.safetensors",
                    "motion module trained against the frozen shapes base (left/right/up/down)"),
    RegisteredModel("shapes-zoom-lora", "motion_lora", "shapes-zoom-lora.safetensors",
                    "MotionLoRA teaching 'zooming in' from 24 clips"),
)}


def toy_dir() -> Path:
    """Where the shapes-world weights live (``$MOTION_ADAPTERS_TOY_DIR`` or the package's assets/toy)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "assets" / "toy"


def is_registered(name: str | Path) -> bool:
    return isinstance(name, str) and name in MODELS


def model_path(name: str, check: bool = True) -> Path:
    """The file or folder of a registered model; a clear error when it has not been built yet."""
    entry = MODELS[name]
    p = toy_dir() / entry.file
    if check and not p.exists():
        raise MotionAdapterError(
            f"{name}: the embedded model is not built yet (expected {p}). Run `motion-adapters toy build` "
            "(about 60 min on 2 CPU cores) to train every shapes-world model, or pass a path instead.")
    return p


def base_config_for(src: str | Path) -> Path | None:
    """The diffusers folder describing a registered single-file base (its architecture and tokenizer)."""
    if is_registered(str(src)) and MODELS[str(src)].config:
        return model_path(MODELS[str(src)].config)
    return None


def is_available(name: str) -> bool:
    return model_path(name, check=False).exists()


def manifest() -> dict:
    p = toy_dir() / MANIFEST
    return json.loads(p.read_text()) if p.exists() else {}


def generation_defaults(name: str | None = None) -> dict:
    """Generation defaults for a registered model (from the manifest when built, else the shapes defaults)."""
    m = manifest()
    out = dict(TOY_GENERATION)
    out.update(m.get("generation", {}))
    if name:
        out.update(m.get("models", {}).get(name, {}).get("generation", {}))
    return out


def _size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else 0


def list_models() -> list[dict]:
    """One row per registered model: name, kind, present, size in bytes, path, description."""
    rows = []
    for m in MODELS.values():
        p = model_path(m.name, check=False)
        rows.append({"name": m.name, "kind": m.kind, "present": p.exists(), "size_bytes": _size(p),
                     "path": str(p), "description": m.description})
    return rows
