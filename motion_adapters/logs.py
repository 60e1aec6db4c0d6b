"""Command-line logging: our messages, without third-party noise that users cannot act on.

diffusers, transformers and bitsandbytes log some of that noise while they are being imported, so
:func:`quiet_known_noise` imports none of them: it puts filters on the very loggers that emit it (a logger's
filters act whatever handler prints the record later), and importing ``motion_adapters`` calls it first.
"""

from __future__ import annotations

import logging

# the logger that emits each harmless message, and the message (a substring of it)
KNOWN_NOISE: dict[str, tuple[str, ...]] = {
    # transformers image processors: we never use them
    "transformers.utils.import_utils": ("requires torchvision (not installed)",),
    # bitsandbytes' optional CPU 4-bit kernel: we never use 4-bit
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward",),
    # diffusers' .to(): an empty list, nothing to act on
    "diffusers.loaders.lora_base": ("No LoRA keys associated to CLIPTextModel",),  # UNet-only LoRAs: by design
    "diffusers.models.modeling_utils": ("should be kept in float32: []",),
}


class _DropNoise(logging.Filter):
    def __init__(self, texts: tuple[str, ...]):
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(t in msg for t in self.texts)


def quiet_known_noise() -> None:
    """Drop the known harmless third-party messages (idempotent; safe before those libraries are imported)."""
    for name, texts in KNOWN_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise(texts))


def setup_cli_logging(verbose: bool = False) -> None:
    """Configure logging for the CLI: warnings (debug with ``verbose``), known noise dropped."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    quiet_known_noise()
