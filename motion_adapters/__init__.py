"""motion-adapters: AnimateDiff-style motion modules and LoRA heads for any SD1.5 checkpoint."""

__version__ = "0.1.0"
