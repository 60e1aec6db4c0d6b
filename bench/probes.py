"""Hostile-user probes of the command line: each probe's exit status, whether a traceback was printed, the
first error line and what happened to the user's files; run against this checkout, or against another
checkout's interpreter to compare (``--python /old/checkout/.venv/bin/python``).

    python bench/probes.py                       # -> bench/results/probes.json
    python bench/probes.py --python OLD/.venv/bin/python --label before --out /tmp/before.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = "import sys; from motion_adapters.cli import main; sys.exit(main())"
GEN = ["generate", "--prompt", "a red circle", "--steps", "1", "--frames", "2"]
LORA = "shapes-zoom-lora"


def precious(tmp: Path) -> None:
    (tmp / "userdir").mkdir()
    (tmp / "userdir" / "precious.txt").write_text("mine")


def png_folder(tmp: Path) -> None:
    (tmp / "frames").mkdir()
    for i in range(4):
        (tmp / "frames" / f"{i:04d}.png").write_bytes(b"old")


def text(name: str, body: str):
    return lambda tmp: (tmp / name).write_text(body)


def model_file(python: str, name: str) -> str:
    out = subprocess.run([python, "-c", f"from motion_adapters.registry import model_path; print(model_path('{name}'))"],
                         capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


def copies(python: str, **names: str):
    """Copy embedded model files into the probe's folder (``l="shapes-zoom-lora"`` → ``l.safetensors``)."""
    def setup(tmp: Path) -> None:
        for stem, name in names.items():
            shutil.copyfile(model_file(python, name), tmp / f"{stem}.safetensors")
    return setup


def both(*setups):
    def setup(tmp: Path) -> None:
        for s in setups:
            s(tmp)
    return setup


def listing(tmp: Path) -> dict:
    out = {}
    for p in sorted(tmp.rglob("*")):
        rel = str(p.relative_to(tmp))
        out[rel] = ("dir " if p.is_dir() else "") + oct(stat.S_IMODE(p.stat().st_mode))
    return out


def probes(python: str) -> dict[str, tuple[list[str], object, int]]:
    """name → (argv, setup, timeout seconds)."""
    lora, mm = copies(python, l=LORA), copies(python, mm="shapes-motion")
    return {
        "convert onto a user's folder": (["convert", "mm.safetensors", "userdir", "--to", "diffusers"],
                                         both(mm, precious), 120),
        "convert onto an existing file": (["convert", "l.safetensors", "mine.safetensors", "--to", "ours"],
                                          both(lora, text("mine.safetensors", "mine")), 120),
        "convert onto its own input": (["convert", "l.safetensors", "l.safetensors", "--to", "ours"], lora, 120),
        "convert --to diffusers onto a plain file": (["convert", "mm.safetensors", "plainfile", "--to", "diffusers"],
                                                     both(mm, text("plainfile", "mine")), 120),
        "generate into a 4-PNG folder": ([*GEN, "--seed", "1", "--out", "frames"], png_folder, 300),
        "generate --width 100000 (60 s allowed)": ([*GEN, "--width", "100000", "--out", "w.gif"], None, 60),
        "generate --steps 10000000": ([*GEN[:-4], "--steps", "10000000", "--out", "s.gif"], None, 120),
        "--lora FILE:1e309": ([*GEN, "--lora", f"{LORA}:1e309", "--out", "inf.gif"], None, 300),
        "--lora FILE:abc": ([*GEN, "--lora", "l.safetensors:abc", "--out", "abc.gif"], lora, 120),
        "--set optim.lr=-1 --print-config": (["train", "motion_lora", "--set", "optim.lr=-1", "--print-config"],
                                             None, 120),
        "--set run.mixed_precision=no --print-config": (
            ["train", "motion_lora", "--set", "run.mixed_precision=no", "--print-config"], None, 120),
        "--prompt-file missing": (["generate", "--prompt-file", "none.yaml"], None, 120),
        "--prompt-file malformed": (["generate", "--prompt-file", "p.yaml"], text("p.yaml", "0: [a red"), 120),
        "--prompt-file !!python tag": (["generate", "--prompt-file", "p.yaml"],
                                       text("p.yaml", '!!python/object/apply:os.system ["touch pwned"]'), 120),
        "--out dir.gif (a folder)": ([*GEN, "--out", "dir.gif"], lambda t: (t / "dir.gif").mkdir(), 300),
        "--base /etc/passwd, no --motion": ([*GEN, "--base", "/etc/passwd", "--out", "b.gif"], None, 120),
        "clip permissions (umask 022)": ([*GEN, "--seed", "1", "--out", "clip.gif"], None, 300),
        "app --host 0.0.0.0 (20 s allowed)": (["app", "--host", "0.0.0.0", "--port", "7991"], None, 20),
    }


def run(python: str, name: str, argv: list[str], setup, timeout: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="probe-"))
    try:
        if setup is not None:
            setup(tmp)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([python, "-c", CLI, *argv], cwd=tmp, capture_output=True, text=True,
                                  timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            status, err = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as e:
            status = "timeout"
            err = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        lines = [ln for ln in err.splitlines() if ln.strip() and "%|" not in ln]
        first_error = next((ln for ln in lines if ln.startswith("error:")), lines[-1] if lines else "")
        return {"status": status, "traceback": "Traceback" in err, "error": first_error[:300],
                "seconds": round(time.perf_counter() - t0, 1), "files": listing(tmp)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def pipe_probe(python: str) -> dict:
    """``motion-adapters inspect X X X | head -1``: the reader goes away after one line."""
    path = model_file(python, LORA)
    cmd = f"{python} -c '{CLI}' inspect {path} {path} {path} 2>err.txt | head -1 >/dev/null; echo ${{PIPESTATUS[0]}}"
    tmp = Path(tempfile.mkdtemp(prefix="probe-"))
    try:
        status = subprocess.run(["bash", "-c", cmd], cwd=tmp, capture_output=True, text=True).stdout.strip()
        err = (tmp / "err.txt").read_text()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"status": int(status), "traceback": "Traceback" in err,
            "error": next((ln for ln in err.splitlines() if "Error" in ln or ln.startswith("error:")), "")[:300]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable, help="interpreter whose motion_adapters is probed")
    ap.add_argument("--label", default="after", help="name of this run in the results")
    ap.add_argument("--out", default="bench/results/probes.json", help="results file (JSON)")
    ap.add_argument("--only", nargs="*", help="run only the probes whose names contain these words")
    args = ap.parse_args()
    os.umask(0o022)
    results = {}
    for name, (argv, setup, timeout) in probes(args.python).items():
        if args.only and not any(w in name for w in args.only):
            continue
        results[name] = run(args.python, name, argv, setup, timeout)
        print(f"{name}: {results[name]['status']} {results[name]['error'][:120]}", flush=True)
    if not args.only or any("head" in w for w in args.only):
        results["inspect … | head -1"] = pipe_probe(args.python)
    doc = {"label": args.label, "python": args.python, "machine": platform.processor() or platform.machine(),
           "when": time.strftime("%Y-%m-%d %H:%M"), "probes": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
