"""Shapes-world pictures as keyframes (SparseCtrl RGB): :mod:`motion_adapters.shapes.eval_images` with fixed
seeds, written with the machine it ran on.

    python bench/shapes_images.py                                    # -> bench/results/shapes_images.json
    python bench/shapes_images.py --gif docs/image_to_video.gif      # + the docs' demo GIF

The encoder arms (image to video, first + last) run when ``shapes-rgb-sparsectrl`` is registered and built
(or ``--encoder`` names a file) and are skipped with a message in the JSON otherwise; the text-only arm always
runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from recording import run_recorded

from motion_adapters.shapes.eval_images import build_parser, run_parsed, table

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULT = Path(__file__).resolve().parent / "results" / "shapes_images.json"


def main(argv: list[str] | None = None) -> int:
    p = build_parser(__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(RESULT), help="where the JSON goes")
    a = p.parse_args(argv)
    return run_recorded("bench/shapes_images.py", a, argv, run_parsed, table)


if __name__ == "__main__":
    sys.exit(main())
