"""The Library tab's operations: inspect a model (what ``motion-adapters inspect`` reports), convert it to
another layout, and add an uploaded model file to the models directory."""

from __future__ import annotations

import shutil
from pathlib import Path

from motion_adapters.app.models import DATASET, WEIGHT_SUFFIXES, ModelLibrary, sniff_file
from motion_adapters.app.requests import BadRequest, as_name, check_upload
from motion_adapters.convert import convert
from motion_adapters.errors import MotionAdapterError
from motion_adapters.loading import inspect_path
from motion_adapters.registry import base_config_for
from motion_adapters.report import format_report

CONVERTED_DIR = "converted"
UPLOADS_DIR = "uploads"
TARGETS = {  # kind -> layouts it converts to
    "motion": ("ours", "original", "diffusers"),
    "lora": ("ours", "original", "diffusers", "kohya"),
    "base": ("original", "diffusers"),
}


def inspect_entry(library: ModelLibrary, name: str) -> dict:
    """The inspect report of a library model (or a dataset's first rows)."""

    entry = library.resolve(None, name)
    if entry.kind == DATASET:
        meta = next(p for p in (entry.path / "metadata.jsonl", entry.path / "metadata.csv") if p.exists())
        return {"path": str(entry.path), "kind": "dataset", "format": meta.name,
                "rows": entry.detail, "first_lines": meta.read_text(errors="replace").splitlines()[:6]}
    report = inspect_path(entry.path)
    report["name"] = entry.name
    return report


def inspect_upload(path: str, max_bytes: int) -> dict:
    check_upload(path, WEIGHT_SUFFIXES, max_bytes, "Upload")
    report = inspect_path(path)
    report["path"] = Path(path).name  # not the server's temporary folder
    return report


def report_text(report: dict) -> str:
    if report.get("kind") == "dataset":
        return "\n".join([f"{'path':>16}: {report['path']}", f"{'kind':>16}: {report['rows']}",
                          *(f"{'':>18}{line}" for line in report["first_lines"])])

    return format_report(report)


def convert_entry(library: ModelLibrary, name: str, to: str, out_name: str | None = None) -> str:
    """Convert a library model to ``to`` into ``MODELS_DIR/converted/``; rescans and returns the new name."""

    entry = library.resolve(None, name)
    targets = TARGETS.get(entry.kind)
    if targets is None:
        raise BadRequest(f"Convert: {name!r} is a {entry.kind}; expected a base, motion module or LoRA")
    if to not in targets:
        raise BadRequest(f"Convert to: a {entry.kind} converts to {', '.join(targets)}, found {to!r}")
    stem = Path(entry.registered or entry.path.name).name.split(".")[0]
    out_name = as_name("Output name", out_name, f"{stem}-{to}")
    folder = to == "diffusers"
    if not folder and not out_name.endswith((".safetensors", ".ckpt")):
        out_name += ".safetensors"
    dst = library.workspace / CONVERTED_DIR / out_name
    if dst.exists():
        raise BadRequest(f"Output name: {CONVERTED_DIR}/{out_name} exists already; expected a new name")
    config = base_config_for(entry.registered) if entry.registered else None
    dst.parent.mkdir(parents=True, exist_ok=True)
    convert(entry.path, dst, to, config=config)
    library.scan()
    new = [e.name for e in library.entries() if e.path == dst.resolve()]
    if not new:
        raise MotionAdapterError(f"converted {name} to {dst}, but the result was not recognised as a model")
    return new[0]


def add_upload(library: ModelLibrary, path: str, max_bytes: int) -> str:
    """Copy an uploaded model into ``MODELS_DIR/uploads/`` when it is a recognised model; returns its name."""
    check_upload(path, WEIGHT_SUFFIXES, max_bytes, "Upload")
    src = Path(path)
    if sniff_file(src) is None:
        raise BadRequest(f"Upload: expected a base, motion module, LoRA, ControlNet, SparseCtrl encoder or "
                         f"IP-Adapter, found {src.name!r}, which this toolkit "
                         "does not recognise")
    name = as_name("Upload name", src.name, "model.safetensors")
    dst = library.workspace / UPLOADS_DIR / name
    if dst.exists():
        raise BadRequest(f"Upload: {UPLOADS_DIR}/{name} exists already in the models directory; rename the file")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{name}.part")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
    library.scan()
    return next(e.name for e in library.entries() if e.path == dst.resolve())
