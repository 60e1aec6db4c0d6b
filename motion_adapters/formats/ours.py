"""Our adapter format: one ``.safetensors`` per adapter with a self-describing ``__metadata__`` header.

Header keys (all strings): ``motion_adapters.format_version``, ``.kind`` (motion_module | motion_lora |
spatial_lora | controlnet | sparsectrl | ip_adapter), ``.base_family`` (sd15 | sdxl), ``.config`` (JSON: the diffusers ``MotionAdapter`` config for
motion modules, the LoRA rank/targets for LoRAs, the ``ControlNetModel`` / ``SparseControlNetModel`` config for ControlNets
and SparseCtrl encoders, with ``.control_kind`` beside it, the variant, widths and token count of an
IP-Adapter), ``.groupnorm`` (the normalisation convention the weights
were trained with), ``.training`` (JSON summary of the training run, when there is one) and ``.toolkit``.
Tensors use diffusers key layouts, so diffusers loaders read the tensors directly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from .. import __version__
from ..io import save_safetensors_atomic

PREFIX = "motion_adapters."
FORMAT_VERSION = "1"
GROUPNORM_CONVENTION = "diffusers: motion-module GroupNorm over all frames; spatial GroupNorm per frame"


def is_ours(metadata: Mapping[str, str] | None) -> bool:
    return bool(metadata) and f"{PREFIX}format_version" in metadata


def parse_metadata(metadata: Mapping[str, str]) -> dict:
    """Our header as a dict with JSON fields decoded (``config``, ``training``)."""
    out = {}
    for k, v in metadata.items():
        if not k.startswith(PREFIX):
            continue
        name = k[len(PREFIX) :]
        if name in ("config", "training"):
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                pass
        out[name] = v
    return out


def build_metadata(kind: str, family: str, config: Mapping, training: Mapping | None = None) -> dict[str, str]:
    md = {
        "format": "pt",
        f"{PREFIX}format_version": FORMAT_VERSION,
        f"{PREFIX}kind": kind,
        f"{PREFIX}base_family": family,
        f"{PREFIX}config": json.dumps(dict(config), sort_keys=True),
        f"{PREFIX}groupnorm": GROUPNORM_CONVENTION,
        f"{PREFIX}toolkit": f"motion-adapters {__version__}",
    }
    if training:
        md[f"{PREFIX}training"] = json.dumps(dict(training), sort_keys=True, default=str)
    return md


def save_motion_module(weights, path: str | Path, training: Mapping | None = None) -> Path:
    """Save a :class:`MotionModuleWeights` in our format (diffusers keys, pe tables omitted)."""
    md = build_metadata("motion_module", weights.family, weights.config, training)
    return save_safetensors_atomic(weights.state_dict, path, md)


def save_lora(lora, path: str | Path, training: Mapping | None = None) -> Path:
    """Save a :class:`LoraWeights` in our format (diffusers/PEFT keys, scale folded into ``lora_B``)."""
    targets = sorted({k.rsplit(".lora_", 1)[0] for k in lora.state_dict})
    config = {"rank": lora.rank, "lora_alpha": lora.rank, "targets": targets, "source_format": lora.source_format}
    md = build_metadata(lora.kind, "sd15", config, training)
    return save_safetensors_atomic(lora.state_dict, path, md)


def save_controlnet(cn, path: str | Path, training: Mapping | None = None) -> Path:
    """Save a :class:`~motion_adapters.formats.controlnet.ControlNetWeights` in our format (diffusers
    ``ControlNetModel`` keys; the config and the control kind in the header)."""
    md = build_metadata("controlnet", cn.family, cn.config, training)
    if cn.control_kind:
        md[f"{PREFIX}control_kind"] = cn.control_kind
    return save_safetensors_atomic(cn.state_dict, path, md)


def save_sparsectrl(sc, path: str | Path, training: Mapping | None = None) -> Path:
    """Save a :class:`~motion_adapters.formats.sparsectrl.SparseCtrlWeights` in our format (diffusers
    ``SparseControlNetModel`` keys; the config and the control kind, ``rgb`` or ``scribble``, in the header)."""
    md = build_metadata("sparsectrl", sc.family, sc.config, training)
    md[f"{PREFIX}control_kind"] = sc.control_kind
    return save_safetensors_atomic(sc.state_dict, path, md)


def save_ip_adapter(ipw, path: str | Path, training: Mapping | None = None) -> Path:
    """Save an :class:`~motion_adapters.formats.ip_adapter.IPAdapterWeights` in our format (h94's
    ``image_proj.`` / ``ip_adapter.`` keys; the variant, widths and token count in the header)."""
    md = build_metadata("ip_adapter", ipw.family, ipw.summary(), training)
    return save_safetensors_atomic(ipw.flat(), path, md)
