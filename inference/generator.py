"""``VideoGenerator``: an AnimateDiff pipeline whose base, motion module and LoRAs hot-swap in place."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from motion_adapters import registry
from motion_adapters.base import configs_from_folder, load_tokenizer, read_base, tokenizer_dir_of
from motion_adapters.clips.recipe import model_entry, toolkit_version
from motion_adapters.errors import AdapterFormatError, MotionAdapterError
from motion_adapters.formats.lora import LoraWeights
from motion_adapters.formats.motion_module import MotionModuleWeights
from motion_adapters.hub import resolve_source
from motion_adapters.inference.options import GenerateOptions
from motion_adapters.inference.pipeline import MotionAdaptersPipeline
from motion_adapters.inference.prompts import encode_long, token_count
from motion_adapters.inference.schedulers import make_scheduler
from motion_adapters.loading import KIND_MOTION, KIND_SD, load_adapter
from motion_adapters.registry import (
    base_config_for,
    generation_defaults,
    is_registered,
    model_path,
)
from motion_adapters.swap import (
    adapter_view,
    apply_copy,
    build_motion_unet,
    build_text_encoder,
    build_vae,
    check_motion_fits_base,
    identity_motion_module,
    live_tensors,
    motion_tensors,
    motion_unet_config,
    plan_copy,
    same_motion_architecture,
    spatial_tensors,
)

log = logging.getLogger(__name__)
DEFAULT_MOTION_ARG = "default"  # VideoGenerator(motion=...) default: the registered default motion module
_MOTION_PROJ_OUT = re.compile(r"motion_modules\.\d+\.proj_out$")
_MOTION_BLOCK = re.compile(r"motion_modules\.\d+\.transformer_blocks\.\d+$")


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

    def __init__(self, base: str | Path | None = None, motion: str | Path | None = DEFAULT_MOTION_ARG,
                 device: str | None = None, dtype: str | torch.dtype | None = None,
                 base_config: str | Path | None = None, low_vram: bool = False):
        """``base`` / ``motion``: paths, Hub ids or registered names (``motion-adapters models``); without
        them the embedded ``shapes-base`` + ``shapes-motion``. ``motion=None`` (or ``"none"``): no motion module
        (an all-zero identity module: every frame is denoised independently, exactly per-frame SD).
        ``base_config``: a diffusers folder describing a single-file base that is not standard SD1.5
        (registered single-file bases bring their own). ``low_vram``: model CPU offload (CUDA), VAE slicing
        and tiling, and decoding 2 frames at a time."""

        base_name = registry.default("base") if base is None else base
        if base_name is None:
            raise MotionAdapterError("base: expected a model path or registered name, found none (no embedded "
                                     "default base is registered)")
        if motion == DEFAULT_MOTION_ARG:
            motion = registry.default_motion_for(base_name)
            if motion is None:
                raise MotionAdapterError("motion: expected a motion module (path or registered name), or None for "
                                         f"no motion module; found none (the default motion module "
                                         f"{registry.default('motion')} only fits the bases it was trained with)")
        no_motion = motion is None or str(motion) == "none"
        if base_config is None:
            base_config = base_config_for(base_name)
        base = resolve_source(base_name)
        self.device = device or default_device()
        self.dtype = resolve_dtype(dtype, self.device)
        base_cfgs = configs_from_folder(base_config) if base_config is not None else None
        base_w = load_adapter(base, expect=KIND_SD, base_configs=base_cfgs)
        if base_w.tokenizer_dir is None:
            base_w.tokenizer_dir = tokenizer_dir_of(base_config)
        if no_motion:
            motion_w, motion = identity_motion_module(base_w.configs["unet"]), "none"
        else:
            motion_name = motion
            motion = resolve_source(motion)
            motion_w = load_adapter(motion, expect=KIND_MOTION)
            check_motion_fits_base(motion_w, base_w.configs["unet"], motion)
            if is_registered(str(motion_name)):
                motion = motion_name
        self.generation_defaults = _generation_defaults(base_name)
        if base_w.vae is None or base_w.text_encoder is None:
            missing = "VAE" if base_w.vae is None else "text encoder"
            raise AdapterFormatError(base, "a complete checkpoint for the first load (UNet, VAE, text encoder)",
                                     f"no {missing}")
        t0 = time.perf_counter()
        unet = build_motion_unet(base_w.configs["unet"], base_w.unet, motion_w, base, self.dtype, self.device)
        vae = build_vae(base_w.configs["vae"], base_w.vae, base, self.dtype, self.device)
        text_encoder = build_text_encoder(base_w.configs["text_encoder"], base_w.text_encoder, base,
                                          self.dtype, self.device)
        self.pipe = MotionAdaptersPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=load_tokenizer(base_w),
            unet=unet,
            motion_adapter=adapter_view(unet, motion_w.config),
            scheduler=make_scheduler("ddim"),
        )
        self.pipe.set_progress_bar_config(disable=True)
        self._motion_strength = 1.0
        self._install_motion_strength_hooks()
        self.low_vram = bool(low_vram)
        self._apply_memory_options()
        self.configs = dict(base_w.configs)
        self.motion_config = dict(motion_w.config)
        self.base_source = str(base_name) if is_registered(str(base_name)) else str(base)
        self.motion_source = str(motion)
        self._loras: dict[str, _LoadedLora] = {}
        self._lora_weights: dict[str, float] = {}
        self.builds = 1
        log.info("built pipeline in %.2fs on %s (%s)", time.perf_counter() - t0, self.device, self.dtype)

    def _apply_memory_options(self) -> None:
        """SDPA is diffusers' default; xformers when installed on CUDA; offload and VAE slicing for low VRAM."""
        cuda = str(self.device).startswith("cuda")
        if cuda:
            try:
                import xformers  # noqa: F401

                self.pipe.enable_xformers_memory_efficient_attention()
            except Exception:  # not installed or not supported by this build: keep SDPA
                pass
        if self.low_vram:
            # on the VAE itself: diffusers 0.42 pipelines no longer forward enable_vae_slicing/tiling
            self.pipe.vae.enable_slicing()
            self.pipe.vae.enable_tiling()
            if cuda:
                self.pipe.enable_model_cpu_offload(device=self.device)
            else:
                log.info("low_vram: model CPU offload needs CUDA; on %s only VAE slicing/tiling apply", self.device)

    # ------------------------------------------------------------------ swaps
    def load_base(self, src: str | Path) -> None:
        """Swap the SD base (UNet spatial layers, VAE, text encoder, tokenizer) in place."""
        name = src
        src = resolve_source(src)
        base_w = read_base(src, configs=self.configs)
        unet = self.pipe.unet
        plans = plan_copy(spatial_tensors(unet), base_w.unet, src, "SD UNet weights")
        if base_w.vae is not None:
            plans += plan_copy(live_tensors(self.pipe.vae), base_w.vae, src, "VAE weights")
        if base_w.text_encoder is not None:
            te = {k: v for k, v in base_w.text_encoder.items() if not k.endswith("position_ids")}
            plans += plan_copy(live_tensors(self.pipe.text_encoder), te, src, "text-encoder weights")
        tokenizer = load_tokenizer(base_w) if base_w.tokenizer_dir else None
        # validated: from here on nothing can fail for a reason the file controls
        apply_copy(plans)
        if tokenizer is not None:
            self.pipe.tokenizer = tokenizer
        self.base_source = _source_name(name, src)

    def load_motion(self, src: str | Path | None) -> None:
        """Swap the motion module. Same architecture: in-place copy; otherwise the UNet is re-assembled
        around the existing spatial tensors (still no random init, no file re-read of the base).
        ``None`` / ``"none"``: no motion module (the all-zero identity module)."""
        if src is None or str(src) == "none":
            name, src, mm = "none", "none", identity_motion_module(self.configs["unet"])
        else:
            name = src
            src = resolve_source(src)
            mm = load_adapter(src, expect=KIND_MOTION)
        check_motion_fits_base(mm, self.configs["unet"], src)
        if same_motion_architecture(mm.config, self.motion_config):
            plan = plan_copy(motion_tensors(self.pipe.unet), mm.state_dict, src, "motion-module weights")
            apply_copy(plan)
        else:
            self._rebuild_motion(mm, src)
        self.motion_config = dict(mm.config)
        self.motion_source = _source_name(name, src)

    def _rebuild_motion(self, mm: MotionModuleWeights, src) -> None:
        loras = dict(self._loras)
        for entry in loras.values():
            self._check_lora_targets(entry.weights, entry.source, motion_config=mm.config)
        old = self.pipe.unet
        spatial = spatial_tensors(old)
        unet = build_motion_unet(self.configs["unet"], spatial, mm, src, self.dtype, self.device,
                                 copy_spatial=False)
        self.pipe.register_modules(unet=unet, motion_adapter=adapter_view(unet, mm.config))
        self._install_motion_strength_hooks()
        if self.low_vram and str(self.device).startswith("cuda"):
            self.pipe.enable_model_cpu_offload(device=self.device)
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
            src = _registered_path(src)
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
        prompt: str | Mapping[int, str] | Sequence[str],
        negative_prompt: str | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int = 0,
        scheduler: str = "ddim",
        context_length: int | None = None,
        context_overlap: int | None = None,
        free_init_iters: int = 0,
        motion_strength: float = 1.0,
        decode_chunk_size: int | None = None,
        progress: bool = False,
    ) -> GenerationResult:
        """Generate one clip; returns frames (F, H, W, 3) in [0, 1] and the recipe that reproduces them.

        ``prompt``: a string, or a frame→prompt map / ``["0: …", "16: …"]`` list for prompt travel.
        Clips longer than the motion module's frame cap (or than ``context_length``) use FreeNoise context
        windows of ``context_length`` frames overlapping by ``context_overlap``. ``motion_strength`` scales the
        motion modules' residual (0 = independent frames, 1 = as trained, > 1 exaggerates). Prompts longer
        than 77 tokens are encoded in chunks. Noise comes from a CPU generator: a seed gives the same clip on
        any device. Options left ``None`` take the base's registered defaults (``generation_defaults``: the
        shapes world's 32×32, 8 frames …), else 16 frames, 25 steps, guidance 7.5 and the base's size.
        """
        d = self.generation_defaults
        num_frames = num_frames if num_frames is not None else d.get("num_frames", 16)
        num_inference_steps = num_inference_steps if num_inference_steps is not None else d.get(
            "num_inference_steps", 25)
        guidance_scale = guidance_scale if guidance_scale is not None else d.get("guidance_scale", 7.5)
        height = height if height is not None else d.get("height")
        width = width if width is not None else d.get("width")
        opts = GenerateOptions.validate(
            prompt=prompt, negative_prompt=negative_prompt, num_frames=num_frames, height=height, width=width,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed, scheduler=scheduler,
            context_length=context_length, context_overlap=context_overlap, free_init_iters=free_init_iters,
            motion_strength=motion_strength, decode_chunk_size=decode_chunk_size,
            max_seq=self.motion_config["motion_max_seq_length"], sample_size=self._default_size(),
        )
        pipe = self.pipe
        pipe.scheduler = make_scheduler(opts.scheduler)
        pipe.set_progress_bar_config(disable=not progress)
        kwargs = dict(num_frames=opts.num_frames, height=opts.height, width=opts.width,
                      num_inference_steps=opts.num_inference_steps, guidance_scale=opts.guidance_scale,
                      generator=torch.Generator("cpu").manual_seed(opts.seed), output_type="np",
                      decode_chunk_size=opts.decode_chunk_size or (2 if self.low_vram else 16))
        travel = isinstance(opts.prompt, dict)
        windows = opts.context_length is not None
        if travel or windows:
            length = opts.context_length or opts.num_frames
            self._set_context(length, length - (opts.context_overlap or 0))
            kwargs.update(prompt=opts.prompt, negative_prompt=opts.negative_prompt)
        elif self._needs_long_encoding([opts.prompt, opts.negative_prompt or ""]):
            emb = encode_long(pipe, [opts.prompt, opts.negative_prompt or ""], pipe._execution_device)
            kwargs.update(prompt_embeds=emb[:1], negative_prompt_embeds=emb[1:])
        else:
            kwargs.update(prompt=opts.prompt, negative_prompt=opts.negative_prompt)
        if opts.free_init_iters:
            pipe.enable_free_init(num_iters=opts.free_init_iters, use_fast_sampling=False, method="butterworth")
        self._motion_strength = opts.motion_strength
        try:
            out = pipe(**kwargs)
        finally:
            self._motion_strength = 1.0
            if travel or windows:
                self._set_context(None, 0)
            if opts.free_init_iters:
                pipe.disable_free_init()
        frames = np.asarray(out.frames[0], dtype=np.float32)
        return GenerationResult(frames, self._recipe(opts, frames))

    def _default_size(self) -> int:
        return self.configs["unet"]["sample_size"] * self.pipe.vae_scale_factor

    def _needs_long_encoding(self, texts: Sequence[str]) -> bool:
        limit = self.pipe.tokenizer.model_max_length - 2
        return any(token_count(self.pipe.tokenizer, t) > limit for t in texts if t)

    def _recipe(self, opts: GenerateOptions, frames: np.ndarray) -> dict:
        recipe = opts.as_recipe()
        recipe.update(
            height=int(frames.shape[1]), width=int(frames.shape[2]),
            base=model_entry(self.base_source), motion=model_entry(self.motion_source),
            loras=[{**(model_entry(e.source) or {}), "weight": self._lora_weights.get(e.name, 0.0)}
                   for e in self._loras.values()],
            device=str(self.device), dtype=str(self.dtype).replace("torch.", ""), toolkit=toolkit_version(),
        )
        return recipe

    def _motion_blocks(self) -> list[torch.nn.Module]:
        from diffusers.models.attention import BasicTransformerBlock, FreeNoiseTransformerBlock

        kinds = (BasicTransformerBlock, FreeNoiseTransformerBlock)
        return [m for name, m in self.pipe.unet.named_modules()
                if _MOTION_BLOCK.search(name) and isinstance(m, kinds)]

    def _set_context(self, length: int | None, stride: int) -> None:
        """Switch FreeNoise context windows on or off by re-classing the motion transformer blocks in place.

        diffusers' ``enable_free_noise`` rebuilds every block and copies its weights (which drops PEFT LoRA
        wrappers and breaks in-place swaps), and its ``disable_free_noise`` crashes for modules without a mid
        block. The two block classes share every submodule and attribute, so re-classing keeps the very same
        parameters.
        """
        from diffusers.models.attention import BasicTransformerBlock, FreeNoiseTransformerBlock

        pipe = self.pipe
        for block in self._motion_blocks():
            if length:
                block.__class__ = FreeNoiseTransformerBlock
                block.set_free_noise_properties(length, stride, "pyramid")
            else:
                block.__class__ = BasicTransformerBlock
        pipe._free_noise_context_length = length
        pipe._free_noise_context_stride = stride
        pipe._free_noise_weighting_scheme = "pyramid"
        pipe._free_noise_noise_type = "shuffle_context"
        pipe._free_noise_prompt_interpolation_callback = pipe._lerp

    def _install_motion_strength_hooks(self) -> None:
        def hook(_module, _inputs, output):
            s = self._motion_strength
            return None if s == 1.0 else output * s

        for name, module in self.pipe.unet.named_modules():
            if _MOTION_PROJ_OUT.search(name):
                module.register_forward_hook(hook)

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


def _generation_defaults(base) -> dict:
    return generation_defaults(str(base))


def _registered_path(src):
    """A registered name's file (LoRAs by short name); anything else unchanged."""

    return model_path(str(src)) if is_registered(str(src)) else src


def _source_name(name, resolved) -> str:
    return str(name) if is_registered(str(name)) else str(resolved)


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
