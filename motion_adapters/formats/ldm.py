"""Single-file LDM ("civitai") Stable Diffusion 1.5 checkpoints: detection, reading and writing.

A single file holds the UNet under ``model.diffusion_model.``, the VAE under ``first_stage_model.`` and the
CLIP text encoder under ``cond_stage_model.transformer.`` (see docs/formats.md#single-file-sd-checkpoints).
Reading uses diffusers' own converters; writing is their exact inverse, so
``ldm_to_diffusers(diffusers_to_ldm(...))`` is bit-exact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..compat import convert_ldm_clip, convert_ldm_unet, convert_ldm_vae
from ..errors import AdapterFormatError
from ..io import save_safetensors_atomic

LDM_UNET_PREFIX = "model.diffusion_model."
LDM_VAE_PREFIX = "first_stage_model."
LDM_TEXT_PREFIX = "cond_stage_model.transformer."

# diffusers' CHECKPOINT_KEY_NAMES (single_file_utils.py), restated so detection needs no diffusers import.
_KEY_V1 = LDM_UNET_PREFIX + "output_blocks.11.0.skip_connection.weight"
_KEY_V2 = LDM_UNET_PREFIX + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
_KEY_XL_BASE = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"
_KEY_XL_REFINER = "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias"
_KEY_XL_LABEL_EMB = LDM_UNET_PREFIX + "label_emb.0.0.weight"  # SDXL's add_embedding (not in SD1.5/SD2)
_KEY_INPAINT = LDM_UNET_PREFIX + "input_blocks.0.0.weight"
_POSITION_IDS = "embeddings.position_ids"

# ResBlock sub-layer names, diffusers -> LDM (the UNet's; the VAE only renames conv_shortcut).
_UNET_RESNET_TO_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP_TO_LDM = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTN_TO_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_TOP = ("conv_in", "conv_out", "quant_conv", "post_quant_conv")


def is_ldm_checkpoint(keys: Iterable[str]) -> bool:
    """True if any key carries the single-file UNet prefix ``model.diffusion_model.``."""
    return any(k.startswith(LDM_UNET_PREFIX) for k in keys)


def ldm_family(state_dict: Mapping[str, Tensor]) -> str:
    """Classify a single-file checkpoint: ``sd15``, ``sd2``, ``sdxl``, ``sd15-inpaint`` or ``unknown``.

    Uses diffusers' marker keys (listed in docs/formats.md#single-file-sd-checkpoints). SD2/SDXL inpainting
    models report their base family.
    """
    if _KEY_XL_BASE in state_dict or _KEY_XL_REFINER in state_dict or _KEY_XL_LABEL_EMB in state_dict:
        return "sdxl"
    if _KEY_V2 in state_dict and state_dict[_KEY_V2].shape[-1] == 1024:
        return "sd2"
    if (
        _KEY_INPAINT in state_dict
        and state_dict[_KEY_INPAINT].ndim == 4
        and state_dict[_KEY_INPAINT].shape[1] == 9
    ):
        return "sd15-inpaint"
    if _KEY_V1 in state_dict:
        return "sd15"
    return "unknown"


def _sub(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _check_unet_layout(unet_sd: Mapping[str, Tensor], unet_config: Mapping[str, Any], source: Any) -> None:
    """Fail early, with a readable message, when the file's UNet does not fit ``unet_config``."""
    lpb = unet_config["layers_per_block"]
    if not isinstance(lpb, int):
        raise AdapterFormatError(source, "a UNet config with an integer layers_per_block", f"{lpb!r}")
    n_blocks = len(unet_config["down_block_types"])
    # input: conv_in + (lpb resnets + 1 downsampler) per level - the last level's downsampler;
    # output: lpb + 1 resnets per level.
    want_in = want_out = n_blocks * (lpb + 1)
    got_in = len({k.split(".")[1] for k in unet_sd if k.startswith("input_blocks.")})
    got_out = len({k.split(".")[1] for k in unet_sd if k.startswith("output_blocks.")})
    if (got_in, got_out) != (want_in, want_out):
        raise AdapterFormatError(
            source,
            f"a UNet with {want_in} input and {want_out} output blocks ({n_blocks} levels, "
            f"layers_per_block={lpb}, as in unet_config)",
            f"{got_in} input and {got_out} output blocks",
            "Pass the unet_config that matches this checkpoint.",
        )
    conv_in = unet_sd.get("input_blocks.0.0.weight")
    in_ch = unet_config.get("in_channels", 4)
    if conv_in is not None and conv_in.ndim == 4 and conv_in.shape[1] != in_ch:
        raise AdapterFormatError(
            source,
            f"a UNet with in_channels={in_ch} (unet_config)",
            f"conv_in with {conv_in.shape[1]} input channels",
            "Inpainting checkpoints (9 channels) need a config with in_channels=9.",
        )


