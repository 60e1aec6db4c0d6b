"""SparseCtrl encoders in memory: a diffusers ``SparseControlNetModel`` config and state dict, whatever layout
they came in (AnimateDiff v3's original ``.ckpt``, a diffusers folder, our ``.safetensors``).

A SparseCtrl encoder is a ControlNet with motion modules that conditions a few keyframes of a clip: ``rgb``
encoders take pictures (encoded by the VAE), ``scribble`` encoders take line maps.

AnimateDiff's own files use diffusers' ControlNet names for everything but the motion modules, which keep
the original naming (``…motion_modules.N.temporal_transformer.transformer_blocks.0.attention_blocks.0…``,
``norms.0``, ``ff_norm``) and carry ``pos_encoder.pe`` tables; they may nest under a ``controlnet`` key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import AdapterFormatError
from .controlnet import _conditioning_channels, _count, _cross_attention_dim, _down_blocks, _groups, family_of
from .motion_module import (
    DEFAULT_MAX_SEQ,
    ORIGINAL_MARKER,
    is_pe_key,
    motion_key_to_original,
    original_to_diffusers,
    pe_length,
    sinusoidal_pe,
)

SPARSECTRL_KINDS = ("rgb", "scribble")
RGB_EMBEDDING = "controlnet_cond_embedding.weight"           # one convolution (the simplified embedding)
SCRIBBLE_EMBEDDING = "controlnet_cond_embedding.conv_in.weight"  # the ControlNet hint-embedding stack
# what shapes cannot tell and a base UNet does: taken from it by ``swap.check_sparsectrl_fits_base``
GUESSABLE = ("attention_head_dim", "num_attention_heads", "norm_num_groups", "norm_eps", "upcast_attention")


@dataclass
class SparseCtrlWeights:
    """A SparseCtrl encoder: ``config`` is diffusers' ``SparseControlNetModel`` config (no ``_`` keys),
    ``state_dict`` uses diffusers' ``SparseControlNetModel`` key names."""

    config: dict
    state_dict: dict[str, torch.Tensor]
    source_format: str                 # "original" | "diffusers-folder" | "diffusers-single-file" | "ours"
    control_kind: str                  # "rgb" (pictures) | "scribble" (line maps)
    family: str = "sd15"
    metadata: dict = field(default_factory=dict)
    source: str = "<sparsectrl>"       # the file or folder it was read from, for messages
    guessed: tuple[str, ...] = ()      # config keys set by convention, not read from the file (single files)

    @property
    def num_params(self) -> int:
        return sum(t.numel() for t in self.state_dict.values())

    @property
    def conditioning_channels(self) -> int:
        """Channels of the condition image, without the mask channel (rgb: 4 latent channels; scribble: 3)."""
        return int(self.config.get("conditioning_channels", 4))


def is_sparsectrl(keys: Iterable[str]) -> bool:
    """A ControlNet conditioning embedding beside motion modules (either naming)."""
    ks = list(keys)
    return (any(k.startswith("controlnet_cond_embedding") for k in ks)
            and any("motion_modules." in k for k in ks))


def control_kind_of(state_dict: Mapping[str, Tensor]) -> str | None:
    """``rgb`` (one-convolution embedding), ``scribble`` (the hint-embedding stack) or None."""
    if RGB_EMBEDDING in state_dict:
        return "rgb"
    if SCRIBBLE_EMBEDDING in state_dict:
        return "scribble"
    return None


def to_diffusers(tensors: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str, int | None]:
    """Any SparseCtrl key layout → diffusers ``SparseControlNetModel`` keys without ``pe`` tables:
    (state dict, ``original`` or ``diffusers``, the pe length stored in the file or None)."""
    length = pe_length(tensors)
    if any(ORIGINAL_MARKER in k for k in tensors):
        return original_to_diffusers(tensors), "original", length
    return {k: v for k, v in tensors.items() if not is_pe_key(k)}, "diffusers", length


def to_original(state_dict: Mapping[str, Tensor], config: Mapping[str, Any]) -> dict[str, Tensor]:
    """diffusers ``SparseControlNetModel`` keys → AnimateDiff's naming, with a ``pos_encoder.pe`` table of
    ``motion_max_seq_length`` rows for each motion attention block (the layout of ``v3_sd15_sparsectrl_*.ckpt``)."""
    length = int(config.get("motion_max_seq_length", DEFAULT_MAX_SEQ))
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if is_pe_key(key):
            continue
        if "motion_modules." not in key:
            out[key] = value
            continue
        name = motion_key_to_original(key)
        out[name] = value
        head, sep, rest = name.partition(".attention_blocks.")
        if sep and rest.split(".")[1:] == ["to_q", "weight"]:
            block = rest.split(".")[0]
            out[f"{head}.attention_blocks.{block}.pos_encoder.pe"] = sinusoidal_pe(length, int(value.shape[1]))
    return out


def infer_config(sd: Mapping[str, Tensor], max_seq_length: int | None = None,
                 source: Any = None) -> tuple[dict, tuple[str, ...]]:
    """A ``SparseControlNetModel`` config read from diffusers-key tensor shapes, and the keys set by convention.

    The mask channel is always concatenated (``concat_conditioning_mask``, as AnimateDiff trained both kinds),
    so ``conditioning_channels`` is the embedding's input width less one. Heads and GroupNorm groups follow
    SD1.5 until a base says otherwise; motion heads are the released 8."""
    try:
        levels, channels, lpb, attn, depth = _down_blocks(sd)
        temporal = _count(sd, r"down_blocks\.0\.motion_modules\.0\.transformer_blocks\.(\d+)\.") or 1
        in_ch = int(sd["conv_in.weight"].shape[1])
        if RGB_EMBEDDING in sd:
            cond_in, hint_outs = int(sd[RGB_EMBEDDING].shape[1]), None
        else:
            cond_in, hint_outs = _conditioning_channels(sd)
    except (KeyError, IndexError) as e:
        raise AdapterFormatError(source, "a complete SparseCtrl encoder (down blocks, conv_in, condition "
                                 "embedding)", f"no tensor {e}", "The file may be truncated.") from None
    cfg: dict[str, Any] = {
        "in_channels": in_ch,
        "conditioning_channels": cond_in - 1,
        "concat_conditioning_mask": True,
        "use_simplified_condition_embedding": hint_outs is None,
        "block_out_channels": channels,
        "layers_per_block": lpb,
        "down_block_types": ["CrossAttnDownBlockMotion" if a else "DownBlockMotion" for a in attn],
        "cross_attention_dim": _cross_attention_dim(sd) or 768,
        "transformer_layers_per_block": depth[0] if len(set(depth)) == 1 else depth,
        "temporal_transformer_layers_per_block": temporal,
        "use_linear_projection": any(k.endswith("proj_in.weight") and v.ndim == 2 and "motion_modules." not in k
                                     for k, v in sd.items()),
        "norm_num_groups": _groups(channels),
        "attention_head_dim": 8,
        "motion_num_attention_heads": 8,
        "motion_max_seq_length": int(max_seq_length or DEFAULT_MAX_SEQ),
    }
    if hint_outs is not None:
        cfg["conditioning_embedding_out_channels"] = list(hint_outs)
    if family_of(cfg) != "sd15":
        cfg["attention_head_dim"] = [max(c // 64, 1) for c in channels]
    return cfg, ("attention_head_dim", "norm_num_groups")
