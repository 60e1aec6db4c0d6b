"""Recipes: everything needed to make a clip again, with content hashes of the model files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from motion_adapters import __version__
from motion_adapters.registry import is_registered, model_path

RECIPE_KEY = "motion-adapters"  # key of the recipe in PNG text chunks / metadata dicts
_HASH_CACHE: dict[tuple, str] = {}


def _cache_file() -> Path:
    root = os.environ.get("MOTION_ADAPTERS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "motion-adapters")
    return Path(root) / "file-hashes.json"


def _weight_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    exts = {".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".json", ".txt"}
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in exts)


def file_hash(path: str | Path) -> str | None:
    """SHA-256 of a file (or of a folder's weight and config files), cached by size and mtime."""
    p = Path(path)
    if not p.exists():
        return None
    files = _weight_files(p)
    stamp = (str(p.resolve()), tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if stamp in _HASH_CACHE:
        return _HASH_CACHE[stamp]
    key = hashlib.sha1(repr(stamp).encode()).hexdigest()
    cache = _cache_file()
    disk: dict = {}
    if cache.exists():
        try:
            disk = json.loads(cache.read_text())
        except (OSError, json.JSONDecodeError):
            disk = {}
    if key in disk:
        _HASH_CACHE[stamp] = disk[key]
        return disk[key]
    h = hashlib.sha256()
    for f in files:
        if len(files) > 1:
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    digest = h.hexdigest()
    _HASH_CACHE[stamp] = digest
    try:
        disk[key] = digest
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(disk))
        os.replace(tmp, cache)
    except OSError:
        pass
    return digest


def model_entry(src: str | Path | None) -> dict | None:
    """Name, path and short hash of a model for the recipe (embedded defaults keep their short name)."""
    if src is None:
        return None
    if str(src) == "none":  # generated without a motion module
        return {"name": "none", "path": "none", "sha256": None}

    if is_registered(str(src)):
        p = model_path(str(src), check=False)
        return {"name": str(src), "path": str(src), "sha256": file_hash(p) if p.exists() else None}
    p = Path(src)
    digest = file_hash(p)
    return {"name": p.name if p.exists() else str(src), "path": str(src), "sha256": digest}


def toolkit_version() -> str:
    return f"motion-adapters {__version__}"


def dumps(recipe: dict) -> str:
    return json.dumps(recipe, sort_keys=True, ensure_ascii=False)
