"""Export any loaded adapter or base to our format, the original community layouts, or diffusers layouts."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .base import BaseWeights, configs_from_folder, skeleton_dir
from .errors import MotionAdapterError
from .files import atomic_dir, check_destination, only_names
from .formats import ours
from .formats.controlnet import ControlNetWeights
from .formats.controlnet import diffusers_to_ldm as controlnet_to_ldm
from .formats.ip_adapter import IPAdapterWeights
from .formats.ldm import save_ldm_checkpoint
from .formats.lora import LoraWeights, to_kohya, to_original, to_peft_file_dict
from .formats.motion_module import MotionModuleWeights, diffusers_to_original
from .formats.sparsectrl import SparseCtrlWeights
from .formats.sparsectrl import to_original as sparsectrl_to_original
from .hub import resolve_source
from .io import save_pickle_atomic, save_safetensors_atomic
from .loading import load_adapter
from .swap import build_controlnet, build_sparsectrl, materialize

if TYPE_CHECKING:
    from diffusers import ModelMixin

log = logging.getLogger(__name__)
E = TypeVar("E", ControlNetWeights, SparseCtrlWeights)
TARGETS = ("ours", "original", "diffusers", "kohya")
PEER_FRIENDLY_PE = 32
OURS_SUFFIXES = (".safetensors",)  # our format, and single-file bases: safetensors only


# what a diffusers folder written here may hold: a folder of only these is one of ours to replace
MODEL_FOLDER_NAMES = frozenset({
    "config.json", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "model_index.json",
    "scheduler", "tokenizer", "unet", "vae", "text_encoder", "pytorch_lora_weights.safetensors",
    "pytorch_lora_weights.bin", "feature_extractor", "safety_checker", "motion_adapter", "README.md",
    "training.json", ".gitattributes",
})
is_model_folder = only_names(MODEL_FOLDER_NAMES)


@dataclass(frozen=True)
class Destination:
    """Where an export goes, and what the user allowed: replacing an existing ``path`` (``overwrite``)."""

    path: Path
    overwrite: bool = False
    sources: tuple[Path, ...] = ()
    label: str = "DST"

    def file(self, suffixes: tuple[str, ...] = ()) -> Path:
        """The file path, checked: one of ``suffixes`` (if given), not an input, not a folder, existing only
        with ``overwrite``."""
        if suffixes and self.path.suffix not in suffixes:
            raise MotionAdapterError(f"{self.label} {self.path}: expected a file name ending {' or '.join(suffixes)}, "
                                     f"found {self.path.suffix or 'no suffix'!r}")
        return check_destination(self.path, overwrite=self.overwrite, label=self.label, want_dir=False,
                                 sources=self.sources)

    def folder(self, write: Callable[[Path], None]) -> Path:
        """Write a folder here atomically (replacing only an empty or model folder, with ``overwrite``)."""
        return atomic_dir(self.path, write, overwrite=self.overwrite, label=self.label,
                          replaceable=is_model_folder, sources=self.sources)


def _save_tensors(tensors, dst: Destination, metadata=None) -> Path:
    path = dst.file((".safetensors", ".ckpt", ".pt", ".pth"))
    if path.suffix == ".safetensors":
        return save_safetensors_atomic(tensors, path, metadata)
    return save_pickle_atomic(tensors, path)


def _destination(dst: str | Path | Destination) -> Destination:
    return dst if isinstance(dst, Destination) else Destination(Path(dst))


def export_motion_module(mm: MotionModuleWeights, dst: str | Path | Destination, to: str) -> Path:
    dst = _destination(dst)
    if to == "ours":
        return ours.save_motion_module(mm, dst.file(OURS_SUFFIXES))
    if to == "original":
        length = mm.config["motion_max_seq_length"]
        if length != PEER_FRIENDLY_PE and not mm.config["use_motion_mid_block"]:
            log.warning(
                "%s: pos_encoder.pe length %d; ComfyUI/A1111 read 'no mid block and L != 32' as v1 and switch on "
                "their cross-frame GroupNorm hack. Modules trained here use per-frame GroupNorm (v3-like).",
                dst.path, length,
            )
        return _save_tensors(diffusers_to_original(mm.state_dict, length), dst)
    if to == "diffusers":
        from diffusers import MotionAdapter


        def write(tmp: Path) -> None:
            cfg = dict(mm.config)
            adapter = materialize(lambda: MotionAdapter(**cfg), mm.state_dict, dst.path, "motion-module weights")
            adapter.save_pretrained(str(tmp), safe_serialization=True)

        return dst.folder(write)
    raise MotionAdapterError(f"--to {to}: a motion module exports to ours, original or diffusers")


def export_controlnet(cw: ControlNetWeights, dst: str | Path | Destination, to: str) -> Path:
    """A ControlNet as ours (.safetensors), original (lllyasviel keys under ``control_model.``, .safetensors or
    .pth) or diffusers (a ``ControlNetModel`` folder)."""
    return _export_encoder(cw, dst, to, "a ControlNet", ours.save_controlnet, controlnet_to_ldm, build_controlnet)


def export_sparsectrl(sw: SparseCtrlWeights, dst: str | Path | Destination, to: str) -> Path:
    """A SparseCtrl encoder as ours (.safetensors), original (AnimateDiff's naming with ``pos_encoder.pe``,
    .safetensors or .ckpt) or diffusers (a ``SparseControlNetModel`` folder)."""
    return _export_encoder(sw, dst, to, "a SparseCtrl encoder", ours.save_sparsectrl, sparsectrl_to_original,
                           build_sparsectrl)


def _export_encoder(w: E, dst: str | Path | Destination, to: str, what: str, save_ours: Callable[[E, Path], Path],
                    to_original: Callable[[dict, dict], dict], build: Callable[[E], ModelMixin]) -> Path:
    """A control encoder (``what``, for the error) as ours (``save_ours``), original (keys from ``to_original``)
    or diffusers (the folder of the model ``build`` makes)."""
    dst = _destination(dst)
    if to == "ours":
        return save_ours(w, dst.file(OURS_SUFFIXES))
    if to == "original":
        return _save_tensors(to_original(w.state_dict, w.config), dst)
    if to == "diffusers":
        return dst.folder(lambda tmp: build(w).save_pretrained(str(tmp), safe_serialization=True))
    raise MotionAdapterError(f"--to {to}: {what} exports to ours, original or diffusers")


def export_ip_adapter(ipw: IPAdapterWeights, dst: str | Path | Destination, to: str) -> Path:
    """An IP-Adapter as ours (.safetensors with a header) or original (h94's ``image_proj.`` /
    ``ip_adapter.`` keys in a .safetensors file, the layout diffusers' ``load_ip_adapter`` reads)."""
    dst = _destination(dst)
    if to == "ours":
        return ours.save_ip_adapter(ipw, dst.file(OURS_SUFFIXES))
    if to == "original":
        return save_safetensors_atomic(ipw.flat(), dst.file(OURS_SUFFIXES), {"format": "pt"})
    raise MotionAdapterError(f"--to {to}: an IP-Adapter exports to ours or original")


def export_lora(lw: LoraWeights, dst: str | Path | Destination, to: str) -> Path:
    dst = _destination(dst)
    if to == "ours":
        return ours.save_lora(lw, dst.file(OURS_SUFFIXES))
    if to == "original":
        return _save_tensors(to_original(lw), dst)
    if to == "kohya":
        return _save_tensors(to_kohya(lw), dst)
    if to == "diffusers":
        if dst.path.suffix == ".safetensors":
            return save_safetensors_atomic(to_peft_file_dict(lw), dst.file(), {"format": "pt"})
        return dst.folder(lambda tmp: save_safetensors_atomic(
            to_peft_file_dict(lw), tmp / "pytorch_lora_weights.safetensors", {"format": "pt"}))
    raise MotionAdapterError(f"--to {to}: expected one of {', '.join(TARGETS)}")


def export_base(base: BaseWeights, dst: str | Path | Destination, to: str) -> Path:
    dst = _destination(dst)
    if to == "original":
        return save_ldm_checkpoint(dst.file(OURS_SUFFIXES), base.unet, base.vae, base.text_encoder, unet_config=base.configs["unet"])
    if to == "diffusers":

        def write(tmp: Path) -> None:
            skel = skeleton_dir()
            (tmp / "model_index.json").write_text((skel / "model_index.json").read_text())
            shutil.copytree(skel / "scheduler", tmp / "scheduler")
            shutil.copytree(base.tokenizer_dir or skel / "tokenizer", tmp / "tokenizer")
            names = {"unet": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors",
                     "text_encoder": "model.safetensors"}
            for comp, fname in names.items():
                sd = getattr(base, comp)
                if sd is None:
                    continue
                (tmp / comp).mkdir()
                (tmp / comp / "config.json").write_text(json.dumps(base.configs[comp], indent=2))
                save_safetensors_atomic(sd, tmp / comp / fname, {"format": "pt"})

        return dst.folder(write)
    raise MotionAdapterError(f"--to {to}: an SD checkpoint exports to original (single file) or diffusers (folder)")


def convert(src: str | Path, dst: str | Path, to: str, config: str | Path | None = None,
            overwrite: bool = False) -> Path:
    """Read ``src`` (any supported layout, or a registered name) and write it to ``dst`` in the ``to`` layout.

    An existing ``dst`` is refused unless ``overwrite``; even then only a file, an empty folder or a model
    folder is replaced (atomically), and never ``src`` itself.

    ``config``: a diffusers folder describing the architecture of a single-file SD checkpoint (default SD1.5),
    or a MotionAdapter / ControlNetModel / SparseControlNetModel folder or ``config.json`` for a motion module,
    single-file ControlNet or SparseCtrl encoder whose heads or groups differ from the official releases'.
    """
    if to not in TARGETS:
        raise MotionAdapterError(f"--to: expected one of {', '.join(TARGETS)}, found {to!r}")
    src = resolve_source(src)
    target = Destination(Path(dst), overwrite, (src,))
    if to == "ours":  # every kind is one .safetensors file
        target.file(OURS_SUFFIXES)
    elif os.path.lexists(target.path):  # what is there (not --overwrite, the input, other files): before the read
        check_destination(target.path, overwrite=overwrite, label=target.label, want_dir=target.path.is_dir(),
                          replaceable=is_model_folder, sources=target.sources)
    motion_cfg, base_cfgs = _read_config_arg(config)
    obj = load_adapter(src, config=motion_cfg, base_configs=base_cfgs)
    if isinstance(obj, MotionModuleWeights):
        return export_motion_module(obj, target, to)
    if isinstance(obj, LoraWeights):
        return export_lora(obj, target, to)
    if isinstance(obj, ControlNetWeights):
        return export_controlnet(obj, target, to)
    if isinstance(obj, SparseCtrlWeights):
        return export_sparsectrl(obj, target, to)
    if isinstance(obj, IPAdapterWeights):
        return export_ip_adapter(obj, target, to)
    return export_base(obj, target, to)


def _read_config_arg(config: str | Path | None) -> tuple[dict | None, dict | None]:
    if config is None:
        return None, None
    p = Path(config)
    if (p / "model_index.json").exists() or (p / "unet" / "config.json").exists():

        return None, configs_from_folder(p)
    cfg_file = p / "config.json" if p.is_dir() else p
    if not cfg_file.exists():
        raise MotionAdapterError(f"--config {p}: expected a diffusers SD folder or a MotionAdapter / "
                                 "ControlNetModel / SparseControlNetModel config.json, found neither")
    cfg = json.loads(cfg_file.read_text())
    return {k: v for k, v in cfg.items() if not k.startswith("_")}, None
