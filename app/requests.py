"""Checking what a page or an API client sends, before anything touches a model.

Every error names the field as the page labels it, what was expected and what was found.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from motion_adapters.app import config as C
from motion_adapters.clips.controls import PREPROCESSORS
from motion_adapters.clips.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from motion_adapters.errors import MotionAdapterError
from motion_adapters.inference.controlnets import check_control_numbers
from motion_adapters.inference.options import (
    GenerateOptions,
    OptionLimits,
    check_fps,
    check_loras,
    finite_number,
    whole_number,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
# the generation options as the Generate tab labels them, and the server's bounds on them
LABELS = {"prompt": "Prompt", "negative_prompt": "Negative prompt", "num_frames": "Frames", "height": "Height",
          "width": "Width", "num_inference_steps": "Steps", "guidance_scale": "Guidance", "seed": "Seed",
          "scheduler": "Scheduler", "context_length": "Context length", "context_overlap": "Context overlap",
          "free_init_iters": "FreeInit", "motion_strength": "Motion strength", "fps": "FPS", "lora": "LoRA",
          "video": "Video", "strength": "Strength", "controlnets": "ControlNet", "image": "First frame",
          "keyframes": "Last frame", "sparsectrl": "SparseCtrl", "ip_adapter": "IP-Adapter", "ip_image": "IP image",
          "ip_scale": "IP scale"}
# how a memory refusal names what would help: the studio's start option; no decode chunk or skip in the page
MEMORY_LABELS = {**LABELS, "low_vram": "starting the studio with --low-vram", "decode_chunk_size": "",
                 "skip_memory_check": ""}
LIMITS = OptionLimits(max_frames=C.MAX_FRAMES, max_size=C.MAX_SIZE, max_steps=C.MAX_STEPS,
                      max_guidance=C.MAX_GUIDANCE, max_motion_strength=C.MAX_MOTION_STRENGTH,
                      max_free_init=C.MAX_FREE_INIT, max_seed=C.MAX_SEED, max_lora_weight=C.MAX_LORA_WEIGHT,
                      max_prompt_chars=C.MAX_PROMPT_CHARS, require_prompt=True, min_fps=1.0, max_fps=C.MAX_FPS)


#: where a ControlNet slot's maps come from: a preprocessor applied to the uploaded clip, or maps uploaded with it
MAPS = "maps"
CONTROL_SOURCES = (*PREPROCESSORS, MAPS)
VIDEO_INPUTS = VIDEO_SUFFIXES                   # the clip of video to video
MAPS_INPUTS = VIDEO_SUFFIXES + IMAGE_SUFFIXES   # control maps: a video, or one image for every frame
IMAGE_INPUTS = IMAGE_SUFFIXES                   # the first / last frame and the IP-Adapter's image prompt


class BadRequest(MotionAdapterError):
    """An input value is out of range or of the wrong type."""


@contextmanager
def bad_request() -> Iterator[None]:
    """Report the option checks' errors as :class:`BadRequest` (the page shows them; the server keeps serving)."""
    try:
        yield
    except BadRequest:
        raise
    except MotionAdapterError as e:
        raise BadRequest(str(e)) from None


def as_int(label: str, value, lo: int, hi: int) -> int:
    with bad_request():
        return whole_number(label, value, lo, hi)


def as_float(label: str, value, lo: float, hi: float) -> float:
    with bad_request():
        return finite_number(label, value, lo, hi)


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


@dataclass
class CheckedControl:
    """A checked ControlNet slot: maps from ``preprocessor`` applied to the clip, or the uploaded ``maps``."""

    slot: int                  # the slot's number on the page (errors and notes name it)
    name: str                  # display name in the library
    scale: float
    start: float
    end: float
    preprocessor: str | None
    maps: str | None


