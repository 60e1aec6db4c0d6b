"""The console entry point (``motion-adapters``, ``python -m motion_adapters``): known third-party import
noise is silenced before the command line imports diffusers and friends, then the CLI runs."""

from __future__ import annotations

import sys

from motion_adapters.logs import quiet_known_noise

quiet_known_noise()

from motion_adapters.cli import main  # noqa: E402 - after the filters: these imports log the noise

if __name__ == "__main__":
    sys.exit(main())
