"""Checking what a page or an API client sends, before anything touches a model.

Every error names the field as the page labels it, what was expected and what was found.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

from motion_adapters.app import config as C
from motion_adapters.clips.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from motion_adapters.errors import MotionAdapterError
from motion_adapters.inference.schedulers import canonical_name

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


class BadRequest(MotionAdapterError):
    """An input value is out of range or of the wrong type."""


def as_int(label: str, value, lo: int, hi: int) -> int:
    try:
        ok = float(value) == int(float(value))
        v = int(float(value))
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise BadRequest(f"{label}: expected a whole number, found {value!r}")
    if not lo <= v <= hi:
        raise BadRequest(f"{label}: expected a whole number from {lo} to {hi}, found {v}")
    return v


def as_float(label: str, value, lo: float, hi: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{label}: expected a number, found {value!r}") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise BadRequest(f"{label}: expected a number from {lo:g} to {hi:g}, found {value!r}")
    return v


def as_text(label: str, value, limit: int = C.MAX_PROMPT_CHARS, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise BadRequest(f"{label}: expected text, found {type(value).__name__}")
    if len(value) > limit:
        raise BadRequest(f"{label}: expected at most {limit} characters, found {len(value)}")
    if required and not value.strip():
        raise BadRequest(f"{label}: expected some text, found none")
    return value.strip()


def as_name(label: str, value: str | None, default: str) -> str:
    """A file or folder name chosen by the user: letters, digits, ``.``, ``_``, ``-``; no paths."""
    value = (value or "").strip() or default
    if not _NAME.match(value) or ".." in value:
        raise BadRequest(f"{label}: expected a plain name (letters, digits, '.', '_', '-'; at most 80; no "
                         f"folders), found {value[:100]!r}")
    return value


def parse_prompt(text: str) -> str | list[str]:
    """One prompt, or prompt travel when the lines look like ``0: a bud`` / ``16: a rose``."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1 and re.match(r"^\d+\s*:", lines[0]):
        return lines
    return " ".join(lines)


@dataclass
class GenerateRequest:
    """A generation as the Generate tab (or ``/generate``) asks for it; :meth:`checked` validates it."""

    base: str
    motion: str
    prompt: str
    loras: list[tuple[str, float]] = field(default_factory=list)   # (display name, weight); "" = empty slot
    negative_prompt: str = ""
    frames: int = 8
    width: int = 32
    height: int = 32
    steps: int = 25
    guidance: float = 4.0
    seed: int = -1                     # -1: a new random seed
    scheduler: str = "ddim"
    context_length: int | None = None  # None / 0: automatic (windows only beyond the module's frame cap)
    context_overlap: int | None = None  # None / -1: a quarter of the context length
    free_init: int = 0
    motion_strength: float = 1.0
    fps: float = 8.0
    fmt: str = "mp4"

    def checked(self) -> GenerateRequest:
        prompt = as_text("Prompt", self.prompt, required=True)
        loras = []
        for i, (name, weight) in enumerate(self.loras, 1):
            if name in (None, "", "none"):
                continue
            loras.append((name, as_float(f"LoRA {i} weight", weight, -C.MAX_LORA_WEIGHT, C.MAX_LORA_WEIGHT)))
        names = [n for n, _ in loras]
        twice = sorted(n for n in names if names.count(n) > 1)
        if twice:
            raise BadRequest(f"LoRAs: expected each LoRA once, found {twice[0]!r} twice")
        width = as_int("Width", self.width, 8, C.MAX_SIZE)
        height = as_int("Height", self.height, 8, C.MAX_SIZE)
        for label, v in (("Width", width), ("Height", height)):
            if v % 8:
                raise BadRequest(f"{label}: expected a multiple of 8 (the VAE downsamples by 8), found {v}")
        frames = as_int("Frames", self.frames, 1, C.MAX_FRAMES)
        ctx = overlap = None
        if self.context_length not in (None, "", 0):
            ctx = as_int("Context length", self.context_length, 2, C.MAX_FRAMES)
        if self.context_overlap not in (None, "", -1):
            overlap = as_int("Context overlap", self.context_overlap, 0, C.MAX_FRAMES)
        try:
            scheduler = canonical_name(str(self.scheduler))
        except MotionAdapterError as e:
            raise BadRequest(f"Scheduler: {str(e).split(': ', 1)[-1]}") from None
        fmt = str(self.fmt).lower().lstrip(".")
        if fmt not in C.FORMATS:
            raise BadRequest(f"Format: expected one of {', '.join(C.FORMATS)}, found {self.fmt!r}")
        seed = as_int("Seed", self.seed, -1, C.MAX_SEED)
        return GenerateRequest(
            base=self.base, motion=self.motion, prompt=prompt, loras=loras,
            negative_prompt=as_text("Negative prompt", self.negative_prompt), frames=frames, width=width,
            height=height, steps=as_int("Steps", self.steps, 1, C.MAX_STEPS),
            guidance=as_float("Guidance", self.guidance, 0.0, C.MAX_GUIDANCE), seed=seed, scheduler=scheduler,
            context_length=ctx, context_overlap=overlap,
            free_init=as_int("FreeInit", self.free_init, 0, C.MAX_FREE_INIT),
            motion_strength=as_float("Motion strength", self.motion_strength, 0.0, C.MAX_MOTION_STRENGTH),
            fps=as_float("FPS", self.fps, 1.0, C.MAX_FPS), fmt=fmt)

    def resolved_seed(self) -> int:
        return self.seed if self.seed >= 0 else int.from_bytes(os.urandom(4), "little") % (2**31)


