"""Shapes-world pictures as keyframes (SparseCtrl RGB): :mod:`motion_adapters.shapes.eval_images` with fixed
seeds, written with the machine it ran on.

    python bench/shapes_images.py                                    # -> bench/results/shapes_images.json
    python bench/shapes_images.py --gif docs/image_to_video.gif      # + the docs' demo GIF

The encoder arms (image to video, first + last) run when ``shapes-rgb-sparsectrl`` is registered and built
(or ``--encoder`` names a file) and are skipped with a message in the JSON otherwise; the text-only arm always
runs.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from motion_adapters.clips.eval_cli import no_nan
from motion_adapters.shapes.eval_images import build_parser, run_parsed, table

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULT = Path(__file__).resolve().parent / "results" / "shapes_images.json"


def machine_info() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "load_avg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


def main(argv: list[str] | None = None) -> int:
    p = build_parser(__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(RESULT), help="where the JSON goes")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    head = {"command": "python bench/shapes_images.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "when": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_info()}
    t0 = time.perf_counter()

    def write(res: dict) -> None:   # after every arm, so a long run leaves what it measured
        out.write_text(json.dumps(no_nan({**head, "seconds": time.perf_counter() - t0, **res}), indent=2,
                                  default=str))

    res = run_parsed(a, on_arm=write)
    write(res)
    print(table(res))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
