"""The generator's ControlNets: each file read, checked against the base and built once, kept while in use.

A request names the ControlNets one call follows (:class:`ControlInput`: the model, its control maps, a scale
and the fraction of the steps it acts on). Every new file is read, checked and built before the active set
changes, so a failed load leaves the generator as it was; removing them all gives the plain pipeline back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import ControlNetModel

from motion_adapters.errors import AdapterFormatError, MotionAdapterError
from motion_adapters.hub import resolve_source
from motion_adapters.inference.inputs import FrameInput, Frames
from motion_adapters.inference.options import finite_number
from motion_adapters.kinds import KIND_CONTROLNET
from motion_adapters.loading import load_adapter
from motion_adapters.registry import is_registered
from motion_adapters.swap import build_controlnet, check_controlnet_fits_base

MAX_CONTROL_SCALE = 10.0  # ControlNets are trained at 1; beyond a few the picture breaks up


@dataclass
class ControlInput:
    """One ControlNet of a call. ``model``: a path, a registered name or a live ``ControlNetModel``;
    ``frames``: its control maps (a video, a folder of images or an array), or ``None`` with ``preprocessor``
    (``canny``, ``silhouette``) to compute them from the call's ``video``; ``scale``: how strongly it steers;
    ``start``/``end``: the fraction of the denoising steps it acts on."""

    model: str | Path | ControlNetModel
    frames: FrameInput | Frames | None = None
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0
    preprocessor: str | None = None

    @property
    def source(self) -> str:
        """How the model is named in recipes and errors."""
        if isinstance(self.model, ControlNetModel):
            return f"<ControlNetModel {id(self.model):x}>"
        return str(self.model)


ControlRequest = ControlInput | Mapping | Sequence


def control_inputs(items: Iterable[ControlRequest] | None, *, label: str = "controlnets") -> list[ControlInput]:
    """Requests as :class:`ControlInput` (a ``ControlInput``, a dict of its fields, or ``(model, frames[, scale])``),
    numbers checked: scale 0–10, 0 ≤ start < end ≤ 1; errors number the ControlNets from 1."""
    out = []
    for i, item in enumerate(items or [], 1):
        name = f"{label} {i}"
        if isinstance(item, ControlInput):
            ci = item
        elif isinstance(item, Mapping):
            try:
                ci = ControlInput(**item)
            except TypeError as e:
                raise MotionAdapterError(f"{name}: expected the fields of ControlInput, found {sorted(item)}") from e
        elif isinstance(item, Sequence) and not isinstance(item, str) and 1 <= len(item) <= 3:
            ci = ControlInput(*item)
        else:
            raise MotionAdapterError(f"{name}: expected a ControlInput, a dict or (model, frames[, scale]), "
                                     f"found {type(item).__name__}")
        scale, start, end = check_control_numbers(name, ci.scale, ci.start, ci.end)
        if ci.frames is None and not ci.preprocessor:
            raise MotionAdapterError(f"{name}: expected control maps (frames=) or a preprocessor to compute them "
                                     "from the video, found neither")
        out.append(ControlInput(ci.model, ci.frames, scale, start, end, ci.preprocessor))
    sources = [c.source for c in out]
    twice = sorted(s for s in sources if sources.count(s) > 1)
    if twice:
        raise MotionAdapterError(f"{label}: expected each ControlNet once, found {twice[0]!r} twice")
    return out


def check_control_numbers(name: str, scale, start, end,
                          max_scale: float = MAX_CONTROL_SCALE) -> tuple[float, float, float]:
    """A ControlNet's scale (0 to ``max_scale``) and the fraction of the steps it acts on (0 ≤ start < end ≤ 1),
    errors naming ``name``."""
    scale = finite_number(f"{name} scale", scale, 0.0, max_scale)
    start = finite_number(f"{name} start", start, 0.0, 1.0)
    end = finite_number(f"{name} end", end, 0.0, 1.0)
    if start >= end:
        raise MotionAdapterError(f"{name} start/end: expected start < end (fractions of the steps), found "
                                 f"{start:g} and {end:g}")
    return scale, start, end


@dataclass
class LoadedControlNet:
    source: str            # registered name or path as given (recipes)
    path: Path | None      # resolved file or folder (None: a live model given by the caller)
    stamp: tuple           # what identifies this version (file size and mtime, or the model's id)
    model: torch.nn.Module
    control_kind: str | None = None


@dataclass(frozen=True)
class ControlKind:
    """How one kind of control model is read, checked against the base and built: ControlNets
    (:data:`CONTROLNETS`) and SparseCtrl encoders (``inference.sparsectrl.SPARSECTRL``)."""

    live: type                                      # the diffusers class a caller may pass as a live model
    expect: str                                     # the KIND_* name ``load_adapter`` must find
    fits: Callable[[object, Mapping, object], None]  # (weights, unet_config, source): refuse what cannot attach
    build: Callable[..., torch.nn.Module]           # (weights, dtype=, device=) -> live model
    live_kind: Callable[[torch.nn.Module], str | None] = lambda _m: None  # control kind of a live model


CONTROLNETS = ControlKind(ControlNetModel, KIND_CONTROLNET, check_controlnet_fits_base, build_controlnet)


class ControlNetSet:
    """Control models loaded for one generator, keyed by resolved path (or a live model's id)."""

    def __init__(self, kind: ControlKind = CONTROLNETS) -> None:
        self.kind = kind
        self._loaded: dict[str, LoadedControlNet] = {}

    @property
    def sources(self) -> list[str]:
        return [e.source for e in self._loaded.values()]

    def set(self, models: Iterable[str | Path | torch.nn.Module], *, unet_config: Mapping, dtype: torch.dtype,
            device: str) -> list[torch.nn.Module]:
        """Make exactly ``models`` loaded (in this order) and return them; files already loaded and unchanged
        are not read again. All new files are read, checked and built before anything changes."""
        keyed = [self._key(m) for m in models]
        fresh = {key: self._loaded[key] for key, _ in keyed
                 if key in self._loaded and self._loaded[key].stamp == _stamp(self._loaded[key])}
        for key, model in keyed:
            if key not in fresh:
                fresh[key] = self._load(model, unet_config, dtype, device)
        self._loaded = {key: fresh[key] for key, _ in keyed}
        return [e.model for e in self._loaded.values()]

    def entries(self) -> list[LoadedControlNet]:
        return list(self._loaded.values())

    def fingerprint(self) -> bytes:
        h = hashlib.sha256()
        for key, e in self._loaded.items():
            h.update(key.encode())
            for k, v in sorted(e.model.state_dict().items()):
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return h.digest()

    def _key(self, model) -> tuple[str, object]:
        if isinstance(model, self.kind.live):
            return f"model:{id(model)}", model
        path = resolve_source(model) if is_registered(str(model)) or Path(model).exists() else Path(model)
        return str(Path(path).resolve()), model

    def _load(self, model, unet_config: Mapping, dtype: torch.dtype, device: str) -> LoadedControlNet:
        """Read, check and build one model (a live model is checked and used as it is)."""
        kind = self.kind
        if isinstance(model, kind.live):
            check_live_controlnet(model, unet_config)
            return LoadedControlNet(f"<{type(model).__name__} {id(model):x}>", None, (id(model),), model,
                                    kind.live_kind(model))
        path = resolve_source(model)
        weights = load_adapter(path, expect=kind.expect)
        kind.fits(weights, unet_config, path)
        built = kind.build(weights, dtype=dtype, device=device)
        source = str(model) if is_registered(str(model)) else str(path)
        return LoadedControlNet(source, Path(path), file_stamp(Path(path)), built, weights.control_kind)


def _stamp(entry: LoadedControlNet) -> tuple:
    if entry.path is None:
        return entry.stamp
    return file_stamp(entry.path)


def file_stamp(path: Path) -> tuple:
    if not path.exists():
        return ()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


def check_live_controlnet(model: torch.nn.Module, unet_config: Mapping) -> None:
    """A control model given as a model must have the base UNet's cross-attention width and channels."""
    for key in ("cross_attention_dim", "block_out_channels"):
        want, have = unet_config.get(key), model.config.get(key)
        if want is not None and list(_as_list(want)) != list(_as_list(have)):
            raise AdapterFormatError(f"the {type(model).__name__} given", f"{key} {want} (the base's)",
                                     f"{key} {have}")


def _as_list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]
