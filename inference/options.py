"""Validated generation options, shared by the Python API and the CLI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from motion_adapters.errors import MotionAdapterError
from motion_adapters.inference.prompts import parse_prompts
from motion_adapters.inference.schedulers import canonical_name

DEFAULT_CONTEXT = 16


@dataclass
class GenerateOptions:
    prompt: str | dict[int, str]
    negative_prompt: str | None
    num_frames: int
    height: int
    width: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    scheduler: str
    context_length: int | None
    context_overlap: int | None
    free_init_iters: int
    motion_strength: float
    decode_chunk_size: int | None

    @classmethod
    def validate(cls, *, prompt: str | Mapping[int, str] | Sequence[str], max_seq: int, sample_size: int,
                 **kw) -> GenerateOptions:
        """Check every option and fill defaults; errors name the parameter, the expectation and the value."""
        parsed = parse_prompts(prompt)
        frames = _int("num_frames", kw["num_frames"], 1)
        height = _size("height", kw["height"] or sample_size)
        width = _size("width", kw["width"] or sample_size)
        steps = _int("num_inference_steps", kw["num_inference_steps"], 1)
        guidance = _float("guidance_scale", kw["guidance_scale"], 0.0)
        strength = _float("motion_strength", kw["motion_strength"], 0.0)
        free_init = _int("free_init_iters", kw["free_init_iters"] or 0, 0)
        seed = _int("seed", kw["seed"], 0)
        ctx, overlap = kw["context_length"], kw["context_overlap"]
        if ctx is not None:
            ctx = _int("context_length", ctx, 2)
            if ctx > max_seq:
                raise MotionAdapterError(
                    f"context_length: expected at most {max_seq} (the motion module's frame cap), found {ctx}")
        if frames > max_seq or (ctx is not None and ctx < frames):
            ctx = ctx or min(DEFAULT_CONTEXT, max_seq)
        else:
            ctx = None
        if ctx is not None:
            overlap = ctx // 4 if overlap is None else _int("context_overlap", overlap, 0)
            if overlap >= ctx:
                raise MotionAdapterError(f"context_overlap: expected less than context_length {ctx}, found {overlap}")
        elif overlap is not None:
            overlap = _int("context_overlap", overlap, 0)
        if isinstance(parsed, dict) and max(parsed) >= frames:
            raise MotionAdapterError(
                f"prompt travel: expected frame indices below num_frames {frames}, found {max(parsed)}")
        chunk = kw.get("decode_chunk_size")
        if chunk is not None:
            chunk = _int("decode_chunk_size", chunk, 1)
        return cls(prompt=parsed, negative_prompt=kw.get("negative_prompt"), num_frames=frames, height=height,
                   width=width, num_inference_steps=steps, guidance_scale=guidance, seed=seed,
                   scheduler=canonical_name(kw["scheduler"] or "ddim"), context_length=ctx,
                   context_overlap=overlap if ctx is not None else None, free_init_iters=free_init,
                   motion_strength=strength, decode_chunk_size=chunk)

    def as_recipe(self) -> dict:
        d = asdict(self)
        if isinstance(self.prompt, dict):
            d["prompt"] = {str(k): v for k, v in self.prompt.items()}
        return d


def _int(name: str, value, minimum: int) -> int:
    try:
        ok = float(value) == int(value)
        v = int(value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise MotionAdapterError(f"{name}: expected an integer, found {value!r}")
    if v < minimum:
        raise MotionAdapterError(f"{name}: expected at least {minimum}, found {v}")
    return v


def _float(name: str, value, minimum: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise MotionAdapterError(f"{name}: expected a number, found {value!r}") from None
    if v != v or v < minimum:
        raise MotionAdapterError(f"{name}: expected a number ≥ {minimum}, found {value!r}")
    return v


def _size(name: str, value) -> int:
    v = _int(name, value, 8)
    if v % 8:
        raise MotionAdapterError(f"{name}: expected a multiple of 8 (the VAE downsamples by 8), found {v}")
    return v
