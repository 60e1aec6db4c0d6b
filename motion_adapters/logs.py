"""Command-line logging: our messages, without third-party import-time noise that users cannot act on."""

from __future__ import annotations

import logging

from motion_adapters.compat import transformers_root_logger

_NOISE = (
    "requires torchvision (not installed)",  # transformers image processors: we never use them
    "Failed to load CPU gemm_4bit_forward",  # bitsandbytes optional CPU 4-bit kernel: we never use 4-bit
    "should be kept in float32: []",  # diffusers from_pipe: an empty list, nothing to act on
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(n in msg for n in _NOISE)


def setup_cli_logging(verbose: bool = False) -> None:
    """Configure logging for the CLI and drop known harmless third-party warnings."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    noise = _DropNoise()
    for name in ("", "transformers", "bitsandbytes", "diffusers"):
        logging.getLogger(name).addFilter(noise)
    for handler in logging.getLogger().handlers:
        handler.addFilter(noise)
    try:  # transformers and diffusers log through their own handlers
        for h in transformers_root_logger().handlers:
            h.addFilter(noise)
    except Exception:  # pragma: no cover - logging tweaks must never break the CLI
        pass
