"""ControlNets in memory: a diffusers ``ControlNetModel`` config and state dict, whatever layout they came in.

Read by :func:`motion_adapters.loading.load_adapter` (``expect=KIND_CONTROLNET``) from a diffusers folder, a
community single file (lllyasviel ``control_*.pth`` / ``.safetensors``, with or without ``control_model.``) or
our own ``.safetensors``; built into a live model by :func:`motion_adapters.swap.build_controlnet`.

A single file carries no config: the architecture is read from tensor shapes, and what shapes cannot tell
(attention heads, GroupNorm groups) is set as SD1.5/SDXL set it and listed in ``ControlNetWeights.guessed``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..compat import convert_ldm_controlnet
from ..errors import AdapterFormatError
from .ldm import unet_key_to_ldm

LDM_CONTROL_PREFIX = "control_model."
# lllyasviel ControlNet v1.1 kinds, and the v1.0 ones that v1.1 renamed (hed -> softedge, normal -> normalbae)
V11_KINDS = ("canny", "depth", "inpaint", "ip2p", "lineart", "lineart_anime", "mlsd", "normalbae", "openpose",
             "scribble", "seg", "shuffle", "softedge", "tile")
V10_KINDS = ("canny", "depth", "hed", "mlsd", "normal", "openpose", "scribble", "seg")
_KINDS_LONGEST_FIRST = tuple(sorted(set(V11_KINDS) | set(V10_KINDS), key=len, reverse=True))
_WEIGHT_SUFFIXES = (".safetensors", ".sft", ".pth", ".ckpt", ".pt", ".bin")

# the keys that mark each layout (after stripping ``control_model.``)
_LDM_MARKERS = ("input_hint_block.", "zero_convs.", "middle_block_out.")
_DIFFUSERS_MARKERS = ("controlnet_cond_embedding.", "controlnet_down_blocks.", "controlnet_mid_block.")
# what shapes cannot tell: taken from the base by ``swap.check_controlnet_fits_base`` for single files
GUESSABLE = ("attention_head_dim", "num_attention_heads", "norm_num_groups", "norm_eps", "upcast_attention",
             "addition_time_embed_dim")
# the SDXL add_embedding / the LDM label_emb (diffusers' converter maps only the SD1.5 layers)
_LDM_EXTRA = {
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}


@dataclass
class ControlNetWeights:
    """A ControlNet: ``config`` is diffusers' ``ControlNetModel`` config (no ``_`` keys), ``state_dict`` uses
    diffusers' ``ControlNetModel`` key names."""

    config: dict
    state_dict: dict[str, torch.Tensor]
    source_format: str                 # "diffusers-folder" | "ldm-single-file" | "diffusers-single-file" | "ours"
    control_kind: str | None = None    # "canny", "depth", "openpose", … or "silhouette"; None: not told by the file
    family: str = "sd15"               # "sd15" | "sdxl"
    metadata: dict = field(default_factory=dict)
    source: str = "<controlnet>"       # the file or folder it was read from, for messages
    guessed: tuple[str, ...] = ()      # config keys set by convention, not read from the file (single files)

    @property
    def conditioning_channels(self) -> int:
        return int(self.config.get("conditioning_channels", 3))

    @property
    def num_params(self) -> int:
        return sum(t.numel() for t in self.state_dict.values())


# ------------------------------------------------------------------------------------------------ telling
def control_kind_from_name(path: str | Path) -> str | None:
    """The control kind a file or folder name tells (``control_v11p_sd15_canny.pth`` → ``canny``,
    ``sd-controlnet-openpose`` → ``openpose``), or ``None``. A Hugging Face cache snapshot is named by its
    repository folder (``models--lllyasviel--control_v11p_sd15_canny``)."""
    p = Path(path)
    names = [p.name]
    if p.parent.name == "snapshots":
        names.append(p.parent.parent.name)
    for name in names:
        if kind := _kind_in(name):
            return kind
    return None


def _kind_in(name: str) -> str | None:
    stem = name.lower()
    for suffix in _WEIGHT_SUFFIXES:
        stem = stem.removesuffix(suffix)
    for kind in _KINDS_LONGEST_FIRST:  # lineart_anime before lineart
        if re.search(rf"(?<![a-z0-9]){kind}(?![a-z0-9])", stem):
            return kind
    return None


def strip_control_prefix(keys: Iterable[str]) -> list[str]:
    return [k.removeprefix(LDM_CONTROL_PREFIX) for k in keys]


def is_ldm_controlnet(keys: Iterable[str]) -> bool:
    """lllyasviel layout: ``input_hint_block.*`` and ``zero_convs.*`` (optionally under ``control_model.``)."""
    ks = strip_control_prefix(keys)
    return any(k.startswith("input_hint_block.") for k in ks) and any(k.startswith("zero_convs.") for k in ks)


