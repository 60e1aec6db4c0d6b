"""The studio's state, without any web code: one ``VideoGenerator`` per process, swapped in place, the model
library, the device gate and the training runner. The tabs only translate between widgets and these calls.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from motion_adapters.app.config import PREVIEW_MIN_SIDE, StudioConfig
from motion_adapters.app.jobs import GENERATION, LOADING, TRAINING, DeviceGate, TrainingRunner
from motion_adapters.app.models import (
    BASE,
    CONTROLNET,
    IP_ADAPTER,
    LORA,
    MOTION,
    NO_MOTION,
    SPARSECTRL,
    Entry,
    ModelLibrary,
)
from motion_adapters.app.requests import (
    LABELS,
    MEMORY_LABELS,
    BadRequest,
    CheckedControl,
    CheckedGeneration,
    GenerateRequest,
    ImageInput,
)
from motion_adapters.app.training import on_training_exit
from motion_adapters.base import configs_from_folder, is_diffusers_folder, skeleton_config
from motion_adapters.clips.export import to_uint8, write_clip
from motion_adapters.errors import MotionAdapterError
from motion_adapters.inference.controlnets import ControlInput
from motion_adapters.inference.generator import VideoGenerator
from motion_adapters.registry import base_config_for, default_sparsectrl_for

log = logging.getLogger(__name__)
_ARCH_KEYS = ("block_out_channels", "layers_per_block", "cross_attention_dim", "attention_head_dim", "in_channels",
              "down_block_types", "up_block_types", "norm_num_groups")


@dataclass
class Clip:
    """A generated clip: the file to play in the page, the file to download, its recipe and what happened;
    ``maps``: the control maps the ControlNets followed, side by side in one clip (None without ControlNets)."""

    preview: Path
    download: Path
    recipe: dict
    notices: list[str]
    seconds: float
    maps: Path | None = None


class Studio:
    """Everything the web UI does, callable from Python (the tests drive it both ways)."""

    def __init__(self, cfg: StudioConfig):
        self.cfg = cfg
        cfg.output_dir.mkdir(parents=True, exist_ok=True)
        for d in cfg.models_dirs[:1]:
            d.mkdir(parents=True, exist_ok=True)
        self.library = ModelLibrary(cfg.models_dirs, embedded=cfg.embedded, skip=[cfg.output_dir])
        self.library.scan()
        self.gate = DeviceGate()
        self.gen = None                      # the VideoGenerator, built at the first generation
        self.loaded: dict = {"base": None, "motion": None, "loras": {}, "controlnets": []}  # names in the generator
        self._retired_builds = 0             # builds of generators replaced by a base of another architecture
        self._lock = threading.RLock()       # the generator's state (swaps and generation)
        self.generations = 0
        self._parked = False                 # pipeline moved to the CPU while training uses the GPU

        self.runner = TrainingRunner(self.gate, on_exit=lambda job: on_training_exit(self, job))

    # ------------------------------------------------------------------------------------------- status
    @property
    def builds(self) -> int:
        """How many times a pipeline was built in this process (1 after any number of in-place swaps)."""
        return self._retired_builds + (self.gen.builds if self.gen is not None else 0)

    def status(self) -> dict:
        gen = self.gen
        job = self.runner.job
        return {
            "builds": self.builds,
            "base": self.loaded["base"],
            "motion": self.loaded["motion"],
            "loras": dict(self.loaded["loras"]),
            "controlnets": list(self.loaded["controlnets"]),
            "sparsectrl": self._display(gen.sparsectrl) if gen is not None else None,
            "ip_adapter": self._display(gen.ip_adapter) if gen is not None else None,
            "device": str(gen.device) if gen is not None else (self.cfg.device or "auto"),
            "dtype": str(gen.dtype).replace("torch.", "") if gen is not None else (self.cfg.dtype or "auto"),
            "busy": self.gate.owner,
            "generations": self.generations,
            "training": None if job is None else {"name": job.name, "state": job.state},
        }

    def _display(self, source: str | None) -> str | None:
        """The library name of a model the generator holds (by its source), else the source itself."""
        if source is None:
            return None
        return next((e.name for e in self.library.entries() if e.source == str(source)), str(source))

    # -------------------------------------------------------------------------------------------- swaps
    def _entries(self, base: str, motion: str, loras: list[tuple[str, float]]):
        b = self.library.resolve(BASE, base)
        m = None if motion in (NO_MOTION, None) else self.library.resolve(MOTION, motion)
        ls = [(self.library.resolve(LORA, n), float(w)) for n, w in loras]
        return b, m, ls

    def select(self, base: str, motion: str, loras: list[tuple[str, float]] | None = None,
               controlnets: list[str] | None = None) -> list[str]:
        """Hot-swap to these models now (the dropdowns' change events); ``None``: the LoRAs / ControlNets loaded
        now. Before the first generation, or while training holds the device, the choice is only checked and
        applied at the next generation."""
        b, m, ls = self._entries(base, motion, loras if loras is not None else list(self.loaded["loras"].items()))
        cs = [self.library.resolve(CONTROLNET, n) for n in (controlnets if controlnets is not None
                                                              else self.loaded["controlnets"])]
        if self.gen is None:  # checked; loaded by the first generation
            return []
        if self.gate.owner == TRAINING:
            return ["a training job holds the device: the swap happens at the next generation"]
        with self.gate.hold(LOADING), self._lock:
            return self._ensure(b, m, ls, cs)

    def _ensure(self, base: Entry, motion: Entry | None, loras: list[tuple[Entry, float]],
                controlnets: list[Entry]) -> list[str]:
        """Make the generator hold exactly these models: in-place swaps; a new build only for the first
        generation or a base of another architecture."""
        notices: list[str] = []
        motion_name = motion.name if motion else NO_MOTION
        motion_src = motion.source if motion else None
        if self.gen is None:
            self.gen = self._build(base, motion_src)
            self.loaded.update(base=base.name, motion=motion_name, loras={}, controlnets=[])
        if base.name != self.loaded["base"]:
            if self._same_architecture(base):
                self.gen.load_base(base.source)
            else:
                old = self.gen
                try:
                    new = self._build(base, motion_src)
                except MotionAdapterError as build_error:
                    try:  # perhaps it fits after all (a single file is guessed to be SD1.5)
                        old.load_base(base.source)
                    except MotionAdapterError:
                        raise build_error from None
                    new = None
                if new is not None:
                    self._retired_builds += old.builds
                    self.gen = new
                    del old
                    gc.collect()
                    self.loaded.update(motion=motion_name, loras={}, controlnets=[])
                    notices.append(f"{base.name} has another architecture than {self.loaded['base']}: the pipeline "
                                   "was rebuilt (in-place swaps need the same UNet layout)")
            self.loaded["base"] = base.name
        if motion_name != self.loaded["motion"]:
            self.gen.load_motion(motion_src)
            self.loaded["motion"] = motion_name
        wanted = {e.name: w for e, w in loras}
        if wanted != self.loaded["loras"]:
            self.gen.set_loras({e.source: w for e, w in loras})
            self.loaded["loras"] = wanted
        names = [e.name for e in controlnets]
        if names != self.loaded["controlnets"]:
            self.gen.set_controlnets([e.source for e in controlnets])
            notices += controlnet_notices(self.loaded["controlnets"], names)
            self.loaded["controlnets"] = names
        return notices

    def _build(self, base: Entry, motion_src: str | None):
        log.info("building the pipeline: %s + %s", base.name, motion_src or NO_MOTION)
        return VideoGenerator(base=base.source, motion=motion_src, device=self.cfg.device, dtype=self.cfg.dtype,
                              low_vram=self.cfg.low_vram)

    def _same_architecture(self, base: Entry) -> bool:
        try:
            incoming = base_unet_config(base)
        except Exception:  # unreadable config: let load_base report the file's problem
            return True
        current = self.gen.configs["unet"]
        return all(_norm(incoming.get(k)) == _norm(current.get(k)) for k in _ARCH_KEYS)

    # ---------------------------------------------------------------------------------------- generate
    def generate(self, request: GenerateRequest) -> Clip:
        """Validate, swap what changed, generate, and write the clip (with its recipe) to the output folder."""
        req = request.checked(self.cfg.max_upload_bytes)  # every option and upload, before any model is touched
        b, m, ls = self._entries(req.base, req.motion, req.loras)
        cs = [self.library.resolve(CONTROLNET, c.name) for c in req.controlnets]
        images = image_inputs(self.library, req.images, b, req.options.num_frames, req.controlnets)
        t0 = time.perf_counter()
        with self.gate.hold(GENERATION):
            with self._lock:
                notices = self._ensure(b, m, ls, cs)
                self._unload_unused(images)
                result = self.gen.generate(**{**req.options.as_kwargs(), **images}, video=req.video,
                                           controlnets=control_inputs(req.controlnets, cs), labels=MEMORY_LABELS)
                self.generations += 1
        recipe = upload_names({**result.recipe, "fps": req.fps}, req.uploads)
        preview, download, maps = self._write(result.frames, recipe, req, result.control_maps)
        del result
        release_memory()
        return Clip(preview, download, recipe, notices, time.perf_counter() - t0, maps)

    def _unload_unused(self, images: dict) -> None:
        """Unload what the generator would otherwise reuse: a SparseCtrl encoder of an earlier call when this first
        frame has none (it is animated by video to video instead), an IP-Adapter no longer chosen (its memory)."""
        if "image" in images and images["sparsectrl"] is None and self.gen.sparsectrl is not None:
            self.gen.set_sparsectrl(None)
        if "ip_adapter" not in images and self.gen.ip_adapter is not None:
            self.gen.set_ip_adapter(None)

    def _write(self, frames, recipe: dict, req: CheckedGeneration,
               maps: list[np.ndarray]) -> tuple[Path, Path, Path | None]:
        """The download, the clip the page plays, and the control maps side by side (None without ControlNets)."""
        slug = re.sub(r"[^a-z0-9]+", "-", str(recipe.get("prompt", "clip")).lower()).strip("-")[:32] or "clip"
        folder = self.cfg.output_dir / "clips" / f"{time.strftime('%Y%m%d-%H%M%S')}-{self.generations:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        data = to_uint8(np.asarray(frames))
        download = write_clip(data, folder / f"{recipe['seed']}-{slug}.{req.fmt}", fps=req.fps, recipe=recipe)
        if req.fmt == preview_format() and min(data.shape[1:3]) >= PREVIEW_MIN_SIDE:
            preview = download
        else:
            preview = write_preview(data, folder / "preview", req.fps, recipe)
        shown = write_preview(to_uint8(np.concatenate(maps, axis=2)), folder / "maps", req.fps) if maps else None
        self._prune()
        return preview, download, shown

    def _prune(self) -> None:
        """Keep the newest ``keep_outputs`` generations in the output folder (a server left running stays small)."""
        root = self.cfg.output_dir / "clips"
        folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name)
        for old in folders[: max(0, len(folders) - self.cfg.keep_outputs)]:
            shutil.rmtree(old, ignore_errors=True)

    # -------------------------------------------------------------------------------------- GPU parking
    def park(self) -> None:
        """Free the GPU for a training job: move the pipeline to the CPU (no rebuild; no-op on CPU)."""
        gen = self.gen
        if gen is not None and str(gen.device).startswith("cuda") and not gen.low_vram and not self._parked:
            with self._lock:
                gen.pipe.to("cpu")
                self._parked = True
                torch.cuda.empty_cache()

    def unpark(self) -> None:
        """Move a parked pipeline back to its device."""
        gen = self.gen
        if gen is not None and self._parked:
            with self._lock:
                gen.pipe.to(gen.device)
                self._parked = False


def control_inputs(controls: list[CheckedControl], entries: list[Entry]) -> list[ControlInput]:
    """The generator's ControlNet requests of checked slots and their library entries."""
    return [ControlInput(e.source, frames=c.maps, scale=c.scale, start=c.start, end=c.end,
                         preprocessor=c.preprocessor) for c, e in zip(controls, entries, strict=True)]


def image_inputs(library: ModelLibrary, images: ImageInput, base: Entry, num_frames: int,
                 controls: list[CheckedControl]) -> dict:
    """The generator's image arguments of a checked image input: ``image`` (and ``keyframes`` with the last frame)
    with the encoder that holds them (the one chosen, else the base's default; ``None``: none, the picture is then
    animated by video to video at the strength, and ``strength`` is dropped otherwise), and the IP-Adapter with its
    image and scale. Nothing for what the page left empty: a plain generation passes none of them."""
    out: dict = {}
    if images.first is not None:
        encoder = (library.resolve(SPARSECTRL, images.sparsectrl).source if images.sparsectrl
                   else default_sparsectrl_for(base.source))
        if encoder is None and images.last is not None:
            raise BadRequest(f"{LABELS['keyframes']}: expected a {LABELS['sparsectrl']} encoder to hold it "
                             f"({base.name} has no default one: pick one in {LABELS['sparsectrl']}), found none")
        if encoder is not None and controls:
            raise BadRequest(f"{LABELS['controlnets']} {controls[0].slot}: expected no ControlNet beside a "
                             f"{LABELS['sparsectrl']} encoder (diffusers' SparseCtrl pipeline takes none), found "
                             f"{controls[0].name}")
        out.update(image=images.first, sparsectrl=encoder)
        if images.last is not None:
            out["keyframes"] = {num_frames - 1: images.last}
        if encoder is not None:
            out["strength"] = None  # the encoder holds the picture: no video to video
    if images.ip_adapter:
        out.update(ip_adapter=library.resolve(IP_ADAPTER, images.ip_adapter).source, ip_image=images.ip_image,
                   ip_scale=images.ip_scale)
    return out


def controlnet_notices(before: list[str], after: list[str]) -> list[str]:
    """What a ControlNet swap did, in words."""
    added, removed = [n for n in after if n not in before], [n for n in before if n not in after]
    return ([f"ControlNet {n} loaded" for n in added] + [f"ControlNet {n} unloaded" for n in removed]
            or ["ControlNets reordered"])


def upload_names(recipe: dict, uploads: list[str]) -> dict:
    """The recipe with every uploaded input's path shortened to the file's name: the page and the downloads never
    show where the server keeps uploads (the SHA-256 still identifies the file)."""
    names = {str(q): Path(p).name for p in uploads for q in (p, Path(p).resolve())}

    def short(value):
        if isinstance(value, dict):
            return {k: short(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [short(v) for v in value]
        return names.get(value, value) if isinstance(value, str) else value

    return short(recipe)


def preview_format() -> str:
    """What the page plays: MP4, else (no encoder) an animated GIF."""
    return "mp4" if has_ffmpeg() else "gif"


def write_preview(data: np.ndarray, stem: Path, fps: float, recipe: dict | None = None) -> Path:
    """``data`` (uint8 frames) as the page plays it, upscaled without smoothing when it is smaller than
    ``PREVIEW_MIN_SIDE``."""
    k = max(1, min(16, -(-PREVIEW_MIN_SIDE // min(data.shape[1:3]))))
    big = data if k == 1 else np.repeat(np.repeat(data, k, axis=1), k, axis=2)
    return write_clip(big, stem.with_suffix(f".{preview_format()}"), fps=fps, recipe=recipe)


def _norm(v):
    return list(v) if isinstance(v, list | tuple) else v


def base_unet_config(base: Entry) -> dict:
    """The UNet config a base would load with: its folder's, its registered config's, else SD1.5's (a single
    file carries no architecture)."""

    folder = base_config_for(base.registered) if base.registered else None
    if folder is None and is_diffusers_folder(base.path):
        folder = base.path
    return configs_from_folder(folder)["unet"] if folder is not None else skeleton_config("unet")


_FFMPEG: bool | None = None


def has_ffmpeg() -> bool:
    """Whether imageio-ffmpeg's encoder is usable (MP4 playback in the page); else clips play as GIF."""
    global _FFMPEG
    if _FFMPEG is None:
        try:
            import imageio_ffmpeg

            _FFMPEG = Path(imageio_ffmpeg.get_ffmpeg_exe()).exists()
        except Exception:
            _FFMPEG = False
    return _FFMPEG


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so a long-running server stays flat."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
