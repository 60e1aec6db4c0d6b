"""Shapes-world video to video and ControlNet benchmark (issue #19): :mod:`motion_adapters.shapes.eval_controls`
with fixed seeds, written with the machine it ran on.

    python bench/shapes_controls.py                                  # -> bench/results/shapes_controls.json
    python bench/shapes_controls.py --gif docs/v2v_controlnet.gif    # + the docs' side-by-side GIF
    python bench/shapes_controls.py --gif-only --gif docs/v2v_controlnet.gif   # the GIF alone
    python bench/shapes_controls.py --stand-in --cn-n 4 --out /tmp/x.json   # ControlNet path, untrained stand-in

The ControlNet arm runs when ``shapes-silhouette-controlnet`` is registered and built, and is skipped with a
message in the JSON otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from motion_adapters.clips.eval_cli import no_nan
from motion_adapters.shapes.eval_controls import (
    CONTROLNET,
    eval_controls,
    gif_only,
    parse_arms,
    stand_in_controlnet,
    table,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULT = Path(__file__).resolve().parent / "results" / "shapes_controls.json"


def machine_info() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "load_avg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=32, help="clips per V2V arm (default 32)")
    p.add_argument("--cn-n", type=int, default=None, help="clips per ControlNet arm (default --n)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the registered 25)")
    p.add_argument("--arm", action="append", default=None, metavar="BASE:STRENGTH",
                   help="a V2V arm (repeatable; default shapes-paper at 0, 0.6 and 1)")
    p.add_argument("--motion-strength", type=float, default=1.0,
                   help="of the V2V arms (0: the motion module's residual off, a diagnostic)")
    p.add_argument("--stand-in", action="store_true", help="ControlNet arm with an untrained stand-in")
    p.add_argument("--gif", default=None, help="also write the side-by-side GIF here")
    p.add_argument("--gif-only", action="store_true", help="write only --gif (its 3 clips per strength), no JSON")
    p.add_argument("--out", default=str(RESULT))
    a = p.parse_args(argv)
    if a.gif_only:
        print(gif_only(a.gif or "docs/v2v_controlnet.gif", a.seed, a.steps,
                       stand_in_controlnet() if a.stand_in else CONTROLNET,
                       say=lambda m: print(m, file=sys.stderr, flush=True)))
        return 0
    machine = machine_info()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    head = {"command": "python bench/shapes_controls.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "when": time.strftime("%Y-%m-%d %H:%M"), "machine": machine}
    t0 = time.perf_counter()

    def write(res: dict) -> None:   # after every arm, so a long run leaves what it measured
        out.write_text(json.dumps(no_nan({**head, "seconds": time.perf_counter() - t0, **res}), indent=2,
                                  default=str))

    res = eval_controls(a.n, a.seed, a.steps, parse_arms(a.arm),
                        stand_in_controlnet() if a.stand_in else CONTROLNET, a.cn_n, a.gif,
                        say=lambda m: print(m, file=sys.stderr, flush=True), on_arm=write,
                        motion_strength=a.motion_strength)
    write(res)
    print(table(res))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
