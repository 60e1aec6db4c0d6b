"""AnimateDiff motion modules: original (guoyww) ⇄ diffusers key layouts and config inference from keys.

Key layouts, version rules and parameter counts: see docs/formats.md#key-layouts. Internally a motion module
is a diffusers ``MotionAdapter`` state dict (without the ``pos_embed.pe`` buffers, which are recomputed from
``motion_max_seq_length``) plus its constructor config.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ..errors import AdapterFormatError

ORIGINAL_MARKER = ".temporal_transformer."
MOTION_MARKER = "motion_modules."
DEFAULT_HEADS = 8
DEFAULT_GROUPS = 32
DEFAULT_MAX_SEQ = 32

_TO_DIFFUSERS = (
    (".norms.0", ".norm1"),
    (".norms.1", ".norm2"),
    (".ff_norm", ".norm3"),
    (".attention_blocks.0", ".attn1"),
    (".attention_blocks.1", ".attn2"),
    (".temporal_transformer", ""),
)
_TO_ORIGINAL_SEGMENTS = {
    "norm1": "norms.0",
    "norm2": "norms.1",
    "norm3": "ff_norm",
    "attn1": "attention_blocks.0",
    "attn2": "attention_blocks.1",
}
_MODULE_RE = re.compile(r"^((?:down_blocks|up_blocks)\.\d+|mid_block)\.motion_modules\.(\d+)\.(.*)$")


@dataclass
class MotionModuleWeights:
    """A motion module in diffusers layout, ready to load into a ``MotionAdapter``/``UNetMotionModel``."""

    config: dict
    state_dict: dict[str, torch.Tensor]
    source_format: str = "diffusers"
    version: str = "custom"
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def num_params(self) -> int:
        return sum(t.numel() for t in self.state_dict.values())

    @property
    def family(self) -> str:
        return "sdxl" if len(self.config["block_out_channels"]) == 3 else "sd15"


def is_pe_key(key: str) -> bool:
    return key.endswith("pos_encoder.pe") or key.endswith("pos_embed.pe")


def strip_training_wrapper(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DDP ``module.`` / ``unet.`` prefixes and keep only motion-module keys (official train.py checkpoints)."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "unet."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        if MOTION_MARKER in k:
            out[k] = v
    return out


def pe_length(state_dict: Mapping[str, torch.Tensor]) -> int | None:
    """Positional-encoding length L (the frame cap) stored in the file, or None for pe-less files."""
    for k, v in state_dict.items():
        if is_pe_key(k):
            return int(v.shape[1])
    return None


def original_to_diffusers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename original AnimateDiff keys to diffusers ``MotionAdapter`` keys; drops ``pos_encoder.pe``."""
    out = {}
    for key, value in state_dict.items():
        if is_pe_key(key):
            continue
        for old, new in _TO_DIFFUSERS:
            key = key.replace(old, new)
        out[key] = value
    return out


def diffusers_to_original(
    state_dict: Mapping[str, torch.Tensor], max_seq_length: int = DEFAULT_MAX_SEQ
) -> dict[str, torch.Tensor]:
    """Rename diffusers motion keys to the original layout, writing two ``pos_encoder.pe`` tables per block."""
    out: dict[str, torch.Tensor] = {}
    channels: dict[str, int] = {}
    for key, value in state_dict.items():
        if is_pe_key(key):
            continue
        name = motion_key_to_original(key)
        prefix, _, rest = name.partition(".temporal_transformer.")
        prefix += ".temporal_transformer"
        out[name] = value
        if rest == "norm.weight":
            channels[prefix] = value.shape[0]
    for prefix, c in channels.items():
        n_tb = {k.split(".transformer_blocks.")[1].split(".")[0] for k in out if k.startswith(prefix + ".transformer_blocks.")}
        pe = sinusoidal_pe(max_seq_length, c)
        for t in sorted(n_tb):
            for a in (0, 1):
                out[f"{prefix}.transformer_blocks.{t}.attention_blocks.{a}.pos_encoder.pe"] = pe.clone()
    return out


def motion_key_to_original(key: str) -> str:
    """One diffusers motion-module key → its original AnimateDiff name (``temporal_transformer.`` inserted,
    ``norm1``/``norm2``/``norm3``/``attn1``/``attn2`` renamed segment by segment)."""
    m = _MODULE_RE.match(key)
    if not m:
        raise AdapterFormatError(None, "motion-module keys (…motion_modules.N.…)", f"key {key!r}")
    block, j, rest = m.groups()
    parts = rest.split(".")
    if parts[0] == "transformer_blocks" and len(parts) > 2:
        parts[2] = _TO_ORIGINAL_SEGMENTS.get(parts[2], parts[2])
    return f"{block}.motion_modules.{j}.temporal_transformer.{'.'.join(parts)}"