def _converted_all(kind: str, n_in: int, out: dict[str, Tensor | None], source: Any) -> dict[str, Tensor]:
    """Drop ``None`` values from diffusers' converters and refuse to lose tensors silently."""
    clean = {k: v for k, v in out.items() if v is not None}
    if len(clean) != n_in:
        raise AdapterFormatError(
            source,
            f"every {kind} tensor to map onto the diffusers layout ({n_in} tensors)",
            f"{len(clean)} mapped by diffusers' converter",
            "The file's layout does not match the config (or it is not an SD1.5-layout checkpoint).",
        )
    return clean


def ldm_to_diffusers(
    state_dict: Mapping[str, Tensor],
    unet_config: Mapping[str, Any],
    vae_config: Mapping[str, Any],
    source: str | Path | None = None,
) -> dict[str, dict[str, Tensor]]:
    """Split a single-file LDM checkpoint into diffusers-layout ``unet``/``vae``/``text_encoder`` state dicts.

    A component is left out when the file lacks it (e.g. no VAE). EMA copies (``model_ema.``) are ignored.
    The text encoder comes out in transformers 5.x's flattened ``CLIPTextModel`` layout (no ``text_model.``).
    """
    unet_keys = {k: v for k, v in state_dict.items() if k.startswith(LDM_UNET_PREFIX)}
    if not unet_keys:
        sample = ", ".join(sorted(state_dict)[:3]) or "no tensors at all"
        raise AdapterFormatError(
            source,
            f"a single-file Stable Diffusion checkpoint (UNet keys under '{LDM_UNET_PREFIX}')",
            f"no UNet keys (first keys: {sample})",
            "Motion modules, LoRAs and diffusers folders are loaded by other functions.",
        )
    family = ldm_family(state_dict)
    if family in ("sdxl", "sd2"):
        raise AdapterFormatError(
            source,
            "an SD1.5-family single-file checkpoint",
            f"an {family.upper()} checkpoint",
            "Only SD1.5-based checkpoints (and their fine-tunes) are supported.",
        )
    unet_config = dict(unet_config)  # diffusers' converters only index it; FrozenDict works too
    _check_unet_layout(_sub(unet_keys, LDM_UNET_PREFIX), unet_config, source)

    # Only the UNet keys are handed over: with >100 `model_ema*` keys diffusers would log an EMA warning.
    out: dict[str, dict[str, Tensor]] = {
        "unet": _converted_all(
            "UNet", len(unet_keys), convert_ldm_unet(unet_keys, unet_config), source
        )
    }

    vae_keys = {k: v for k, v in state_dict.items() if k.startswith(LDM_VAE_PREFIX)}
    if vae_keys:
        vae = convert_ldm_vae(vae_keys, dict(vae_config))
        out["vae"] = _converted_all("VAE", len(vae_keys), vae, source)

    text_keys = {
        k: v for k, v in state_dict.items() if k.startswith(LDM_TEXT_PREFIX) and not k.endswith(_POSITION_IDS)
    }
    if text_keys:
        clip = convert_ldm_clip(text_keys)
        # transformers >= 5.6 flattened CLIPTextModel: its keys no longer start with `text_model.`.
        out["text_encoder"] = {k.removeprefix("text_model."): v for k, v in clip.items()}
    return out


