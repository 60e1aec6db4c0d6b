"""Registry of embedded models: short names usable wherever a model path is (``--base``, ``--motion``,
``--lora``, ``VideoGenerator``, training configs).

The core knows no model by name. Model packs register into it: an installed distribution names a
``register()`` function under the ``motion_adapters.models`` entry-point group, which is called once, the
first time the registry is read. The shipped shapes world (:mod:`motion_adapters.shapes.models`) is one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from .errors import MotionAdapterError

ENTRY_POINT_GROUP = "motion_adapters.models"
KINDS = ("sd_checkpoint", "motion_module", "motion_lora", "spatial_lora", "controlnet", "sparsectrl", "ip_adapter")


@dataclass(frozen=True)
class RegisteredModel:
    """One embedded model: where it lives, what it is, and how to generate with it."""

    name: str
    kind: str                              # one of KINDS
    locate: Callable[[], Path]             # its file or diffusers folder (looked up on each use)
    description: str
    family: str = ""                       # models of one family fit each other (a base and its motion module)
    config: str | None = None              # registered name whose folder describes this single-file base
    defaults: Callable[[], dict] = field(default=dict)  # generation defaults (size, frames, steps, guidance, fps)
    build_hint: str = ""                   # how to make the weights when they are missing


_MODELS: dict[str, RegisteredModel] = {}
_DEFAULTS: dict[str, str] = {}             # role ("base" / "motion" / "sparsectrl") -> registered name
_lock = threading.RLock()
_loaded = False


def register(model: RegisteredModel, default_for: str | None = None) -> None:
    """Add (or replace) ``model``; ``default_for="base"``/``"motion"`` makes it what commands use unasked."""
    if model.kind not in KINDS:
        raise MotionAdapterError(f"registry: {model.name}: expected kind in {KINDS}, found {model.kind!r}")
    with _lock:
        _MODELS[model.name] = model
        if default_for is not None:
            _DEFAULTS[default_for] = model.name


def _load_plugins() -> None:
    global _loaded
    with _lock:
        if _loaded:
            return
        _loaded = True
        seen: set[str] = set()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.value in seen:  # the same distribution seen twice on sys.path
                continue
            seen.add(ep.value)
            ep.load()()


def models() -> dict[str, RegisteredModel]:
    """Every registered model by name."""
    _load_plugins()
    return dict(_MODELS)


def get(name: str) -> RegisteredModel:
    return models()[name]


def is_registered(name: str | Path) -> bool:
    return isinstance(name, str) and name in models()


def default(role: str) -> str | None:
    """The registered name used when a command is given no model for ``role`` (``base`` or ``motion``)."""
    _load_plugins()
    return _DEFAULTS.get(role)


def model_path(name: str, check: bool = True) -> Path:
    """The file or folder of a registered model; a clear error when it has not been built yet."""
    entry = get(name)
    p = entry.locate()
    if check and not p.exists():
        hint = f" {entry.build_hint}" if entry.build_hint else ""
        raise MotionAdapterError(f"{name}: the embedded model is not built yet (expected {p}).{hint} "
                                 "Or pass a path instead.")
    return p


def is_available(name: str) -> bool:
    return is_registered(name) and model_path(name, check=False).exists()


def base_config_for(src: str | Path) -> Path | None:
    """The diffusers folder describing a registered single-file base (its architecture and tokenizer)."""
    if is_registered(str(src)) and get(str(src)).config:
        return model_path(get(str(src)).config)
    return None


def same_family(a: str | Path, b: str | Path) -> bool:
    """Whether two registered models belong together (e.g. a base and the motion module trained on it)."""
    return is_registered(str(a)) and is_registered(str(b)) and get(str(a)).family == get(str(b)).family


def default_motion_for(base: str | Path) -> str | None:
    """The default motion module when it fits ``base`` (a registered base of the same family), else None."""
    motion = default("motion")
    return motion if motion is not None and same_family(base, motion) else None


def default_sparsectrl_for(base: str | Path) -> str | None:
    """The default SparseCtrl encoder (role ``sparsectrl``) when one is registered, built, and of ``base``'s
    family: what animates a picture on that base when no encoder is named."""
    name = default("sparsectrl")
    return name if name is not None and same_family(base, name) and is_available(name) else None


def generation_defaults(name: str) -> dict:
    """Generation defaults of a registered model ({} for anything else)."""
    return dict(get(name).defaults()) if is_registered(name) else {}


def _size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else 0


def list_models() -> list[dict]:
    """One row per registered model: name, kind, family, present, size in bytes, path, description."""
    rows = []
    for m in models().values():
        p = model_path(m.name, check=False)
        rows.append({"name": m.name, "kind": m.kind, "family": m.family, "present": p.exists(),
                     "size_bytes": _size(p), "path": str(p), "description": m.description,
                     "build_hint": m.build_hint})
    return rows
