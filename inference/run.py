"""One generation: options with the base's defaults → validated options → one pipeline call.

Each optional feature of a call is a *call part*: a context manager ``part(pipe, opts, kwargs)`` that adds its
pipeline arguments to ``kwargs`` and switches its pipeline state on for the call, and off again afterwards
(even when the call fails). What the call is conditioned on besides text (a video, ControlNets and their maps)
is its :class:`Conditioning`, which also picks the pipeline of the mode (:func:`~.pipeline.pipeline_view`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from motion_adapters.clips.recipe import model_entry, toolkit_version
from motion_adapters.compat import execution_device
from motion_adapters.inference.options import GenerateOptions
from motion_adapters.inference.pipeline import MotionAdaptersPipeline, pipeline_view
from motion_adapters.inference.prompts import encode_long, token_count
from motion_adapters.inference.windows import uses_free_noise
from motion_adapters.schedulers import make_scheduler

CallPart = Callable[[MotionAdaptersPipeline, GenerateOptions, dict], AbstractContextManager[None]]
FALLBACK_DEFAULTS = {"num_frames": 16, "num_inference_steps": 25, "guidance_scale": 7.5}


@dataclass
class GenerationResult:
    """Frames as float32 (F, H, W, 3) in [0, 1], the recipe that made them, and the control maps each ControlNet
    followed (fitted to the clip, same layout)."""

    frames: np.ndarray
    recipe: dict = field(default_factory=dict)
    control_maps: list[np.ndarray] = field(default_factory=list)


def with_defaults(defaults: Mapping, **options) -> dict:
    """Options left ``None`` take the base's registered defaults, else 16 frames, 25 steps, guidance 7.5 (and
    the base's own size, filled in by validation)."""
    return {k: v if v is not None else defaults.get(k, FALLBACK_DEFAULTS.get(k)) for k, v in options.items()}


def call_kwargs(opts: GenerateOptions, low_vram: bool) -> dict:
    """The pipeline arguments every call has: size, steps, guidance, CPU-seeded noise, decoding chunk."""
    return dict(num_frames=opts.num_frames, height=opts.height, width=opts.width,
                num_inference_steps=opts.num_inference_steps, guidance_scale=opts.guidance_scale,
                generator=torch.Generator("cpu").manual_seed(opts.seed), output_type="np",
                decode_chunk_size=opts.decode_chunk_size or (2 if low_vram else 16))


@dataclass
class Conditioning:
    """What a call follows besides text: a video (fitted frames, float32 (F, H, W, 3) in [0, 1]) for video to
    video; ControlNets with their fitted control maps, scales and step fractions; or a SparseCtrl encoder with
    its keyframes (fitted pictures (H, W, 3) by frame index); and an image prompt for the attached IP-Adapter."""

    video: np.ndarray | None = None
    controlnets: list = field(default_factory=list)       # live ControlNetModels
    maps: list[np.ndarray] = field(default_factory=list)  # one per ControlNet, fitted like the video
    scales: list[float] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    sparsectrl: torch.nn.Module | None = None             # a live SparseControlNetModel
    keyframes: dict[int, np.ndarray] = field(default_factory=dict)
    sparsectrl_scale: float = 1.0
    ip_image: object | None = None                        # a PIL image, for the IP-Adapter attached to the UNet

    def kwargs(self, opts: GenerateOptions) -> dict:
        """The pipeline arguments of these inputs (one value, not a list, for a single ControlNet)."""
        kw: dict = {}
        if self.ip_image is not None:
            kw.update(ip_adapter_image=self.ip_image)
        if self.sparsectrl is not None:
            kw.update(conditioning_frames=[to_pil(k) for k in self.keyframes.values()],
                      controlnet_frame_indices=list(self.keyframes), controlnet_conditioning_scale=self.sparsectrl_scale)
        if self.video is not None:
            kw.update(video=list(self.video), strength=opts.strength)
        if self.controlnets:
            one = len(self.controlnets) == 1
            kw.update(conditioning_frames=list(self.maps[0]) if one else [list(m) for m in self.maps],
                      controlnet_conditioning_scale=self.scales[0] if one else list(self.scales),
                      control_guidance_start=self.starts[0] if one else list(self.starts),
                      control_guidance_end=self.ends[0] if one else list(self.ends))
        return kw


PLAIN = Conditioning()


def to_pil(picture: np.ndarray) -> Image.Image:
    """A float (H, W, 3) picture in [0, 1] as an 8-bit PIL image (how diffusers' image inputs are given)."""
    return Image.fromarray((np.clip(picture, 0, 1) * 255).round().astype(np.uint8))