def _unet_shape(unet: Mapping[str, Tensor], unet_config: Mapping[str, Any] | None) -> tuple[int, int]:
    """(layers_per_block, number of levels), from the config or else counted from the keys."""
    if unet_config is not None:
        lpb = unet_config["layers_per_block"]
        if not isinstance(lpb, int):
            raise AdapterFormatError("unet_config", "an integer layers_per_block", f"{lpb!r}")
        return lpb, len(unet_config["down_block_types"])
    levels = {int(m.group(1)) for k in unet if (m := re.match(r"down_blocks\.(\d+)\.", k))}
    resnets = {int(m.group(1)) for k in unet if (m := re.match(r"down_blocks\.0\.resnets\.(\d+)\.", k))}
    if not levels or not resnets:
        raise AdapterFormatError("unet", "a diffusers UNet2DConditionModel state dict", "no down_blocks keys")
    return len(resnets), len(levels)


def _unet_key_to_ldm(key: str, lpb: int, up_with_attn: set[int]) -> str | None:
    """Map one diffusers UNet key to its LDM name (without prefix); ``None`` if it has no SD1.5 counterpart."""
    name, _, param = key.rpartition(".")
    if name in _UNET_TOP_TO_LDM:
        return f"{_UNET_TOP_TO_LDM[name]}.{param}"
    step = lpb + 1

    def resnet(ldm_block: str, rest: str) -> str | None:
        layer, _, tail = rest.partition(".")
        return f"{ldm_block}.{_UNET_RESNET_TO_LDM[layer]}.{tail}" if layer in _UNET_RESNET_TO_LDM else None

    if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        b, k, rest = int(m[1]), int(m[2]), m[3]
        return resnet(f"input_blocks.{b * step + 1 + k}.0", rest)
    if m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        b, k, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{b * step + 1 + k}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", key):
        return f"input_blocks.{(int(m[1]) + 1) * step}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.([01])\.(.+)", key):
        return resnet(f"middle_block.{2 * int(m[1])}", m[2])
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        b, k, rest = int(m[1]), int(m[2]), m[3]
        return resnet(f"output_blocks.{b * step + k}.0", rest)
    if m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        b, k, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{b * step + k}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", key):
        b = int(m[1])
        slot = 2 if b in up_with_attn else 1  # after the resnet (and the attention, when the level has one)
        return f"output_blocks.{b * step + lpb}.{slot}.conv.{m[2]}"
    return None


def unet_key_to_ldm(key: str, layers_per_block: int,
                    up_with_attn: set[int] | frozenset[int] = frozenset()) -> str | None:
    """One diffusers UNet key → its LDM name without prefix (``None`` if SD1.5 has none); ``up_with_attn``:
    the up levels that hold attentions. Shared with the ControlNet layout, whose encoder is the UNet's."""
    return _unet_key_to_ldm(key, layers_per_block, set(up_with_attn))


def _vae_key_to_ldm(key: str, n_levels: int) -> str | None:
    """Map one diffusers AutoencoderKL key to its LDM name (without prefix)."""
    if key.rpartition(".")[0] in _VAE_TOP or re.fullmatch(r"(en|de)coder\.(conv_in|conv_out)\.\w+", key):
        return key
    if m := re.fullmatch(r"(encoder|decoder)\.conv_norm_out\.(\w+)", key):
        return f"{m[1]}.norm_out.{m[2]}"

    def resnet(ldm_block: str, rest: str) -> str:
        return f"{ldm_block}.{rest.replace('conv_shortcut.', 'nin_shortcut.')}"

    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return resnet(f"encoder.down.{m[1]}.block.{m[2]}", m[3])
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return resnet(f"decoder.up.{n_levels - 1 - int(m[1])}.block.{m[2]}", m[3])
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
        return f"decoder.up.{n_levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return resnet(f"{m[1]}.mid.block_{int(m[2]) + 1}", m[3])
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
        if m[2] in _VAE_ATTN_TO_LDM:
            return f"{m[1]}.mid.attn_1.{_VAE_ATTN_TO_LDM[m[2]]}.{m[3]}"
    return None


