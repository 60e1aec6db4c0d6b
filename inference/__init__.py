"""How an adapter is used: the hot-swapping :class:`VideoGenerator` and the ``generate`` command."""

from motion_adapters.inference.generator import GenerationResult, VideoGenerator

__all__ = ["GenerationResult", "VideoGenerator"]
