"""Motion strength: a forward hook on every motion module's ``proj_out`` scales its residual for one call."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from motion_adapters.inference.options import GenerateOptions
from motion_adapters.inference.pipeline import MotionAdaptersPipeline

_MOTION_PROJ_OUT = re.compile(r"motion_modules\.\d+\.proj_out$")


class MotionStrength:
    """0 = frames denoised independently, 1 = as trained (the output passes unchanged), > 1 exaggerates."""

    def __init__(self) -> None:
        self.value = 1.0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def install(self, unet: torch.nn.Module) -> None:
        """Hook the motion modules of ``unet`` (after a rebuild: the new UNet's, the old hooks removed)."""
        for handle in self._handles:
            handle.remove()
        self._handles = [module.register_forward_hook(self._hook) for name, module in unet.named_modules()
                         if _MOTION_PROJ_OUT.search(name)]

    def _hook(self, _module, _inputs, output):
        return None if self.value == 1.0 else output * self.value

    @contextmanager
    def part(self, _pipe: MotionAdaptersPipeline, opts: GenerateOptions, _kwargs: dict) -> Iterator[None]:
        """For one call: ``opts.motion_strength``; back to 1 afterwards."""
        self.value = opts.motion_strength
        try:
            yield
        finally:
            self.value = 1.0
