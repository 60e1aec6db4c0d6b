"""Export any loaded adapter or base to our format, the original community layouts, or diffusers layouts."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .base import BaseWeights, configs_from_folder, skeleton_dir
from .errors import MotionAdapterError
from .formats import ours
from .formats.ldm import save_ldm_checkpoint
from .formats.lora import LoraWeights, to_kohya, to_original, to_peft_file_dict
from .formats.motion_module import MotionModuleWeights, diffusers_to_original
from .io import save_pickle_atomic, save_safetensors_atomic
from .loading import load_adapter
from .swap import materialize

log = logging.getLogger(__name__)
TARGETS = ("ours", "original", "diffusers", "kohya")
PEER_FRIENDLY_PE = 32


def _save_tensors(tensors, dst: Path, metadata=None) -> Path:
    if dst.suffix in (".ckpt", ".pt", ".pth"):
        return save_pickle_atomic(tensors, dst)
    if dst.suffix != ".safetensors":
        raise MotionAdapterError(f"DST {dst}: expected a .safetensors or .ckpt file name, found {dst.suffix!r}")
    return save_safetensors_atomic(tensors, dst, metadata)


def _atomic_dir(dst: Path, write: Callable[[Path], None]) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        write(tmp)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def export_motion_module(mm: MotionModuleWeights, dst: Path, to: str) -> Path:
    if to == "ours":
        return ours.save_motion_module(mm, dst)
    if to == "original":
        length = mm.config["motion_max_seq_length"]
        if length != PEER_FRIENDLY_PE and not mm.config["use_motion_mid_block"]:
            log.warning(
                "%s: pos_encoder.pe length %d; ComfyUI/A1111 read 'no mid block and L != 32' as v1 and switch on "
                "their cross-frame GroupNorm hack. Modules trained here use per-frame GroupNorm (v3-like).",
                dst, length,
            )
        return _save_tensors(diffusers_to_original(mm.state_dict, length), dst)
    if to == "diffusers":
        from diffusers import MotionAdapter


        def write(tmp: Path) -> None:
            cfg = dict(mm.config)
            adapter = materialize(lambda: MotionAdapter(**cfg), mm.state_dict, dst, "motion-module weights")
            adapter.save_pretrained(str(tmp), safe_serialization=True)

        return _atomic_dir(dst, write)
    raise MotionAdapterError(f"--to {to}: a motion module exports to ours, original or diffusers")


def export_lora(lw: LoraWeights, dst: Path, to: str) -> Path:
    if to == "ours":
        return ours.save_lora(lw, dst)
    if to == "original":
        return _save_tensors(to_original(lw), dst)
    if to == "kohya":
        return _save_tensors(to_kohya(lw), dst)
    if to == "diffusers":
        if dst.suffix == ".safetensors":
            return save_safetensors_atomic(to_peft_file_dict(lw), dst, {"format": "pt"})
        return _atomic_dir(dst, lambda tmp: save_safetensors_atomic(
            to_peft_file_dict(lw), tmp / "pytorch_lora_weights.safetensors", {"format": "pt"}))
    raise MotionAdapterError(f"--to {to}: expected one of {', '.join(TARGETS)}")


def export_base(base: BaseWeights, dst: Path, to: str) -> Path:
    if to == "original":

        return save_ldm_checkpoint(dst, base.unet, base.vae, base.text_encoder, unet_config=base.configs["unet"])
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

        return _atomic_dir(dst, write)
    raise MotionAdapterError(f"--to {to}: an SD checkpoint exports to original (single file) or diffusers (folder)")


def convert(src: str | Path, dst: str | Path, to: str, config: str | Path | None = None) -> Path:
    """Read ``src`` (any supported layout) and write it to ``dst`` in the ``to`` layout.

    ``config``: a diffusers folder describing the architecture of a single-file SD checkpoint (default SD1.5),
    or a MotionAdapter folder / ``config.json`` for a motion module whose heads or groups differ from the
    official releases'.
    """
    if to not in TARGETS:
        raise MotionAdapterError(f"--to: expected one of {', '.join(TARGETS)}, found {to!r}")
    motion_cfg, base_cfgs = _read_config_arg(config)
    obj = load_adapter(src, config=motion_cfg, base_configs=base_cfgs)
    dst = Path(dst)
    if isinstance(obj, MotionModuleWeights):
        return export_motion_module(obj, dst, to)
    if isinstance(obj, LoraWeights):
        return export_lora(obj, dst, to)
    return export_base(obj, dst, to)


def _read_config_arg(config: str | Path | None) -> tuple[dict | None, dict | None]:
    if config is None:
        return None, None
    p = Path(config)
    if (p / "model_index.json").exists() or (p / "unet" / "config.json").exists():

        return None, configs_from_folder(p)
    cfg_file = p / "config.json" if p.is_dir() else p
    if not cfg_file.exists():
        raise MotionAdapterError(f"--config {p}: expected a diffusers SD folder or a MotionAdapter config.json, "
                                 "found neither")
    cfg = json.loads(cfg_file.read_text())
    return {k: v for k, v in cfg.items() if not k.startswith("_")}, None