def _unmapped_error(component: str, keys: list[str]) -> AdapterFormatError:
    shown = ", ".join(keys[:5]) + (f" … (+{len(keys) - 5})" if len(keys) > 5 else "")
    return AdapterFormatError(
        component,
        "a diffusers state dict with the SD1.5 layout (every key has an LDM counterpart)",
        f"{len(keys)} keys without one: {shown}",
    )


def diffusers_to_ldm(
    unet: Mapping[str, Tensor],
    vae: Mapping[str, Tensor] | None = None,
    text_encoder: Mapping[str, Tensor] | None = None,
    unet_config: Mapping[str, Any] | None = None,
) -> dict[str, Tensor]:
    """Build a single-file LDM state dict (the key names real SD1.5 checkpoints use) from diffusers ones.

    The exact inverse of :func:`ldm_to_diffusers`. Block indices follow ``unet_config`` (``layers_per_block``,
    number of levels), or are counted from the UNet keys when no config is given. VAE mid-block attention
    weights become 1×1 convolutions, as in the original files; CLIP ``position_ids`` are not written.
    """
    lpb, _ = _unet_shape(unet, unet_config)
    up_with_attn = {int(m.group(1)) for k in unet if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    out: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key, value in unet.items():
        ldm = _unet_key_to_ldm(key, lpb, up_with_attn)
        if ldm is None:
            unmapped.append(key)
        else:
            out[LDM_UNET_PREFIX + ldm] = value
    if unmapped:
        raise _unmapped_error("unet", unmapped)

    if vae is not None:
        n_levels = len({int(m.group(1)) for k in vae if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k))})
        for key, value in vae.items():
            ldm = _vae_key_to_ldm(key, n_levels)
            if ldm is None:
                unmapped.append(key)
                continue
            if ".mid.attn_1." in ldm and ldm.endswith(".weight") and value.ndim == 2:
                value = value[:, :, None, None]  # linear -> 1x1 conv, as LDM's AttnBlock stores them
            out[LDM_VAE_PREFIX + ldm] = value
        if unmapped:
            raise _unmapped_error("vae", unmapped)

    if text_encoder is not None:
        for key, value in text_encoder.items():
            if key.endswith(_POSITION_IDS):
                continue
            name = key if key.startswith("text_model.") else "text_model." + key
            out[LDM_TEXT_PREFIX + name] = value
    return out


def _as_state_dict(obj: Mapping[str, Tensor] | torch.nn.Module) -> dict[str, Tensor]:
    return dict(obj.state_dict()) if isinstance(obj, torch.nn.Module) else dict(obj)


def save_ldm_checkpoint(
    path: str | Path,
    unet: Mapping[str, Tensor] | torch.nn.Module,
    vae: Mapping[str, Tensor] | torch.nn.Module | None = None,
    text_encoder: Mapping[str, Tensor] | torch.nn.Module | None = None,
    unet_config: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write components (state dicts or modules) as one single-file LDM ``.safetensors``, atomically."""
    if unet_config is None and isinstance(unet, torch.nn.Module) and hasattr(unet, "config"):
        unet_config = dict(unet.config)
    tensors = diffusers_to_ldm(
        _as_state_dict(unet),
        None if vae is None else _as_state_dict(vae),
        None if text_encoder is None else _as_state_dict(text_encoder),
        unet_config=unet_config,
    )
    return save_safetensors_atomic(tensors, path, metadata)
