"""What the shapes-world benches share: the machine a run used and its results JSON, rewritten after every arm
(imported as ``recording`` by the scripts in this folder, which Python puts first on the path)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from motion_adapters.clips.eval_cli import no_nan


def machine_info() -> dict:
    """The CPU, cores, threads, versions and load average of this machine."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "load_avg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


def run_recorded(script: str, a: argparse.Namespace, argv: list[str] | None,
                 run_parsed: Callable[..., dict], table: Callable[[dict], str]) -> int:
    """``run_parsed(a)`` with its results written to ``a.out`` (command, time, machine, seconds) after every
    arm and at the end; prints ``table`` of them."""
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    head = {"command": f"python {script} " + " ".join(argv if argv is not None else sys.argv[1:]),
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
