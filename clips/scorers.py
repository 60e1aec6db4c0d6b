"""Per-clip scores and the registry that extra filters (aesthetics, OCR text area, …) plug into.

A scorer sees a :class:`ClipView` — the clip's frames sampled at about 2 fps, RGB uint8 at the analysis
size (short side 64 px by default), plus per-frame luma statistics of every frame — and returns one float.
``curate`` stores every score in ``scores.csv`` and lets ``--drop-bottom/--drop-top/--min/--max`` filter on
any of them by name.

Built in (no weights): ``brightness`` (mean luma 0–255) and ``contrast`` (mean per-frame luma std 0–255;
low = uniform: blank, title cards, heavy blur). ``motion`` (the SVD score) is computed by ``curate``
itself because it needs its own flow-sized frames.

No aesthetic or OCR scorer ships: their weights (LAION aesthetic head on CLIP ViT-L/14, CRAFT) are not
available offline from a package we can depend on. Add one by registering a factory::

    from motion_adapters.clips.scorers import register_scorer

    @register_scorer("aesthetic", higher_is_better=True)
    def make_aesthetic():
        model = ...                       # load local weights once per worker
        return lambda view: float(model(view.samples).mean())

or from another package through the ``motion_adapters.scorers`` entry-point group (each entry point is such
a factory, decorated or not), then run ``curate --score aesthetic --drop-bottom aesthetic=25``. Worker
processes are spawned, so a scorer registered only in your own script needs ``workers=1``; entry points
are seen by every worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from motion_adapters.errors import MotionAdapterError


@dataclass
class ClipView:
    """What a scorer may look at for one clip."""

    samples: np.ndarray      # (N, h, w, 3) uint8, frames sampled at ~2 fps inside the clip
    luma: np.ndarray         # (F,) mean luma of every frame of the clip
    contrast: np.ndarray     # (F,) luma std of every frame of the clip
    fps: float


Scorer = Callable[[ClipView], float]


@dataclass(frozen=True)
class ScorerInfo:
    name: str
    factory: Callable[[], Scorer]
    higher_is_better: bool = True
    builtin: bool = False


_REGISTRY: dict[str, ScorerInfo] = {}


def register_scorer(name: str, higher_is_better: bool = True, builtin: bool = False):
    """Decorator registering a factory ``() -> (ClipView -> float)`` under ``name``."""

    def deco(factory: Callable[[], Scorer]) -> Callable[[], Scorer]:
        _REGISTRY[name] = ScorerInfo(name, factory, higher_is_better, builtin)
        return factory

    return deco


@register_scorer("brightness", builtin=True)
def _brightness() -> Scorer:
    return lambda v: float(np.mean(v.luma))


@register_scorer("contrast", builtin=True)
def _contrast() -> Scorer:
    return lambda v: float(np.mean(v.contrast))


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group="motion_adapters.scorers"):
        if ep.name not in _REGISTRY:
            obj = ep.load()
            if ep.name not in _REGISTRY:  # a plain factory, not decorated
                _REGISTRY[ep.name] = ScorerInfo(ep.name, obj)


def available() -> dict[str, ScorerInfo]:
    """Every registered scorer (entry points included)."""
    _load_entry_points()
    return dict(_REGISTRY)


def builtin_names() -> list[str]:
    return [n for n, s in _REGISTRY.items() if s.builtin]


def make_scorers(extra: list[str]) -> dict[str, Scorer]:
    """Instantiate the built-in scorers plus the named extra ones (``--score``)."""
    reg = available() if extra else _REGISTRY
    unknown = [n for n in extra if n not in reg]
    if unknown:
        raise MotionAdapterError(f"--score {unknown[0]}: expected one of {sorted(reg)}, found an unregistered name")
    names = [*builtin_names(), *[n for n in extra if n not in builtin_names()]]
    return {n: reg[n].factory() for n in names}