def is_diffusers_controlnet(keys: Iterable[str]) -> bool:
    """diffusers ``ControlNetModel`` keys, without motion modules (those make it a SparseCtrl)."""
    ks = list(keys)
    return (any(k.startswith("controlnet_cond_embedding.") for k in ks)
            and any(k.startswith("controlnet_down_blocks.") for k in ks)
            and not any("motion_modules." in k for k in ks))


def is_t2i_adapter(keys: Iterable[str]) -> bool:
    """diffusers ``T2IAdapter`` keys (``adapter.body.…``, ``adapter.conv_in``) or TencentARC originals
    (``body.N.block1``, ``body.N.in_conv``, ``conv_in``)."""
    ks = list(keys)
    if any(k.startswith(("adapter.body.", "adapter.conv_in.")) for k in ks):
        return True
    return any(re.match(r"body\.\d+\.(block1|in_conv|resnets)\.", k) for k in ks)


def family_of(config: Mapping[str, Any]) -> str:
    """``sdxl`` (text_time embeddings or 2048-wide cross-attention), ``sd2`` (1024) or ``sd15`` (768, and
    SD1.5-layout models of other widths)."""
    dim = config.get("cross_attention_dim")
    if config.get("addition_embed_type") == "text_time" or dim == 2048:
        return "sdxl"
    return "sd2" if dim == 1024 else "sd15"


FAMILY_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL", "sd2": "SD2"}


# --------------------------------------------------------------------------------------------- converting
def ldm_layers_per_block(sd: Mapping[str, Tensor]) -> int:
    """Resnets per level, from where the first downsampler (``input_blocks.N.0.op``) sits."""
    ops = sorted(int(m[1]) for k in sd if (m := re.fullmatch(r"input_blocks\.(\d+)\.0\.op\.weight", k)))
    if ops:
        return ops[0] - 1
    blocks = {int(m[1]) for k in sd if (m := re.match(r"input_blocks\.(\d+)\.", k))}
    return max(blocks, default=1)  # one level: every block after conv_in is a resnet


def ldm_to_diffusers(tensors: Mapping[str, Tensor], source: Any = None) -> dict[str, Tensor]:
    """lllyasviel keys (with or without ``control_model.``) → diffusers ``ControlNetModel`` keys.

    A full v1.0 file (``control_sd15_canny.pth``: the SD model and the ControlNet) keeps only the ControlNet.
    Uses diffusers' converter; every tensor must find a place."""
    if any(k.startswith(LDM_CONTROL_PREFIX) for k in tensors):
        sd = {k[len(LDM_CONTROL_PREFIX):]: v for k, v in tensors.items() if k.startswith(LDM_CONTROL_PREFIX)}
    else:
        sd = dict(tensors)
    extra = {f"{d}.{p}": sd[f"{ldm}.{p}"] for d, ldm in _LDM_EXTRA.items() for p in ("weight", "bias")
             if f"{ldm}.{p}" in sd}
    base = {k: v for k, v in sd.items() if not k.startswith("label_emb.")}
    out = {k: v for k, v in convert_ldm_controlnet(base, {"layers_per_block": ldm_layers_per_block(sd)}).items()
           if v is not None}
    out.update(extra)
    if len(out) != len(sd):
        raise AdapterFormatError(
            source, f"every ControlNet tensor to map onto the diffusers layout ({len(sd)} tensors)",
            f"{len(out)} mapped by diffusers' converter",
            "The file may be truncated or a ControlNet variant this toolkit does not read.",
        )
    return out


def diffusers_key_to_ldm(key: str, layers_per_block: int, n_hint_blocks: int = 6) -> str:
    """One diffusers ``ControlNetModel`` key → its lllyasviel name (no prefix); ``KeyError`` if it has none."""
    name, _, param = key.rpartition(".")
    if name == "controlnet_cond_embedding.conv_in":
        return f"input_hint_block.0.{param}"
    if name == "controlnet_cond_embedding.conv_out":
        return f"input_hint_block.{2 * (n_hint_blocks + 1)}.{param}"
    if m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)", name):
        return f"input_hint_block.{2 * (int(m[1]) + 1)}.{param}"
    if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)", name):
        return f"zero_convs.{m[1]}.0.{param}"
    if name == "controlnet_mid_block":
        return f"middle_block_out.0.{param}"
    if name in _LDM_EXTRA:
        return f"{_LDM_EXTRA[name]}.{param}"
    ldm = unet_key_to_ldm(key, layers_per_block, set())
    if ldm is None or ldm.startswith(("output_blocks.", "out.")):
        raise KeyError(key)
    return ldm


def diffusers_to_ldm(state_dict: Mapping[str, Tensor], config: Mapping[str, Any],
                     prefix: str = LDM_CONTROL_PREFIX) -> dict[str, Tensor]:
    """diffusers ``ControlNetModel`` keys → the lllyasviel layout (under ``prefix``, as ControlNet's own
    training code saves it); the exact inverse of :func:`ldm_to_diffusers`."""
    lpb = int(config["layers_per_block"])
    n_hint = sum(1 for k in state_dict if re.fullmatch(r"controlnet_cond_embedding\.blocks\.\d+\.weight", k))
    out, unmapped = {}, []
    for key, value in state_dict.items():
        try:
            out[prefix + diffusers_key_to_ldm(key, lpb, n_hint)] = value
        except KeyError:
            unmapped.append(key)
    if unmapped:
        raise AdapterFormatError("controlnet", "a diffusers ControlNetModel state dict (every key has an "
                                 "lllyasviel counterpart)", f"{len(unmapped)} keys without one: {unmapped[0]!r}")
    return out