def sinusoidal_pe(length: int, channels: int) -> torch.Tensor:
    """AnimateDiff's sinusoidal table (1, L, C); identical to diffusers' ``SinusoidalPositionalEmbedding``."""
    import math

    position = torch.arange(length).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, channels, 2) * (-math.log(10000.0) / channels))
    pe = torch.zeros(1, length, channels)
    pe[0, :, 0::2] = torch.sin(position * div_term)
    pe[0, :, 1::2] = torch.cos(position * div_term)
    return pe


def _indices(keys, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def infer_motion_config(
    state_dict: Mapping[str, torch.Tensor],
    max_seq_length: int | None = None,
    num_attention_heads: int = DEFAULT_HEADS,
    norm_num_groups: int = DEFAULT_GROUPS,
    source=None,
) -> dict:
    """Infer the ``MotionAdapter`` constructor config from a diffusers-layout state dict.

    Shapes determine channels, layer counts and the mid block; heads and GroupNorm groups leave no trace in
    the shapes, so the official releases' values (8 heads, 32 groups) are assumed unless given.
    """
    keys = list(state_dict)
    downs = _indices(keys, r"^down_blocks\.(\d+)\.motion_modules\.")
    if not downs:
        raise AdapterFormatError(source, "motion-module keys under down_blocks.N.motion_modules", "none")
    channels = []
    for i in downs:
        w = state_dict.get(f"down_blocks.{i}.motion_modules.0.norm.weight")
        if w is None:
            raise AdapterFormatError(source, f"down_blocks.{i}.motion_modules.0.norm.weight", "it is missing")
        channels.append(int(w.shape[0]))
    layers = len(_indices(keys, r"^down_blocks\.0\.motion_modules\.(\d+)\."))
    tlayers = len(_indices(keys, r"^down_blocks\.0\.motion_modules\.0\.transformer_blocks\.(\d+)\."))
    mid = _indices(keys, r"^mid_block\.motion_modules\.(\d+)\.")
    mid_t = len(_indices(keys, r"^mid_block\.motion_modules\.0\.transformer_blocks\.(\d+)\."))
    groups = norm_num_groups if all(c % norm_num_groups == 0 for c in channels) else 1
    conv_in = state_dict.get("conv_in.weight")
    return {
        "block_out_channels": channels,
        "motion_layers_per_block": layers,
        "motion_transformer_layers_per_block": tlayers or 1,
        "motion_mid_block_layers_per_block": len(mid) or 1,
        "motion_transformer_layers_per_mid_block": mid_t or 1,
        "motion_num_attention_heads": num_attention_heads,
        "motion_norm_num_groups": groups,
        "motion_max_seq_length": int(max_seq_length or DEFAULT_MAX_SEQ),
        "use_motion_mid_block": bool(mid),
        "conv_in_channels": int(conv_in.shape[1]) if conv_in is not None else None,
    }


def detect_version(state_dict: Mapping[str, torch.Tensor], config: Mapping) -> str:
    """Name the release a module corresponds to, with the rules peers use.

    The rules and their order are listed in docs/formats.md#telling-versions-apart.
    """
    if len(config["block_out_channels"]) == 3:
        return "sdxl-beta"
    if config.get("conv_in_channels"):
        return "pia"
    if config["use_motion_mid_block"]:
        return "v2" if pe_length(state_dict) is not None else "v2-no-pe (AnimateLCM-like)"
    length = pe_length(state_dict)
    if length is None:
        return "no-pe (AnimateLCM-like)"
    return "v1" if length == 24 else "v3"


def to_diffusers_layout(state_dict: Mapping[str, torch.Tensor], source=None) -> tuple[dict, str, int | None]:
    """Bring a motion module of any known layout to diffusers keys: (state dict, layout name, pe length)."""
    sd = dict(state_dict)
    if any(k.startswith(("module.", "unet.")) for k in sd) or any(MOTION_MARKER not in k for k in sd):
        sd = strip_training_wrapper(sd)
    if not sd:
        raise AdapterFormatError(source, "a motion module (keys containing 'motion_modules.')", "no such keys")
    length = pe_length(sd)
    if any(ORIGINAL_MARKER in k for k in sd):
        return original_to_diffusers(sd), "original", length
    return {k: v for k, v in sd.items() if not is_pe_key(k)}, "diffusers", length


def motion_keys(config: Mapping) -> set[str]:
    """The state-dict keys (without pe) a ``MotionAdapter`` of this config has; for validation."""
    return set(_motion_keys(json.dumps(dict(config), sort_keys=True, default=list)))


@functools.lru_cache(maxsize=32)
def _motion_keys(config_json: str) -> frozenset[str]:
    from accelerate import init_empty_weights
    from diffusers import MotionAdapter

    with init_empty_weights():
        adapter = MotionAdapter(**json.loads(config_json))
    return frozenset(k for k in adapter.state_dict() if not is_pe_key(k))
