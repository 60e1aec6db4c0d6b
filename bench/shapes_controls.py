"""Shapes-world video to video and ControlNet benchmark: :mod:`motion_adapters.shapes.eval_controls`
with fixed seeds, written with the machine it ran on.

    python bench/shapes_controls.py                                  # -> bench/results/shapes_controls.json
    python bench/shapes_controls.py --gif docs/v2v_controlnet.gif    # + the docs' side-by-side GIF
    python bench/shapes_controls.py --gif-only --gif docs/v2v_controlnet.gif   # the GIF alone
    python bench/shapes_controls.py --stand-in --cn-n 4 --out /tmp/x.json   # ControlNet path, untrained stand-in

The ControlNet arms (video to video that also follows the input's silhouettes, and a silhouette against the
prompt) run when ``shapes-silhouette-controlnet`` is registered and built, and are skipped with a message in the
JSON otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from recording import run_recorded

from motion_adapters.shapes.eval_controls import (
    CONTROLNET,
    build_parser,
    gif_only,
    run_parsed,
    stand_in_controlnet,
    table,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULT = Path(__file__).resolve().parent / "results" / "shapes_controls.json"


def main(argv: list[str] | None = None) -> int:
    p = build_parser(__doc__.split("\n\n")[0])
    p.add_argument("--gif-only", action="store_true", help="write only --gif (its 3 clips per strength), no JSON")
    p.add_argument("--out", default=str(RESULT), help="where the JSON goes")
    a = p.parse_args(argv)
    if a.gif_only:
        print(gif_only(a.gif or "docs/v2v_controlnet.gif", a.seed, a.steps,
                       stand_in_controlnet() if a.stand_in else CONTROLNET,
                       say=lambda m: print(m, file=sys.stderr, flush=True)))
        return 0
    return run_recorded("bench/shapes_controls.py", a, argv, run_parsed, table)


if __name__ == "__main__":
    sys.exit(main())
