"""How an adapter is used: the hot-swapping ``VideoGenerator``."""

from .generator import GenerationResult, VideoGenerator

__all__ = ["GenerationResult", "VideoGenerator"]
