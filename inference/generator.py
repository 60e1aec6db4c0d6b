"""``VideoGenerator``: an AnimateDiff pipeline whose base, motion module and LoRAs hot-swap in place.

A thin facade: the first build is :mod:`.build`, swaps are :mod:`.swaps` and :mod:`.loras`, one generation is
:mod:`.run` with its call parts (:mod:`.windows`, :mod:`.strength`, prompts, FreeInit).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from motion_adapters.clips.controls import compute_maps
from motion_adapters.clips.recipe import model_entry
from motion_adapters.errors import MotionAdapterError
from motion_adapters.inference.build import (
    DEFAULT_MOTION_ARG,
    apply_memory_options,
    assemble_pipeline,
    default_device,
    enable_offload,
    read_first_load,
    resolve_dtype,
)
from motion_adapters.inference.controlnets import (
    MAX_CONTROL_SCALE,
    ControlNetSet,
    ControlRequest,
    control_inputs,
)
from motion_adapters.inference.inputs import FrameInput, Frames, PictureInput, read_frame_input
from motion_adapters.inference.ip_adapters import IPAdapterSlot, check_ip_scale
from motion_adapters.inference.loras import LoraRequest, LoraSet
from motion_adapters.inference.memory import (
    MemoryEstimate,
    available_memory,
    check_fits,
    estimate_generation,
    host_available,
)
from motion_adapters.inference.options import GenerateOptions, finite_number
from motion_adapters.inference.prompts import num_chunks
from motion_adapters.inference.run import (
    CallPart,
    Conditioning,
    GenerationResult,
    free_init,
    make_recipe,
    prompt_inputs,
    run_pipeline,
    to_pil,
    with_defaults,
)
from motion_adapters.inference.sparsectrl import SPARSECTRL, choose_encoder, place_keyframes, read_keyframes
from motion_adapters.inference.strength import MotionStrength
from motion_adapters.inference.swaps import copy_motion, read_motion, rebuild_unet, swap_base
from motion_adapters.inference.windows import context_windows, uses_free_noise
from motion_adapters.registry import default_sparsectrl_for, generation_defaults
from motion_adapters.swap import same_motion_architecture

__all__ = ["DEFAULT_MOTION_ARG", "GenerationResult", "VideoGenerator", "default_device", "resolve_dtype"]
log = logging.getLogger(__name__)
DEFAULT_STRENGTH = 0.8  # video to video, as diffusers' pipeline defaults


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
        them the registered default base and its motion module (``motion_adapters.registry.default``). ``motion=None`` (or ``"none"``): no motion module
        (an all-zero identity module: every frame is denoised independently, exactly per-frame SD).
        ``base_config``: a diffusers folder describing a single-file base that is not standard SD1.5
        (registered single-file bases bring their own). ``low_vram``: model CPU offload (CUDA), VAE slicing
        and tiling, and decoding 2 frames at a time."""
        self.device = device or default_device()
        self.dtype = resolve_dtype(dtype, self.device)
        loaded = read_first_load(base, motion, base_config)
        self.generation_defaults = generation_defaults(str(loaded.base_name))
        t0 = time.perf_counter()
        self.pipe = assemble_pipeline(loaded, self.dtype, self.device)
        self._strength = MotionStrength()
        self._strength.install(self.pipe.unet)
        self.low_vram = bool(low_vram)
        apply_memory_options(self.pipe, self.device, self.low_vram)
        self.configs = dict(loaded.base.configs)
        self.motion_config = dict(loaded.motion.config)
        self.base_source = loaded.base_source
        self.motion_source = loaded.motion_source
        self._loras = LoraSet()
        self._controlnets = ControlNetSet()
        self._sparsectrl = ControlNetSet(SPARSECTRL)
        self._ip = IPAdapterSlot()
        self.builds = 1
        log.info("built pipeline in %.2fs on %s (%s)", time.perf_counter() - t0, self.device, self.dtype)

    # ------------------------------------------------------------------ swaps
    def load_base(self, src: str | Path) -> None:
        """Swap the SD base (UNet spatial layers, VAE, text encoder, tokenizer) in place."""
        self.base_source = swap_base(self.pipe, src, self.configs)

    def load_motion(self, src: str | Path | None) -> None:
        """Swap the motion module. Same architecture: in-place copy; otherwise the UNet is re-assembled
        around the existing spatial tensors (still no random init, no file re-read of the base).
        ``None`` / ``"none"``: no motion module (the all-zero identity module)."""
        mm, path, name = read_motion(src, self.configs["unet"])
        if same_motion_architecture(mm.config, self.motion_config):
            copy_motion(self.pipe, mm, path)
        else:
            self._loras.check_fit(self.pipe, self.configs["unet"], mm.config)
            rebuild_unet(self.pipe, mm, path, self.configs["unet"], self.dtype, self.device)
            self._strength.install(self.pipe.unet)
            enable_offload(self.pipe, self.device, self.low_vram)
            self._loras.reload_unet(self.pipe)
        self.motion_config = dict(mm.config)
        self.motion_source = name

    def set_loras(self, loras: LoraRequest) -> None:
        """Make exactly these LoRAs active at these weights (motion and spatial LoRAs stack).

        Files already loaded are not read again; a weight change only rescales the PEFT adapter.
        """
        self._loras.set(self.pipe, loras)

    def set_controlnets(self, models) -> None:
        """Keep exactly these ControlNets loaded (paths, registered names or live ``ControlNetModel``\\ s), in
        this order. Files already loaded are not read again; every new one is read, checked against the base
        and built before anything changes; ``[]`` unloads them all. ``generate(controlnets=…)`` calls this."""
        self._controlnets.set(models, unet_config=self.configs["unet"], dtype=self.dtype, device=self.device)

    @property
    def controlnets(self) -> list[str]:
        """The loaded ControlNets, as named in recipes."""
        return self._controlnets.sources

    def set_sparsectrl(self, model) -> None:
        """Keep this SparseCtrl encoder loaded (a path, a registered name or a live ``SparseControlNetModel``;
        ``None`` unloads it). The same file is not read again; a new one is read, checked against the base and
        built before anything changes. ``generate(sparsectrl=…)`` calls this."""
        self._sparsectrl.set([] if model is None else [model], unet_config=self.configs["unet"], dtype=self.dtype,
                             device=self.device)

    @property
    def sparsectrl(self) -> str | None:
        """The loaded SparseCtrl encoder, as named in recipes."""
        return next(iter(self._sparsectrl.sources), None)

    def set_ip_adapter(self, model: str | Path | None, image_encoder: str | Path | None = None) -> None:
        """Keep this IP-Adapter (with its CLIP image encoder folder, default: ``image_encoder/`` beside the file
        or in its parent folder) loaded, ready for image prompts; ``None`` unloads it. Read and checked in full
        before anything changes; it joins the UNet only during calls with an ``ip_image``."""
        if model is None:
            self._ip.unload()
            return
        self._ip.load(model, image_encoder, unet_config=self.configs["unet"], dtype=self.dtype, device=self.device)

    @property
    def ip_adapter(self) -> str | None:
        """The loaded IP-Adapter, as named in recipes."""
        return self._ip.source

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
        video: FrameInput | Frames | None = None,
        strength: float | None = None,
        controlnets: Sequence[ControlRequest] | None = None,
        image: PictureInput | None = None,
        keyframes: Mapping[int, PictureInput] | None = None,
        sparsectrl: str | Path | object | None = None,
        sparsectrl_scale: float = 1.0,
        ip_adapter: str | Path | None = None,
        ip_image: PictureInput | None = None,
        ip_scale: float | None = None,
        ip_encoder: str | Path | None = None,
        progress: bool = False,
        check_memory: bool = True,
        labels: Mapping[str, str] | None = None,
    ) -> GenerationResult:
        """Generate one clip; returns frames (F, H, W, 3) in [0, 1] and the recipe that reproduces them.

        ``prompt``: a string, or a frame→prompt map / ``["0: …", "16: …"]`` list for prompt travel.
        Clips longer than the motion module's frame cap (or than ``context_length``) use FreeNoise context
        windows of ``context_length`` frames overlapping by ``context_overlap``. ``motion_strength`` scales the
        motion modules' residual (0 = independent frames, 1 = as trained, > 1 exaggerates). Prompts longer
        than 77 tokens are encoded in chunks. Noise comes from a CPU generator: a seed gives the same clip on
        any device. Options left ``None`` take the base's registered defaults (``generation_defaults``: an
        embedded model's own size, frames …), else 16 frames, 25 steps, guidance 7.5 and the base's size.

        ``video`` (a video file, a folder of frames or an array (F, H, W, 3)): video to video at ``strength``
        (default 0.8; 0 = the input back through the VAE, 1 = from noise), diffusers' video-to-video semantics;
        the input is resampled evenly to ``num_frames`` (default: its own length) and resized to the clip's size,
        each change noted in the log. ``controlnets``: ControlNets the clip follows, with or without ``video``
        (each a :class:`~.controlnets.ControlInput`: model, control maps or a preprocessor applied to ``video``,
        scale, start/end fraction of the steps); loaded on first use and kept (:meth:`set_controlnets`).

        ``image`` (an image file, a PIL image or an array (H, W, 3)): the clip starts from this picture. With a
        SparseCtrl encoder (``sparsectrl``: a path, a registered name or a live model; default: the one loaded,
        else the base's registered one) it conditions frame 0, and ``keyframes`` ({frame index: picture},
        negative indices from the end) condition any frames: first + last makes the clip go from one picture to
        the other; a scribble encoder takes line maps the same way. ``sparsectrl_scale``: how strongly (0–10).
        Without an encoder, ``image`` alone is animated by video to video of the still picture at ``strength``.
        ``ip_adapter`` (an IP-Adapter file, its CLIP image encoder folder beside it or ``ip_encoder``) with
        ``ip_image``: an image prompt (style or subject) at ``ip_scale`` (default 0.6), with any other input.

        Before any step, a call whose estimated peak memory exceeds what the device has available is refused
        (:mod:`.memory`); ``check_memory=False`` skips that check. ``labels``: the names errors give the
        parameters (the CLI's flags, the studio's fields).
        """
        n = dict(labels or {})
        source = read_frame_input(video, n.get("video", "video")) if video is not None else None
        controls = control_inputs(controlnets, label=n.get("controlnets", "controlnets"))
        pictures = read_keyframes(image, keyframes, n)
        ip_pic = self._ip.image_prompt(ip_adapter, ip_image, n)
        ip_scale = check_ip_scale(n.get("ip_scale", "ip_scale"), ip_scale)
        loaded = self._sparsectrl.entries()
        encoder = choose_encoder(pictures, sparsectrl, loaded[0].model if loaded else default_sparsectrl_for(
            self.base_source), video=source is not None, controlnets=bool(controls), labels=n)
        if source is not None and num_frames is None:
            num_frames = len(source.frames)
        sized = with_defaults(self.generation_defaults, num_frames=num_frames, height=height, width=width,
                              num_inference_steps=num_inference_steps, guidance_scale=guidance_scale)
        still = bool(pictures) and encoder is None  # a picture animated by video to video of the still
        if (source is not None or still) and strength is None:
            strength = DEFAULT_STRENGTH
        opts = GenerateOptions.validate(
            prompt=prompt, negative_prompt=negative_prompt, seed=seed, scheduler=scheduler,
            context_length=context_length, context_overlap=context_overlap, free_init_iters=free_init_iters,
            motion_strength=motion_strength, decode_chunk_size=decode_chunk_size, **sized,
            strength=strength if source is not None or still else None,
            max_seq=self.motion_config["motion_max_seq_length"], sample_size=self._default_size(), labels=labels,
        )
        if strength is not None and source is None and not still:
            found = "keyframes for a SparseCtrl encoder" if encoder is not None else "none"
            raise MotionAdapterError(f"{n.get('strength', 'strength')}: applies to video to video only; expected a "
                                     f"{n.get('video', 'video')} (or a lone {n.get('image', 'image')} without a "
                                     f"SparseCtrl encoder) with it, found {found}")
        placed = place_keyframes(pictures, opts.num_frames, n)
        if encoder is not None and uses_free_noise(opts):
            raise MotionAdapterError(f"{n.get('sparsectrl', 'sparsectrl')}: keyframes run diffusers' SparseCtrl "
                                     "pipeline, which has no context windows or prompt travel; expected one prompt "
                                     f"and at most {self.motion_config['motion_max_seq_length']} frames")
        if ip_adapter is not None:  # every input checked: now load what the call needs
            self._ip.load(ip_adapter, ip_encoder, unet_config=self.configs["unet"], dtype=self.dtype,
                          device=self.device, label=n.get("ip_adapter", "ip_adapter"),
                          encoder_label=n.get("ip_encoder", "ip_encoder"))
        if still:
            source = Frames(np.repeat(placed[0].frames, opts.num_frames, axis=0), placed[0].label, placed[0].path,
                            placed[0].sha256)
        cond, inputs = self._conditioning(opts, source, controls, n)
        if encoder is not None:
            self._sparse_conditioning(cond, inputs, encoder, placed, sparsectrl_scale, opts, n,
                                      image_given=image is not None)
        if still:
            inputs.update(video=None, image={**placed[0].entry(), "animated_by": "video to video"})
        if ip_pic is not None:
            cond.ip_image = to_pil(ip_pic.frames[0])
            inputs["ip_adapter"] = {**(model_entry(self._ip.source) or {}), "scale": ip_scale,
                                    "variant": self._ip.loaded.weights.variant, "image": ip_pic.entry(),
                                    "image_encoder": str(self._ip.loaded.encoder_path)}
        if check_memory:
            self.check_memory(opts, labels=labels, controlnets=len(cond.controlnets) + (encoder is not None),
                              video=source is not None or encoder is not None,
                              decode_all=encoder is not None)
        with self._ip.attached(self.pipe, ip_scale) if ip_pic is not None else contextlib.nullcontext():
            frames = run_pipeline(self.pipe, opts, self._call_parts(), low_vram=self.low_vram, progress=progress,
                                  cond=cond)
        recipe = make_recipe(opts, frames, base_source=self.base_source, motion_source=self.motion_source,
                             loras=self.loras, device=self.device, dtype=self.dtype, inputs=inputs)
        return GenerationResult(frames, recipe, cond.maps)

    def _sparse_conditioning(self, cond: Conditioning, inputs: dict, encoder, placed: Mapping[int, Frames],
                             scale: float, opts: GenerateOptions, n: Mapping[str, str], *, image_given: bool) -> None:
        """Load the SparseCtrl encoder and add it and its fitted keyframes to ``cond`` and the recipe (frame 0 as
        the recipe's ``image`` when it was given as ``image=``)."""
        scale = finite_number(f"{n.get('sparsectrl', 'sparsectrl')} scale", scale, 0.0, MAX_CONTROL_SCALE)
        [model] = self._sparsectrl.set([encoder], unet_config=self.configs["unet"], dtype=self.dtype,
                                       device=self.device)
        loaded = self._sparsectrl.entries()[0]
        cond.sparsectrl, cond.sparsectrl_scale = model, scale
        cond.keyframes = {i: p.fitted(1, opts.width, opts.height)[0] for i, p in placed.items()}
        inputs["sparsectrl"] = {**(model_entry(loaded.source) or {"name": loaded.source}), "scale": scale,
                                "control_kind": loaded.control_kind}
        if image_given:
            inputs["image"] = placed[0].entry()
        inputs["keyframes"] = [{"index": i, **p.entry()} for i, p in placed.items() if not (i == 0 and image_given)]

    def _conditioning(self, opts: GenerateOptions, source: Frames | None, controls: list,
                      labels: Mapping[str, str]) -> tuple[Conditioning, dict]:
        """The fitted video and control maps of one call (ControlNets loaded as needed), and their recipe
        entries. Every input is read and fitted before any ControlNet is loaded."""
        size = (opts.num_frames, opts.width, opts.height)
        video = source.fitted(*size) if source is not None else None
        maps, entries = [], []
        for i, c in enumerate(controls, 1):
            name = f"{labels.get('controlnets', 'controlnets')} {i}"
            if c.frames is not None:
                frames = read_frame_input(c.frames, f"{name} frames")
                maps.append(frames.fitted(*size))
                control = frames.entry()
            elif video is None:
                raise MotionAdapterError(f"{name}: expected control maps, or a {labels.get('video', 'video')} to "
                                         f"compute them from with {c.preprocessor!r}, found neither")
            else:
                maps.append(compute_maps(video, c.preprocessor, f"{name} preprocessor"))
                control = {"preprocessor": c.preprocessor}
            entries.append({**(model_entry(c.source) or {}), "scale": c.scale, "start": c.start, "end": c.end,
                            "control": control})
        models = self._controlnets.set([c.model for c in controls], unet_config=self.configs["unet"],
                                       dtype=self.dtype, device=self.device) if controls else []
        for entry, loaded in zip(entries, self._controlnets.entries() if controls else [], strict=True):
            entry.update(name=entry.get("name") or loaded.source, control_kind=loaded.control_kind)
        inputs = {"video": source.entry() if source is not None else None, "controlnets": entries}
        cond = Conditioning(video, models, maps, [c.scale for c in controls], [c.start for c in controls],
                            [c.end for c in controls])
        return cond, inputs

    def estimate_memory(self, opts: GenerateOptions, *, low_vram: bool | None = None, controlnets: int = 0,
                        video: bool = False, decode_all: bool = False) -> MemoryEstimate:
        """The peak memory a call with fitted ``opts`` needs beyond the loaded models (:mod:`.memory`);
        ``decode_all``: the pipeline decodes every frame at once (SparseCtrl)."""
        if decode_all:
            opts = dataclasses.replace(opts, decode_chunk_size=opts.num_frames)
        texts = list(opts.prompt.values()) if isinstance(opts.prompt, dict) else [opts.prompt]
        tokens = self.pipe.tokenizer.model_max_length * num_chunks(self.pipe.tokenizer,
                                                                   [*texts, opts.negative_prompt or ""])
        return estimate_generation(opts, self.configs["unet"], self.configs["vae"], dtype=self.dtype,
                                   device=self.device, low_vram=self.low_vram if low_vram is None else low_vram,
                                   weights=self.weight_bytes(), prompt_tokens=tokens, controlnets=controlnets,
                                   video=video)

    def check_memory(self, opts: GenerateOptions, *, labels: Mapping[str, str] | None = None,
                     controlnets: int = 0, video: bool = False, decode_all: bool = False) -> None:
        """Refuse (``MotionAdapterError``) a call that will not fit in the memory available now (``controlnets``,
        ``video`` and ``decode_all``: what else the call runs, :meth:`estimate_memory`)."""
        estimate = self.estimate_memory(opts, controlnets=controlnets, video=video, decode_all=decode_all)
        cuda = str(self.device).startswith("cuda")
        check_fits(estimate, available_memory(self.device), opts, labels=labels,
                   host_available=host_available() if cuda else None,
                   alternative=lambda o, low: self.estimate_memory(o, low_vram=low or self.low_vram,
                                                                   controlnets=controlnets, video=video,
                                                                   decode_all=decode_all))

    def weight_bytes(self) -> dict[str, int]:
        """Bytes of each loaded model's parameters and buffers."""
        sizes = {name: _bytes(m) for name in ("unet", "vae", "text_encoder")
                 if (m := getattr(self.pipe, name, None)) is not None}
        if self._controlnets.entries():
            sizes["controlnets"] = sum(_bytes(e.model) for e in self._controlnets.entries())
        if self._sparsectrl.entries():
            sizes["sparsectrl"] = _bytes(self._sparsectrl.entries()[0].model)
        if self._ip.loaded is not None:
            sizes["image_encoder"] = _bytes(self._ip.loaded.encoder)
        return sizes

    def _call_parts(self) -> list[CallPart]:
        """What one call switches on around the pipeline, in order (switched off in reverse)."""
        return [context_windows, prompt_inputs, free_init, self._strength.part]

    def _default_size(self) -> int:
        return self.configs["unet"]["sample_size"] * self.pipe.vae_scale_factor

    # ------------------------------------------------------------- utilities
    @property
    def loras(self) -> dict[str, float]:
        """``{source: weight}`` of the active LoRAs."""
        return self._loras.by_source

    def state_fingerprint(self) -> str:
        """SHA-256 over every tensor of UNet, VAE and text encoder plus the LoRA set (for atomicity checks)."""
        h = hashlib.sha256()
        for comp in ("unet", "vae", "text_encoder"):
            for k, v in sorted(getattr(self.pipe, comp).state_dict().items()):
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        h.update(self._loras.fingerprint())
        h.update(self._controlnets.fingerprint())
        h.update(self._sparsectrl.fingerprint())
        h.update(self._ip.fingerprint())
        h.update(repr(sorted(self.pipe.tokenizer.get_vocab().items())[:50]).encode())
        return h.hexdigest()


def _bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