@dataclass
class ControlSlot:
    """One ControlNet slot of the Generate tab; ``name`` ``""``: the slot is empty (everything else ignored)."""

    name: str = ""
    scale: float = 1.0
    source: str = "canny"      # one of CONTROL_SOURCES: a preprocessor of the clip, or "maps"
    maps: str | None = None    # uploaded control maps (source "maps")
    start: float = 0.0
    end: float = 1.0

    def checked(self, slot: int, has_video: bool, max_upload_bytes: float) -> CheckedControl:
        label = f"{LABELS['controlnets']} {slot}"
        with bad_request():
            scale, start, end = check_control_numbers(label, self.scale, self.start, self.end, C.MAX_CONTROL_SCALE)
        if self.source not in CONTROL_SOURCES:
            raise BadRequest(f"{label} control: expected one of {', '.join(CONTROL_SOURCES)}, found {self.source!r}")
        if self.source == MAPS:
            if not self.maps:
                raise BadRequest(f"{label} maps: expected uploaded control maps (a video or an image), found none")
            check_upload(self.maps, MAPS_INPUTS, max_upload_bytes, f"{label} maps")
        elif not has_video:
            raise BadRequest(f"{label} control: expected a {LABELS['video']} to compute {self.source} maps from (or "
                             f"uploaded maps), found no {LABELS['video']}")
        return CheckedControl(slot, str(self.name), scale, start, end,
                              None if self.source == MAPS else self.source, self.maps if self.source == MAPS else None)


def check_controls(slots: list[ControlSlot], has_video: bool, max_upload_bytes: float) -> list[CheckedControl]:
    """The filled slots, checked; each ControlNet at most once."""
    out: list[CheckedControl] = []
    for i, slot in enumerate(slots, 1):
        if not slot.name:
            continue
        checked = slot.checked(i, has_video, max_upload_bytes)
        first = next((c for c in out if c.name == checked.name), None)
        if first is not None:
            raise BadRequest(f"{LABELS['controlnets']} {i}: expected each ControlNet once, found {checked.name!r} "
                             f"in {LABELS['controlnets']} {first.slot} too")
        out.append(checked)
    return out


@dataclass
class ImageInput:
    """The Generate tab's image input: first frame, optional last frame, SparseCtrl encoder (``""``: the base's
    default), IP-Adapter (``""``: none), its image prompt and scale."""

    first: str | None = None
    last: str | None = None
    sparsectrl: str = ""
    ip_adapter: str = ""
    ip_image: str | None = None
    ip_scale: float = C.DEFAULT_IP_SCALE

    @property
    def uploads(self) -> list[str]:
        return [p for p in (self.first, self.last, self.ip_image) if p]

    def checked(self, has_video: bool, max_upload_bytes: float) -> ImageInput:
        """Each upload readable, and every piece with what it needs: a last frame a first frame, a SparseCtrl
        encoder a first frame, an IP image an IP-Adapter and the other way round; no clip beside a first frame."""
        first, last, ip_image = self.first or None, self.last or None, self.ip_image or None
        sparsectrl = as_text(LABELS["sparsectrl"], self.sparsectrl, 1000)
        ip_adapter = as_text(LABELS["ip_adapter"], self.ip_adapter, 1000)
        if first is not None:
            check_image(first, max_upload_bytes, LABELS["image"])
            if has_video:
                raise BadRequest(f"{LABELS['image']}: expected a {LABELS['video']} (video to video) or a "
                                 f"{LABELS['image']}, found both")
        if last is not None:
            if first is None:
                raise BadRequest(f"{LABELS['keyframes']}: expected a {LABELS['image']} to go with it, found none")
            check_image(last, max_upload_bytes, LABELS["keyframes"])
        if sparsectrl and first is None:
            raise BadRequest(f"{LABELS['sparsectrl']}: expected a {LABELS['image']} for the encoder to hold, "
                             "found none")
        if ip_image is not None and not ip_adapter:
            raise BadRequest(f"{LABELS['ip_image']}: expected an {LABELS['ip_adapter']} to read it, found none "
                             f"(pick one in {LABELS['ip_adapter']})")
        if ip_adapter and ip_image is None:
            raise BadRequest(f"{LABELS['ip_adapter']}: expected an {LABELS['ip_image']} to steer by, found none")
        if ip_image is not None:
            check_image(ip_image, max_upload_bytes, LABELS["ip_image"])
        scale = as_float(LABELS["ip_scale"], self.ip_scale, 0.0, C.MAX_IP_SCALE)
        return ImageInput(first, last, sparsectrl, ip_adapter, ip_image, scale)