TRAIN_TASKS = {  # preset -> what it writes (the library kind the result appears under)
    "motion_lora": "MotionLoRA (temporal LoRA on a frozen motion module)",
    "motiondirector": "MotionDirector (temporal + spatial LoRA, appearance-debiased)",
    "spatial_lora": "spatial LoRA (style / domain adapter, single frames)",
    "motion": "new motion module (long: thousands of clips)",
}


@dataclass
class TrainRequest:
    """A training run as the Train tab (or ``/train_start``) asks for it."""

    preset: str
    base: str
    motion: str
    name: str = ""
    clips: list[str] = field(default_factory=list)   # uploaded files (temporary paths from gradio)
    captions: str = ""
    dataset: str = ""                                 # or a dataset folder from the library
    steps: int = 500
    lr: float = 1e-4
    rank: int = 16
    frames: int = 16
    stride: int = 4
    resolution: int = 256
    batch_size: int = 1
    use_8bit: bool = True
    gradient_checkpointing: bool = True
    sample_prompt: str = ""
    sample_every: int = 0
    sample_steps: int = 25

    def checked(self, max_upload_bytes: int) -> TrainRequest:
        if self.preset not in TRAIN_TASKS:
            raise BadRequest(f"Preset: expected one of {', '.join(TRAIN_TASKS)}, found {self.preset!r}")
        clips = [str(c) for c in (self.clips or []) if c]
        if clips and self.dataset:
            raise BadRequest("Data: expected uploaded clips or a dataset folder, found both")
        if not clips and not self.dataset:
            raise BadRequest("Data: expected uploaded clips or a dataset folder, found neither")
        if len(clips) > C.MAX_TRAIN_CLIPS:
            raise BadRequest(f"Clips: expected at most {C.MAX_TRAIN_CLIPS}, found {len(clips)}")
        allowed = VIDEO_SUFFIXES + (IMAGE_SUFFIXES if self.preset == "spatial_lora" else ())
        for c in clips:
            check_upload(c, allowed, max_upload_bytes, "Clips")
        captions = [ln.strip() for ln in as_text("Captions", self.captions, 200_000).splitlines() if ln.strip()]
        if clips and len(captions) not in (1, len(clips)):
            raise BadRequest(f"Captions: expected one line per clip ({len(clips)}) or one line for all, "
                             f"found {len(captions)}")
        if clips and not captions:
            raise BadRequest("Captions: expected one caption per clip (or one line for all), found none")
        resolution = as_int("Resolution", self.resolution, 8, C.MAX_SIZE)
        if resolution % 8:
            raise BadRequest(f"Resolution: expected a multiple of 8, found {resolution}")
        return TrainRequest(
            preset=self.preset, base=self.base, motion=self.motion,
            name=as_name("Name", self.name, "") if (self.name or "").strip() else "", clips=clips, captions="\n".join(captions), dataset=self.dataset,
            steps=as_int("Steps", self.steps, 1, C.MAX_TRAIN_STEPS), lr=as_float("Learning rate", self.lr, 1e-8, 1.0),
            rank=as_int("Rank", self.rank, 1, C.MAX_RANK), frames=as_int("Frames", self.frames, 1, C.MAX_FRAMES),
            stride=as_int("Stride", self.stride, 1, 64), resolution=resolution,
            batch_size=as_int("Batch size", self.batch_size, 1, 64), use_8bit=bool(self.use_8bit),
            gradient_checkpointing=bool(self.gradient_checkpointing),
            sample_prompt=as_text("Sample prompt", self.sample_prompt),
            sample_every=as_int("Sample every", self.sample_every, 0, C.MAX_TRAIN_STEPS),
            sample_steps=as_int("Sample steps", self.sample_steps, 1, C.MAX_STEPS))


def check_upload(path: str, suffixes: tuple[str, ...], max_bytes: int, label: str) -> None:
    """An uploaded file: it exists, has one of ``suffixes`` and is at most ``max_bytes``."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise BadRequest(f"{label}: expected an uploaded file, found nothing at the upload's temporary path")
    if p.suffix.lower() not in suffixes:
        raise BadRequest(f"{label}: expected {', '.join(suffixes)} files, found {p.name!r}")
    size = p.stat().st_size
    if size > max_bytes:
        raise BadRequest(f"{label}: expected files of at most {max_bytes / 2**20:.0f} MB (--max-upload-mb), "
                         f"found {p.name!r} with {size / 2**20:.1f} MB")
    if size == 0:
        raise BadRequest(f"{label}: expected a non-empty file, found {p.name!r} with 0 bytes")
