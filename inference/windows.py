"""FreeNoise context windows for clips longer than the motion module's frame cap, and prompt travel."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from motion_adapters.compat import FREE_NOISE_BLOCK_CLASSES, set_free_noise_block, set_free_noise_state
from motion_adapters.inference.options import GenerateOptions
from motion_adapters.inference.pipeline import MotionAdaptersPipeline

_MOTION_BLOCK = re.compile(r"motion_modules\.\d+\.transformer_blocks\.\d+$")


def uses_free_noise(opts: GenerateOptions) -> bool:
    """Context windows are on for prompt travel and whenever the options ask for windows."""
    return isinstance(opts.prompt, dict) or opts.context_length is not None


def motion_blocks(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of every motion module (plain or FreeNoise)."""
    return [m for name, m in unet.named_modules()
            if _MOTION_BLOCK.search(name) and isinstance(m, FREE_NOISE_BLOCK_CLASSES)]


def set_context(pipe: MotionAdaptersPipeline, length: int | None, stride: int) -> None:
    """Switch FreeNoise context windows on (``length`` frames, windows ``stride`` apart) or off (``None``).

    The motion transformer blocks change class in place instead of being rebuilt as diffusers'
    ``enable_free_noise`` does (which copies the weights, dropping PEFT LoRA wrappers and breaking in-place
    swaps); the very same parameters stay.
    """
    for block in motion_blocks(pipe.unet):
        set_free_noise_block(block, length, stride)
    set_free_noise_state(pipe, length, stride)


@contextmanager
def context_windows(pipe: MotionAdaptersPipeline, opts: GenerateOptions, kwargs: dict) -> Iterator[None]:
    """For one call: windows of ``context_length`` frames (else the whole clip) overlapping by
    ``context_overlap``; always off again afterwards."""
    if not uses_free_noise(opts):
        yield
        return
    length = opts.context_length or opts.num_frames
    set_context(pipe, length, length - (opts.context_overlap or 0))
    try:
        yield
    finally:
        set_context(pipe, None, 0)