@dataclass
class CheckedGeneration:
    """A checked generation request: the generator's options and what the studio does around them."""

    base: str
    motion: str
    loras: list[tuple[str, float]]   # (display name, weight), empty slots dropped
    options: GenerateOptions         # seed drawn when the page asked for a random one; strength only with a video
    fps: float
    fmt: str
    video: str | None = None         # the uploaded clip of video to video
    controlnets: list[CheckedControl] = field(default_factory=list)
    images: ImageInput = field(default_factory=ImageInput)

    @property
    def uploads(self) -> list[str]:
        """The uploaded files the generation reads."""
        return [p for p in (self.video, *(c.maps for c in self.controlnets)) if p] + self.images.uploads


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
    video: str | None = None           # an uploaded clip: video to video
    strength: float = C.DEFAULT_STRENGTH   # used only with a video or a first frame
    controlnets: list[ControlSlot] = field(default_factory=list)
    images: ImageInput = field(default_factory=ImageInput)

    def checked(self, max_upload_bytes: float = math.inf) -> CheckedGeneration:
        """Every field checked by the generation options' own rules, within the server's :data:`LIMITS`;
        uploads are at most ``max_upload_bytes``."""
        video = self.video or None
        if video is not None:
            check_upload(video, VIDEO_INPUTS, max_upload_bytes, LABELS["video"])
        controls = check_controls(self.controlnets, video is not None, max_upload_bytes)
        images = self.images.checked(video is not None, max_upload_bytes)
        starts_from = video is not None or images.first is not None
        with bad_request():
            options = GenerateOptions.check(
                prompt=self.prompt, negative_prompt=self.negative_prompt, num_frames=self.frames,
                height=self.height, width=self.width, num_inference_steps=self.steps, guidance_scale=self.guidance,
                seed=None if self.seed in (-1, "-1") else self.seed, scheduler=self.scheduler,
                context_length=None if self.context_length in (None, "", 0) else self.context_length,
                context_overlap=None if self.context_overlap in (None, "", -1) else self.context_overlap,
                free_init_iters=self.free_init, motion_strength=self.motion_strength,
                strength=self.strength if starts_from else None, labels=LABELS, limits=LIMITS)
            loras = check_loras(self.loras, labels=LABELS, limits=LIMITS)
            fps = check_fps(self.fps, labels=LABELS, limits=LIMITS)
        fmt = str(self.fmt).lower().lstrip(".")
        if fmt not in C.FORMATS:
            raise BadRequest(f"Format: expected one of {', '.join(C.FORMATS)}, found {self.fmt!r}")
        if images.last is not None and options.num_frames < 2:
            raise BadRequest(f"{LABELS['keyframes']}: expected {LABELS['num_frames']} of at least 2 (it is the last "
                             f"of them), found {options.num_frames}")
        return CheckedGeneration(base=self.base, motion=self.motion, loras=loras, options=options, fps=fps, fmt=fmt,
                                 video=video, controlnets=controls, images=images)


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


def check_upload(path: str, suffixes: tuple[str, ...], max_bytes: float, label: str) -> None:
    """An uploaded file: it exists, has one of ``suffixes`` and is at most ``max_bytes``."""
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


def check_image(path: str, max_bytes: float, label: str) -> None:
    """An uploaded picture: an upload (:func:`check_upload`) that an image reader opens."""
    check_upload(path, IMAGE_INPUTS, max_bytes, label)
    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BadRequest(f"{label}: expected a readable picture, found {Path(path).name!r}, which is not one "
                         f"({type(e).__name__})") from None
