"""``VideoGenerator``: an AnimateDiff pipeline whose base, motion module and LoRAs hot-swap in place."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import AnimateDiffPipeline
from transformers import CLIPTokenizer

from motion_adapters.base import BaseWeights, configs_from_folder, read_base
from motion_adapters.errors import AdapterFormatError, MotionAdapterError
from motion_adapters.formats.lora import LoraWeights
from motion_adapters.formats.motion_module import MotionModuleWeights
from motion_adapters.loading import KIND_MOTION, KIND_SD, load_adapter
from motion_adapters.swap import (
    adapter_view,
    apply_copy,
    build_motion_unet,
    build_text_encoder,
    build_vae,
    check_motion_fits_base,
    live_tensors,
    motion_tensors,
    plan_copy,
    same_motion_architecture,
    spatial_tensors,
)
from motion_adapters.synthetic import animatediff_scheduler
from motion_adapters.tokenizer import CLIP_MAX_LENGTH, clip_tokenizer

log = logging.getLogger(__name__)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """fp16 on CUDA and fp32 on CPU unless told otherwise."""
    if dtype is None:
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}
    if dtype not in table:
        raise MotionAdapterError(f"dtype: expected one of {sorted(table)}, found {dtype!r}")
    return table[dtype]


@dataclass
class GenerationResult:
    """Frames as float32 (F, H, W, 3) in [0, 1], and the recipe that made them."""

    frames: np.ndarray
    recipe: dict = field(default_factory=dict)


@dataclass
class _LoadedLora:
    name: str
    source: str
    weights: LoraWeights
    stamp: tuple


class VideoGenerator:
    """Text-to-video on any SD1.5 base with an AnimateDiff motion module, swapping parts in place.

    >>> gen = VideoGenerator(base="toonyou.safetensors", motion="mm_sd_v15_v2.ckpt")
    >>> clip = gen.generate("a corgi running on the beach", num_frames=16, seed=42)
    >>> gen.load_motion("v3_sd15_mm.ckpt")          # copies tensors into the live UNet
    >>> gen.set_loras({"v2_lora_ZoomIn.ckpt": 0.8})  # PEFT adapter, weight changes need no file read

    The first build assigns loaded tensors to modules created on the meta device (no random init);
    later swaps validate the whole incoming file first and then copy into the existing tensors, so a
    failed swap leaves the generator exactly as it was.
    """

    def __init__(self, base: str | Path, motion: str | Path, device: str | None = None,
                 dtype: str | torch.dtype | None = None, base_config: str | Path | None = None):
        """``base_config``: a diffusers folder describing a single-file base that is not standard SD1.5."""
        self.device = device or default_device()
        self.dtype = resolve_dtype(dtype, self.device)
        base_cfgs = configs_from_folder(base_config) if base_config is not None else None
        base_w = load_adapter(base, expect=KIND_SD, base_configs=base_cfgs)
        motion_w = load_adapter(motion, expect=KIND_MOTION)
        check_motion_fits_base(motion_w, base_w.configs["unet"], motion)
        if base_w.vae is None or base_w.text_encoder is None:
            missing = "VAE" if base_w.vae is None else "text encoder"
            raise AdapterFormatError(base, "a complete checkpoint for the first load (UNet, VAE, text encoder)",
                                     f"no {missing}")
        t0 = time.perf_counter()
        unet = build_motion_unet(base_w.configs["unet"], base_w.unet, motion_w, base, self.dtype, self.device)
        vae = build_vae(base_w.configs["vae"], base_w.vae, base, self.dtype, self.device)
        text_encoder = build_text_encoder(base_w.configs["text_encoder"], base_w.text_encoder, base,
                                          self.dtype, self.device)
        self.pipe = AnimateDiffPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=self._tokenizer_for(base_w),
            unet=unet,
            motion_adapter=adapter_view(unet, motion_w.config),
            scheduler=animatediff_scheduler(),
        )
        self.pipe.set_progress_bar_config(disable=True)
        self.configs = dict(base_w.configs)
        self.motion_config = dict(motion_w.config)
        self.base_source = str(base)
        self.motion_source = str(motion)
        self._loras: dict[str, _LoadedLora] = {}
        self._lora_weights: dict[str, float] = {}
        self.builds = 1
        log.info("built pipeline in %.2fs on %s (%s)", time.perf_counter() - t0, self.device, self.dtype)

    # ------------------------------------------------------------------ swaps
    def load_base(self, src: str | Path) -> None:
        """Swap the SD base (UNet spatial layers, VAE, text encoder, tokenizer) in place."""
        base_w = read_base(src, configs=self.configs)
        unet = self.pipe.unet
        plans = plan_copy(spatial_tensors(unet), base_w.unet, src, "SD UNet weights")
        if base_w.vae is not None:
            plans += plan_copy(live_tensors(self.pipe.vae), base_w.vae, src, "VAE weights")
        if base_w.text_encoder is not None:
            te = {k: v for k, v in base_w.text_encoder.items() if not k.endswith("position_ids")}
            plans += plan_copy(live_tensors(self.pipe.text_encoder), te, src, "text-encoder weights")
        tokenizer = self._tokenizer_for(base_w) if base_w.tokenizer_dir else None
        # validated: from here on nothing can fail for a reason the file controls
        apply_copy(plans)
        if tokenizer is not None:
            self.pipe.tokenizer = tokenizer
        self.base_source = str(src)

    def load_motion(self, src: str | Path) -> None:
        """Swap the motion module. Same architecture: in-place copy; otherwise the UNet is re-assembled
        around the existing spatial tensors (still no random init, no file re-read of the base)."""
        mm = load_adapter(src, expect=KIND_MOTION)
        check_motion_fits_base(mm, self.configs["unet"], src)
        if same_motion_architecture(mm.config, self.motion_config):
            plan = plan_copy(motion_tensors(self.pipe.unet), mm.state_dict, src, "motion-module weights")
            apply_copy(plan)
        else:
            self._rebuild_motion(mm, src)
        self.motion_config = dict(mm.config)
        self.motion_source = str(src)

    def _rebuild_motion(self, mm: MotionModuleWeights, src) -> None:
        loras = dict(self._loras)
        for entry in loras.values():
            self._check_lora_targets(entry.weights, entry.source, motion_config=mm.config)
        old = self.pipe.unet
        spatial = spatial_tensors(old)
        unet = build_motion_unet(self.configs["unet"], spatial, mm, src, self.dtype, self.device)
        self.pipe.register_modules(unet=unet, motion_adapter=adapter_view(unet, mm.config))
        for entry in loras.values():
            unet_part = {k: v for k, v in entry.weights.state_dict.items() if k.startswith("unet.")}
            if unet_part:
                unet.load_lora_adapter(unet_part, prefix="unet", adapter_name=entry.name)
        if loras:
            self._apply_weights()
        del old

    def set_loras(self, loras: Mapping[str | Path, float] | Iterable[tuple[str | Path, float]] | None) -> None:
        """Make exactly these LoRAs active at these weights (motion and spatial LoRAs stack).

        Files already loaded are not read again; a weight change only rescales the PEFT adapter.
        """
        items = list((loras or {}).items()) if isinstance(loras, Mapping) or loras is None else list(loras)
        wanted: dict[str, float] = {}
        new: list[_LoadedLora] = []
        for src, weight in items:
            try:
                weight = float(weight)
            except (TypeError, ValueError) as e:
                raise MotionAdapterError(f"LoRA weight for {src}: expected a number, found {weight!r}") from e
            key = str(Path(src).resolve())
            stamp = _file_stamp(src)
            entry = self._loras.get(key)
            if entry is None or entry.stamp != stamp:
                lw = load_adapter(src, expect="lora")
                self._check_lora_targets(lw, src)
                entry = _LoadedLora(_adapter_name(src, stamp), str(src), lw, stamp)
                new.append(entry)
            wanted[key] = weight
        # all files validated: now change the model
        injected: list[str] = []
        try:
            for entry in new:
                key = str(Path(entry.source).resolve())
                if key in self._loras:  # file changed on disk: replace the old adapter
                    self.pipe.delete_adapters([self._loras.pop(key).name])
                self.pipe.load_lora_weights(dict(entry.weights.state_dict), adapter_name=entry.name)
                injected.append(entry.name)
                self._loras[key] = entry
        except Exception:
            if injected:
                self.pipe.delete_adapters(injected)
            for entry in new:
                self._loras.pop(str(Path(entry.source).resolve()), None)
            raise
        stale = [k for k in self._loras if k not in wanted]
        if stale:
            self.pipe.delete_adapters([self._loras.pop(k).name for k in stale])
        self._lora_weights = {self._loras[k].name: w for k, w in wanted.items()}
        self._apply_weights()

    def _apply_weights(self) -> None:
        if self._lora_weights:
            self.pipe.set_adapters(list(self._lora_weights), list(self._lora_weights.values()))

    def _check_lora_targets(self, lw: LoraWeights, src, motion_config: Mapping | None = None) -> None:
        modules = {"unet": dict(self.pipe.unet.named_modules()),
                   "text_encoder": dict(self.pipe.text_encoder.named_modules())}
        if motion_config is not None:
            from accelerate import init_empty_weights
            from diffusers import UNetMotionModel

            from motion_adapters.swap import motion_unet_config

            with init_empty_weights():
                probe = UNetMotionModel.from_config(motion_unet_config(self.configs["unet"], motion_config))
            modules["unet"] = dict(probe.named_modules())
        for key, tensor in lw.state_dict.items():
            if not key.endswith("lora_A.weight"):
                continue
            comp, _, path = key.partition(".")
            path = path[: -len(".lora_A.weight")]
            mod = modules.get(comp, {}).get(path)
            if mod is None:
                raise AdapterFormatError(src, f"LoRA targets that exist in the loaded {comp}",
                                         f"{path!r}, which it does not have")
            mod = getattr(mod, "base_layer", mod)
            in_f = getattr(mod, "in_features", None) or getattr(mod, "in_channels", None)
            out_f = getattr(mod, "out_features", None) or getattr(mod, "out_channels", None)
            up = lw.state_dict[key.replace("lora_A", "lora_B")]
            if tensor.shape[1] != in_f or up.shape[0] != out_f:
                raise AdapterFormatError(
                    src, f"LoRA for {path!r} with {in_f} inputs and {out_f} outputs",
                    f"down {tuple(tensor.shape)} / up {tuple(up.shape)} (made for another base or version)",
                )

    # ------------------------------------------------------------ generation
    def generate(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        num_frames: int = 16,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        seed: int = 0,
    ) -> GenerationResult:
        """Generate one clip. Noise comes from a CPU generator, so a seed gives the same clip on any device."""
        max_f = self.motion_config["motion_max_seq_length"]
        if num_frames < 1 or num_frames > max_f:
            raise MotionAdapterError(f"num_frames: expected 1..{max_f} for this motion module, found {num_frames}")
        out = self.pipe(
            prompt=prompt,
            negative_prompt=negative_prompt,
            num_frames=num_frames,
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="np",
        )
        frames = np.asarray(out.frames[0], dtype=np.float32)
        recipe = dict(prompt=prompt, negative_prompt=negative_prompt, num_frames=num_frames,
                      height=frames.shape[1], width=frames.shape[2], steps=num_inference_steps,
                      guidance=guidance_scale, seed=seed, base=self.base_source, motion=self.motion_source,
                      loras={e.source: self._lora_weights.get(e.name) for e in self._loras.values()})
        return GenerationResult(frames, recipe)

    # ------------------------------------------------------------- utilities
    @property
    def loras(self) -> dict[str, float]:
        return {e.source: self._lora_weights.get(e.name, 0.0) for e in self._loras.values()}

    def state_fingerprint(self) -> str:
        """SHA-256 over every tensor of UNet, VAE and text encoder plus the LoRA set (for atomicity checks)."""
        h = hashlib.sha256()
        for comp in ("unet", "vae", "text_encoder"):
            for k, v in sorted(getattr(self.pipe, comp).state_dict().items()):
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        h.update(repr(sorted(self._lora_weights.items())).encode())
        h.update(repr(sorted(self.pipe.tokenizer.get_vocab().items())[:50]).encode())
        return h.hexdigest()

    @staticmethod
    def _tokenizer_for(base_w: BaseWeights) -> CLIPTokenizer:
        if base_w.tokenizer_dir is not None:
            tok = CLIPTokenizer.from_pretrained(str(base_w.tokenizer_dir), local_files_only=True)
            if tok.model_max_length > 10_000:
                tok.model_max_length = CLIP_MAX_LENGTH
            return tok
        return clip_tokenizer()


def _file_stamp(src) -> tuple:
    p = Path(src)
    if not p.exists():
        raise AdapterFormatError(p, "an existing LoRA file", "nothing at that path")
    st = p.stat()
    return (st.st_size, st.st_mtime_ns)


def _adapter_name(src, stamp) -> str:
    stem = re.sub(r"[^A-Za-z0-9_]", "_", Path(src).stem)[:40]
    digest = hashlib.sha1(f"{Path(src).resolve()}{stamp}".encode()).hexdigest()[:8]
    return f"{stem}_{digest}"