def run_pipeline(pipe: MotionAdaptersPipeline, opts: GenerateOptions, parts: Sequence[CallPart], *,
                 low_vram: bool, progress: bool, cond: Conditioning = PLAIN) -> np.ndarray:
    """One pipeline call (of the mode ``cond`` asks for) with ``parts`` switched on around it; frames as float32
    (F, H, W, 3)."""
    pipe.scheduler = make_scheduler(opts.scheduler)
    pipe.set_progress_bar_config(disable=not progress)
    view = pipeline_view(pipe, video=cond.video is not None, controlnets=cond.controlnets,
                         sparsectrl=cond.sparsectrl)
    kwargs = {**call_kwargs(opts, low_vram), **cond.kwargs(opts)}
    if cond.video is not None:
        del kwargs["num_frames"]  # the (fitted) video's length
    if cond.sparsectrl is not None:
        del kwargs["decode_chunk_size"]  # diffusers' SparseCtrl pipeline decodes every frame at once
    if cond.video is not None and denoising_steps(opts) == 0:
        return vae_round_trip(view, cond.video, kwargs)
    with ExitStack() as stack:
        for part in parts:
            stack.enter_context(part(view, opts, kwargs))
        if cond.sparsectrl is not None:
            stack.enter_context(seeded_global_rng(opts.seed, execution_device(view)))
        out = view(**kwargs)
    return np.asarray(out.frames[0], dtype=np.float32)


@contextmanager
def seeded_global_rng(seed: int, device) -> Iterator[None]:
    """torch's global random state seeded with ``seed`` for one call, and restored afterwards: diffusers' SparseCtrl
    pipeline samples the keyframes' VAE latents from it (it takes no generator there)."""
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def denoising_steps(opts: GenerateOptions) -> int:
    """The steps video to video runs: ``strength`` of them, rounded down, as diffusers counts them."""
    steps = opts.num_inference_steps
    return steps if opts.strength is None else min(int(steps * opts.strength), steps)


@torch.no_grad()
def vae_round_trip(view, video: np.ndarray, kwargs: dict) -> np.ndarray:
    """Video to video with no denoising step (strength 0, or too few steps for one): the input encoded as
    video-to-video encodes it, and decoded again."""
    device = execution_device(view)
    pixels = view.video_processor.preprocess_video(video[None], height=kwargs["height"], width=kwargs["width"])
    pixels = pixels.permute(0, 2, 1, 3, 4)[0].to(device=device, dtype=view.vae.dtype)
    chunk = kwargs["decode_chunk_size"]
    latents = view.encode_video(pixels, kwargs["generator"], chunk) * view.vae.config.scaling_factor
    frames = view.decode_latents(latents[None].permute(0, 2, 1, 3, 4), chunk)
    return np.asarray(view.video_processor.postprocess_video(frames, output_type="np")[0], dtype=np.float32)


@contextmanager
def prompt_inputs(pipe: MotionAdaptersPipeline, opts: GenerateOptions, kwargs: dict) -> Iterator[None]:
    """Prompts as text, or as chunked embeddings when one is longer than the tokenizer's 77 tokens (prompt
    travel and context windows encode long prompts in the pipeline's FreeNoise encoder instead)."""
    texts = [opts.prompt, opts.negative_prompt or ""]
    if not uses_free_noise(opts) and needs_long_encoding(pipe, texts):
        emb = encode_long(pipe, texts, execution_device(pipe))
        kwargs.update(prompt_embeds=emb[:1], negative_prompt_embeds=emb[1:])
    else:
        kwargs.update(prompt=opts.prompt, negative_prompt=opts.negative_prompt)
    yield


def needs_long_encoding(pipe: MotionAdaptersPipeline, texts: Sequence[str]) -> bool:
    limit = pipe.tokenizer.model_max_length - 2
    return any(token_count(pipe.tokenizer, t) > limit for t in texts if t)


@contextmanager
def free_init(pipe: MotionAdaptersPipeline, opts: GenerateOptions, _kwargs: dict) -> Iterator[None]:
    """FreeInit noise re-initialisation (``free_init_iters`` rounds) for one call."""
    if not opts.free_init_iters:
        yield
        return
    pipe.enable_free_init(num_iters=opts.free_init_iters, use_fast_sampling=False, method="butterworth")
    try:
        yield
    finally:
        pipe.disable_free_init()


def make_recipe(opts: GenerateOptions, frames: np.ndarray, *, base_source: str, motion_source: str,
                loras: Mapping[str, float], device: str, dtype: torch.dtype,
                inputs: Mapping[str, object] | None = None) -> dict:
    """Everything that reproduces the clip: options, output size, models (hashes), LoRA weights, device, and
    the ``inputs`` entries (the video and the ControlNets with their maps, each with its SHA-256)."""
    recipe = opts.as_recipe()
    recipe.update(inputs or {})
    recipe.update(
        height=int(frames.shape[1]), width=int(frames.shape[2]),
        base=model_entry(base_source), motion=model_entry(motion_source),
        loras=[{**(model_entry(source) or {}), "weight": weight} for source, weight in loras.items()],
        device=str(device), dtype=str(dtype).replace("torch.", ""), toolkit=toolkit_version(),
    )
    return recipe
