"""motion-adapters: AnimateDiff-style motion modules and LoRA heads for any SD1.5 checkpoint."""

__version__ = "0.1.0"

from motion_adapters.logs import quiet_known_noise  # noqa: E402

quiet_known_noise()  # known harmless third-party messages, logged while those libraries import