# ------------------------------------------------------------------------------------ config from shapes
def _levels(sd: Mapping[str, Tensor]) -> list[int]:
    return sorted({int(m[1]) for k in sd if (m := re.match(r"down_blocks\.(\d+)\.", k))})


def _count(sd: Mapping[str, Tensor], pattern: str) -> int:
    return len({m[1] for k in sd if (m := re.match(pattern, k))})


def _cross_attention_dim(sd: Mapping[str, Tensor]) -> int | None:
    dims = [v.shape[1] for k, v in sd.items() if k.endswith("attn2.to_k.weight")]
    return int(dims[0]) if dims else None


def _conditioning_channels(sd: Mapping[str, Tensor]) -> tuple[int, tuple[int, ...]]:
    first = sd["controlnet_cond_embedding.conv_in.weight"]
    n = _count(sd, r"controlnet_cond_embedding\.blocks\.(\d+)\.weight")
    outs = [int(first.shape[0])] + [int(sd[f"controlnet_cond_embedding.blocks.{2 * i + 1}.weight"].shape[0])
                                    for i in range(n // 2)]
    return int(first.shape[1]), tuple(outs)


def _groups(channels: Iterable[int], preferred: int = 32) -> int:
    g = math.gcd(*channels)
    return next(n for n in (preferred, 16, 8, 4, 2, 1) if g % n == 0)


def _down_blocks(sd: Mapping[str, Tensor]) -> tuple[list[int], list[int], int, list[bool], list[int]]:
    """An encoder's down blocks read from diffusers-key shapes: levels, their channels, resnets per block, which
    have attentions and each one's transformer depth (a missing tensor raises ``KeyError``/``IndexError``)."""
    levels = _levels(sd)
    channels = [int(sd[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in levels]
    lpb = _count(sd, r"down_blocks\.0\.resnets\.(\d+)\.")
    attn = [any(k.startswith(f"down_blocks.{i}.attentions.") for k in sd) for i in levels]
    depth = [_count(sd, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.") or 1 for i in levels]
    return levels, channels, lpb, attn, depth


def infer_config(sd: Mapping[str, Tensor], source: Any = None) -> tuple[dict, tuple[str, ...]]:
    """A ``ControlNetModel`` config read from diffusers-key tensor shapes, and the keys set by convention.

    Heads follow the family: SD1.5's 8 per level; SD2/SDXL's 64-wide heads (``attention_head_dim`` is the
    head count in diffusers' SD configs). GroupNorm: 32 groups when the channels allow. SDXL's time
    embedding width (256) is not in the weights either."""
    try:
        levels, channels, lpb, attn, depth = _down_blocks(sd)
        hint_ch, hint_outs = _conditioning_channels(sd)
        in_ch = int(sd["conv_in.weight"].shape[1])
    except (KeyError, IndexError) as e:
        raise AdapterFormatError(source, "a complete ControlNet (down blocks, conv_in, hint embedding)",
                                 f"no tensor {e}", "The file may be truncated.") from None
    cfg: dict[str, Any] = {
        "in_channels": in_ch,
        "conditioning_channels": hint_ch,
        "conditioning_embedding_out_channels": list(hint_outs),
        "block_out_channels": channels,
        "layers_per_block": lpb,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "cross_attention_dim": _cross_attention_dim(sd) or 768,
        "transformer_layers_per_block": depth[0] if len(set(depth)) == 1 else depth,
        "use_linear_projection": any(k.endswith("proj_in.weight") and v.ndim == 2 for k, v in sd.items()),
        "norm_num_groups": _groups(channels),
    }
    if "add_embedding.linear_1.weight" in sd:
        cfg.update(addition_embed_type="text_time", addition_time_embed_dim=256,
                   projection_class_embeddings_input_dim=int(sd["add_embedding.linear_1.weight"].shape[1]))
    fam = family_of(cfg)
    cfg["attention_head_dim"] = 8 if fam == "sd15" else [max(c // 64, 1) for c in channels]
    if "mid_block.attentions.0.proj_in.weight" not in sd:
        cfg["mid_block_type"] = "UNetMidBlock2D"
    guessed = ("attention_head_dim", "norm_num_groups")
    return cfg, guessed + (("addition_time_embed_dim",) if fam == "sdxl" else ())


def clean_config(config: Mapping[str, Any]) -> dict:
    """A config without diffusers' ``_`` bookkeeping keys, tuples as lists (as JSON gives them back)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items() if not k.startswith("_")}
