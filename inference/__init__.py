"""How an adapter is used: the hot-swapping ``VideoGenerator`` (imported lazily, so that light modules such as
``inference.toy_eval`` load without torch/diffusers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .generator import GenerationResult, VideoGenerator

__all__ = ["GenerationResult", "VideoGenerator"]


def __getattr__(name: str):
    if name in __all__:
        from . import generator

        return getattr(generator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
