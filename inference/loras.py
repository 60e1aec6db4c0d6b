"""The generator's active LoRAs: PEFT adapters on the live pipeline, each file read once and checked against
the loaded models before anything changes."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import UNetMotionModel

from motion_adapters.errors import AdapterFormatError, MotionAdapterError
from motion_adapters.formats.lora import LoraWeights
from motion_adapters.inference.pipeline import MotionAdaptersPipeline
from motion_adapters.loading import load_adapter
from motion_adapters.registry import is_registered, model_path
from motion_adapters.swap import motion_unet_config

LoraRequest = Mapping[str | Path, float] | Iterable[tuple[str | Path, float]] | None


@dataclass
class LoadedLora:
    name: str  # the PEFT adapter name
    source: str
    weights: LoraWeights
    stamp: tuple  # (size, mtime) of the file when read


class LoraSet:
    """LoRAs loaded into one pipeline (motion and spatial LoRAs stack), keyed by resolved path, weighted."""

    def __init__(self) -> None:
        self._loaded: dict[str, LoadedLora] = {}
        self._weights: dict[str, float] = {}  # adapter name -> weight

    @property
    def by_source(self) -> dict[str, float]:
        """``{source: weight}`` of the loaded LoRAs."""
        return {e.source: self._weights.get(e.name, 0.0) for e in self._loaded.values()}

    def fingerprint(self) -> bytes:
        return repr(sorted(self._weights.items())).encode()

    def set(self, pipe: MotionAdaptersPipeline, loras: LoraRequest) -> None:
        """Make exactly these LoRAs active at these weights; all files are read and checked before the pipeline
        changes, and an adapter that fails to load is taken out again."""
        items = list((loras or {}).items()) if isinstance(loras, Mapping) or loras is None else list(loras)
        wanted, new = self._read(pipe, items)
        self._inject(pipe, new)
        stale = [k for k in self._loaded if k not in wanted]
        if stale:
            pipe.delete_adapters([self._loaded.pop(k).name for k in stale])
        self._weights = {self._loaded[k].name: w for k, w in wanted.items()}
        self.apply_weights(pipe)

    def _read(self, pipe: MotionAdaptersPipeline, items: list[tuple[str | Path, float]],
              ) -> tuple[dict[str, float], list[LoadedLora]]:
        """``{resolved path: weight}`` of the request, and the files not loaded yet (or changed on disk), read
        and checked against the live models."""
        wanted: dict[str, float] = {}
        new: list[LoadedLora] = []
        for src, weight in items:
            src = _registered_path(src)
            try:
                weight = float(weight)
            except (TypeError, ValueError) as e:
                raise MotionAdapterError(f"LoRA weight for {src}: expected a number, found {weight!r}") from e
            key = str(Path(src).resolve())
            stamp = _file_stamp(src)
            entry = self._loaded.get(key)
            if entry is None or entry.stamp != stamp:
                lw = load_adapter(src, expect="lora")
                check_lora_targets(lw, src, live_modules(pipe))
                new.append(LoadedLora(_adapter_name(src, stamp), str(src), lw, stamp))
            wanted[key] = weight
        return wanted, new

    def _inject(self, pipe: MotionAdaptersPipeline, new: list[LoadedLora]) -> None:
        """Load validated LoRAs as PEFT adapters (replacing older versions of the same file); on failure the
        adapters injected so far are deleted again."""
        injected: list[str] = []
        try:
            for entry in new:
                key = str(Path(entry.source).resolve())
                if key in self._loaded:  # file changed on disk: replace the old adapter
                    pipe.delete_adapters([self._loaded.pop(key).name])
                pipe.load_lora_weights(dict(entry.weights.state_dict), adapter_name=entry.name)
                injected.append(entry.name)
                self._loaded[key] = entry
        except Exception:
            if injected:
                pipe.delete_adapters(injected)
            for entry in new:
                self._loaded.pop(str(Path(entry.source).resolve()), None)
            raise

    def apply_weights(self, pipe: MotionAdaptersPipeline) -> None:
        if self._weights:
            pipe.set_adapters(list(self._weights), list(self._weights.values()))

    def check_fit(self, pipe: MotionAdaptersPipeline, unet_config: Mapping, motion_config: Mapping) -> None:
        """Check every loaded LoRA against the UNet a motion module of ``motion_config`` would give."""
        modules = {**live_modules(pipe), "unet": probe_unet_modules(unet_config, motion_config)}
        for entry in self._loaded.values():
            check_lora_targets(entry.weights, entry.source, modules)

    def reload_unet(self, pipe: MotionAdaptersPipeline) -> None:
        """Load the UNet part of every LoRA into a freshly built UNet, at the current weights."""
        for entry in self._loaded.values():
            unet_part = {k: v for k, v in entry.weights.state_dict.items() if k.startswith("unet.")}
            if unet_part:
                pipe.unet.load_lora_adapter(unet_part, prefix="unet", adapter_name=entry.name)
        if self._loaded:
            self.apply_weights(pipe)


def live_modules(pipe: MotionAdaptersPipeline) -> dict[str, dict[str, torch.nn.Module]]:
    """The modules a LoRA may target, by component."""
    return {"unet": dict(pipe.unet.named_modules()), "text_encoder": dict(pipe.text_encoder.named_modules())}


def probe_unet_modules(unet_config: Mapping, motion_config: Mapping) -> dict[str, torch.nn.Module]:
    """The modules of a motion UNet of these configs, built on the meta device (no memory, no init)."""
    with init_empty_weights():
        probe = UNetMotionModel.from_config(motion_unet_config(unet_config, motion_config))
    return dict(probe.named_modules())


def check_lora_targets(lw: LoraWeights, src, modules: Mapping[str, Mapping[str, torch.nn.Module]]) -> None:
    """Every LoRA pair must target an existing layer with matching input and output sizes."""
    for key, tensor in lw.state_dict.items():
        if not key.endswith("lora_A.weight"):
            continue
        comp, _, path = key.partition(".")
        path = path[: -len(".lora_A.weight")]
        mod = modules.get(comp, {}).get(path)
        if mod is None:
            raise AdapterFormatError(src, f"LoRA targets that exist in the loaded {comp}",
                                     f"{path!r}, which it does not have")
        mod = getattr(mod, "base_layer", mod)
        in_f = getattr(mod, "in_features", None) or getattr(mod, "in_channels", None)
        out_f = getattr(mod, "out_features", None) or getattr(mod, "out_channels", None)
        up = lw.state_dict[key.replace("lora_A", "lora_B")]
        if tensor.shape[1] != in_f or up.shape[0] != out_f:
            raise AdapterFormatError(
                src, f"LoRA for {path!r} with {in_f} inputs and {out_f} outputs",
                f"down {tuple(tensor.shape)} / up {tuple(up.shape)} (made for another base or version)",
            )


def _registered_path(src):
    """A registered name's file (LoRAs by short name); anything else unchanged."""
    return model_path(str(src)) if is_registered(str(src)) else src


def _file_stamp(src) -> tuple:
    p = Path(src)
    if not p.exists():
        raise AdapterFormatError(p, "an existing LoRA file", "nothing at that path")
    st = p.stat()
    return (st.st_size, st.st_mtime_ns)


def _adapter_name(src, stamp) -> str:
    stem = re.sub(r"[^A-Za-z0-9_]", "_", Path(src).stem)[:40]
    digest = hashlib.sha1(f"{Path(src).resolve()}{stamp}".encode()).hexdigest()[:8]
    return f"{stem}_{digest}"
