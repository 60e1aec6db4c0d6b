"""The shapes world's embedded models, registered into :mod:`motion_adapters.registry`.

The weights live in ``shapes/assets/`` (package data; ``$MOTION_ADAPTERS_TOY_DIR`` points elsewhere, e.g. a
test build) and are made by ``motion-adapters toy build``; ``manifest.json`` beside them records the build and
each model's generation defaults (size, frames, steps, guidance, fps).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from motion_adapters import registry

ENV_DIR = "MOTION_ADAPTERS_TOY_DIR"
MANIFEST = "manifest.json"
FAMILY = "shapes"
DEFAULT_BASE = "shapes-base"
DEFAULT_MOTION = "shapes-motion"
DEFAULT_SPARSECTRL = "shapes-rgb-sparsectrl"
BUILD_HINT = "Run `motion-adapters toy build` (about 70 min on 2 CPU cores) to train every shapes-world model."
#: generation defaults of the shapes world (overridden by the manifest of a build)
TOY_GENERATION = {"height": 32, "width": 32, "num_frames": 8, "num_inference_steps": 25, "guidance_scale": 4.0,
                  "fps": 8.0}


@dataclass(frozen=True)
class ShapesModel:
    name: str
    kind: str          # sd_checkpoint | motion_module | motion_lora | controlnet | sparsectrl
    file: str          # path inside the weights directory (a diffusers folder or a single file)
    description: str
    config: str | None = None  # the model whose folder describes this single-file base's architecture


MODELS: dict[str, ShapesModel] = {m.name: m for m in (
    ShapesModel("shapes-base", "sd_checkpoint", "shapes-base",
                "shapes-world text-to-image base (UNet + CLIP text encoder + 4x VAE), diffusers folder"),
    ShapesModel("shapes-navy", "sd_checkpoint", "shapes-navy.safetensors",
                "personalised checkpoint: the base finetuned DreamBooth-style on a dark navy background "
                "(single-file LDM)", config="shapes-base"),
    ShapesModel("shapes-paper", "sd_checkpoint", "shapes-paper.safetensors",
                "personalised checkpoint: the base finetuned on a paper-texture background (single-file LDM)",
                config="shapes-base"),
    ShapesModel("shapes-hq", "sd_checkpoint", "shapes-hq.safetensors",
                "VideoCrafter2-style spatial finetune of the base on shaded high-quality images "
                "(single-file LDM)", config="shapes-base"),
    ShapesModel("shapes-motion", "motion_module", "shapes-motion.safetensors",
                "motion module trained against the frozen shapes base (left/right/up/down)"),
    ShapesModel("shapes-zoom-lora", "motion_lora", "shapes-zoom-lora.safetensors",
                "MotionLoRA teaching 'zooming in' from 24 clips"),
    ShapesModel("shapes-silhouette-controlnet", "controlnet", "shapes-silhouette-controlnet.safetensors",
                "ControlNet steering the shapes base with object silhouettes (white on black; preprocessor "
                "'silhouette'), trained on frames of every motion and look"),
    ShapesModel("shapes-rgb-sparsectrl", "sparsectrl", "shapes-rgb-sparsectrl.safetensors",
                "RGB SparseCtrl encoder for the shapes base + motion module: pictures as keyframes (image to "
                "video: the first frame; first + last), trained on clips of every direction"),
)}


def toy_dir() -> Path:
    """Where the shapes-world weights live (``$MOTION_ADAPTERS_TOY_DIR`` or the package's ``assets/``)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "assets"


def manifest() -> dict:
    p = toy_dir() / MANIFEST
    return json.loads(p.read_text()) if p.exists() else {}


def generation_defaults(name: str | None = None) -> dict:
    """Generation defaults of a shapes model (from the manifest when built, else the shapes defaults)."""
    m = manifest()
    out = dict(TOY_GENERATION)
    out.update(m.get("generation", {}))
    if name:
        out.update(m.get("models", {}).get(name, {}).get("generation", {}))
    return out


def is_built() -> bool:
    """Whether every shapes model's weights are present."""
    return all((toy_dir() / m.file).exists() for m in MODELS.values())


def register() -> None:
    """Register every shapes model (the ``motion_adapters.models`` entry point)."""
    for m in MODELS.values():
        role = {DEFAULT_BASE: "base", DEFAULT_MOTION: "motion", DEFAULT_SPARSECTRL: "sparsectrl"}.get(m.name)
        registry.register(registry.RegisteredModel(
            name=m.name, kind=m.kind, locate=lambda f=m.file: toy_dir() / f, description=m.description,
            family=FAMILY, config=m.config, defaults=lambda n=m.name: generation_defaults(n), build_hint=BUILD_HINT),
            default_for=role)
