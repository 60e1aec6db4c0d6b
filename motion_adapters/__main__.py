"""``python -m motion_adapters``: the command line (the console script ``motion-adapters`` runs the same)."""

from __future__ import annotations

import sys

from motion_adapters.cli import main

if __name__ == "__main__":
    sys.exit(main())
