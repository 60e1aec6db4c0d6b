"""IP-Adapters in memory: the image projection and the per-layer key/value projections of an image prompt, in
the two-part layout diffusers' ``load_ip_adapter`` takes (``{"image_proj": …, "ip_adapter": …}``).

Read from h94's files (``ip-adapter_sd15``, ``-plus``, ``-plus-face``, ``-full-face``; ``.bin`` through
``weights_only`` or ``.safetensors`` with ``image_proj.`` / ``ip_adapter.`` prefixes) or ours. The CLIP image
encoder they need is a local diffusers/transformers folder (``CLIPVisionModelWithProjection``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from ..errors import AdapterFormatError
from .controlnet import FAMILY_NAMES, family_of

IP_ADAPTER_VARIANTS = ("plain", "plus", "plus-face", "full-face")
PARTS = ("image_proj", "ip_adapter")
FULL_FACE_TOKENS = 257             # the 16×16 patches and the class token of h94's 224-px ViT-H encoder
ENCODER_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.fp16.safetensors")
_ID_RE = re.compile(r"(\d+)\.to_([kv])_ip\.weight")


@dataclass
class IPAdapterWeights:
    """An IP-Adapter: ``image_proj`` and ``ip_adapter`` are the two state dicts of h94's layout."""

    image_proj: dict[str, torch.Tensor]
    ip_adapter: dict[str, torch.Tensor]
    variant: str                       # one of IP_ADAPTER_VARIANTS
    family: str                        # "sd15" | "sdxl" (from the key/value projections' input width)
    cross_attention_dim: int           # the text width the image tokens are projected to
    image_embed_dim: int               # what the image encoder must give: projection_dim (plain) or hidden_size
    num_tokens: int                    # image tokens added to each cross attention
    source_format: str = "h94"         # "h94" | "ours"
    metadata: dict = field(default_factory=dict)
    source: str = "<ip-adapter>"

    @property
    def uses_hidden_states(self) -> bool:
        """Plus / face variants read the encoder's penultimate hidden states, plain ones its image embeds."""
        return self.variant != "plain"

    def as_diffusers(self) -> dict[str, dict[str, torch.Tensor]]:
        """The dict diffusers' ``load_ip_adapter`` takes."""
        return {"image_proj": dict(self.image_proj), "ip_adapter": dict(self.ip_adapter)}

    @property
    def num_params(self) -> int:
        return sum(t.numel() for d in (self.image_proj, self.ip_adapter) for t in d.values())

    @property
    def num_layers(self) -> int:
        """Cross-attention layers it adds keys and values to (one ``N.to_k_ip``/``N.to_v_ip`` pair each)."""
        return sum(1 for k in self.ip_adapter if k.endswith(".to_k_ip.weight"))

    def flat(self) -> dict[str, torch.Tensor]:
        """The tensors under ``image_proj.`` / ``ip_adapter.`` keys (h94's ``.safetensors`` layout)."""
        return {f"{part}.{k}": v for part in PARTS for k, v in getattr(self, part).items()}

    def summary(self) -> dict[str, Any]:
        """What our header stores besides the tensors."""
        return {"variant": self.variant, "cross_attention_dim": self.cross_attention_dim,
                "image_embed_dim": self.image_embed_dim, "num_tokens": self.num_tokens}


# ------------------------------------------------------------------------------------------------ telling
def is_ip_adapter(keys: Iterable[str]) -> bool:
    """h94's layout: every key under ``image_proj.`` or ``ip_adapter.``, both present."""
    ks = list(keys)
    return (bool(ks) and all(k.startswith(("image_proj.", "ip_adapter.")) for k in ks)
            and any(k.startswith("image_proj.") for k in ks) and any(k.startswith("ip_adapter.") for k in ks))


def _is_face_id(proj: Mapping[str, torch.Tensor], ip: Mapping[str, torch.Tensor], name: str) -> bool:
    return ("faceid" in name.lower() or any("lora" in k for k in ip)
            or any(k.startswith("perceiver_resampler.") for k in proj)
            or ("norm.weight" in proj and "proj.0.weight" in proj))


def split_parts(tensors: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
    """The ``image_proj`` and ``ip_adapter`` state dicts of a flat h94 key set."""
    parts: dict[str, dict] = {p: {} for p in PARTS}
    for k, v in tensors.items():
        part, _, rest = k.partition(".")
        if part in parts:
            parts[part][rest] = v
    return parts["image_proj"], parts["ip_adapter"]


def ip_adapter_from_tensors(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], source,
                            meta: Mapping[str, Any] | None = None) -> IPAdapterWeights:
    """An IP-Adapter from h94's flat keys; the variant from the image projection's keys (plus-face from the
    file name), the family from the key/value projections' input width. FaceID and SDXL files are refused."""
    name = Path(str(source)).name
    proj, ip = split_parts(tensors)
    if _is_face_id(proj, ip, name):
        raise AdapterFormatError(source, "an IP-Adapter (plain, plus, plus-face or full-face)",
                                 "an IP-Adapter FaceID (it needs InsightFace embeddings and a LoRA)",
                                 "FaceID variants are not supported.")
    try:
        cross = int(ip["1.to_k_ip.weight"].shape[1])
        if "proj.weight" in proj:
            variant, embed = "plain", int(proj["proj.weight"].shape[1])
            tokens = int(proj["proj.weight"].shape[0]) // cross
        elif "proj.3.weight" in proj:
            variant, embed, tokens = "full-face", int(proj["proj.0.weight"].shape[1]), FULL_FACE_TOKENS
        elif "latents" in proj:
            face = re.search(r"plus[-_]face", name.lower()) is not None
            variant, embed = ("plus-face" if face else "plus"), int(proj["proj_in.weight"].shape[1])
            tokens = int(proj["latents"].shape[1])
        else:
            raise AdapterFormatError(source, "an IP-Adapter image projection (proj, latents/proj_in or proj.0-3)",
                                     f"image_proj keys {sorted(proj)[:3]}")
    except KeyError as e:
        raise AdapterFormatError(source, "a complete IP-Adapter (image_proj and ip_adapter.N.to_k_ip/to_v_ip)",
                                 f"no tensor {e}", "The file may be truncated.") from None
    if meta and meta.get("variant") in IP_ADAPTER_VARIANTS:
        variant = meta["variant"]
    family = family_of({"cross_attention_dim": cross})
    if family != "sd15":
        raise AdapterFormatError(
            source, "an IP-Adapter for SD1.5 (keys and values from 768-wide text embeddings)",
            f"one made for {FAMILY_NAMES.get(family, family)} ({cross}-wide)",
            "Only SD1.5-family IP-Adapters attach here.")
    _check_pairs(ip, source)
    return IPAdapterWeights(image_proj=proj, ip_adapter=ip, variant=variant, family=family,
                            cross_attention_dim=cross, image_embed_dim=embed, num_tokens=tokens,
                            source_format="ours" if meta else "h94", metadata=dict(metadata), source=str(source))


def _check_pairs(ip: Mapping[str, torch.Tensor], source) -> None:
    """Every layer id 1, 3, 5, … up to the highest has its ``to_k_ip`` and ``to_v_ip``, and nothing else is there."""
    found = {(int(m[1]), m[2]) for k in ip if (m := _ID_RE.fullmatch(k))}
    top = max((i for i, _ in found), default=-1)
    want = [(i, kv) for i in range(1, top + 1, 2) for kv in "kv"]
    missing = [f"{i}.to_{kv}_ip.weight" for i, kv in want if (i, kv) not in found]
    extra = sorted(set(ip) - {f"{i}.to_{kv}_ip.weight" for i, kv in want})
    if missing or extra:
        what = f"no {missing[0]!r}" if missing else f"an unexpected key {extra[0]!r}"
        raise AdapterFormatError(source, "ip_adapter keys 1, 3, 5, … each with to_k_ip and to_v_ip",
                                 f"{what} among its {len(ip)} keys", "The file may be truncated or a variant.")


# ------------------------------------------------------------------------------------------- fitting a base
def cross_attention_widths(unet_config: Mapping[str, Any]) -> list[int]:
    """The width of each cross-attention layer of a ``UNet2DConditionModel`` config, in the order diffusers
    numbers IP-Adapter layers (down blocks, up blocks, mid block; one per transformer layer)."""
    ch = list(unet_config["block_out_channels"])
    n = len(ch)
    lpb = unet_config["layers_per_block"]
    lpb = [lpb] * n if isinstance(lpb, int) else list(lpb)
    tl = unet_config.get("transformer_layers_per_block", 1)
    tl = [tl] * n if isinstance(tl, int) else list(tl)
    rev_tl = unet_config.get("reverse_transformer_layers_per_block") or list(reversed(tl))
    rev_tl = [t if isinstance(t, int) else len(t) for t in rev_tl]
    widths: list[int] = []
    for i, kind in enumerate(unet_config["down_block_types"]):
        if "CrossAttn" in kind:
            widths += [ch[i]] * (lpb[i] * (tl[i] if isinstance(tl[i], int) else len(tl[i])))
    rev_ch, rev_lpb = list(reversed(ch)), list(reversed(lpb))
    for i, kind in enumerate(unet_config["up_block_types"]):
        if "CrossAttn" in kind:
            widths += [rev_ch[i]] * ((rev_lpb[i] + 1) * rev_tl[i])
    if unet_config.get("mid_block_type", "UNetMidBlock2DCrossAttn") == "UNetMidBlock2DCrossAttn":
        mid = unet_config.get("transformer_layers_per_mid_block") or (tl[-1] if isinstance(tl[-1], int) else 1)
        widths += [ch[-1]] * mid
    return widths


def check_ip_adapter_fits_base(ipw: IPAdapterWeights, unet_config: Mapping[str, Any], source) -> None:
    """Refuse an IP-Adapter whose key/value projections cannot sit in this base UNet: another text width,
    another number of cross-attention layers, or other layer widths."""
    base_cross = unet_config.get("cross_attention_dim")
    if base_cross != ipw.cross_attention_dim:
        raise AdapterFormatError(source, f"an IP-Adapter for cross_attention_dim {base_cross} (the base UNet's)",
                                 f"cross_attention_dim {ipw.cross_attention_dim}")
    widths = cross_attention_widths(unet_config)
    if ipw.num_layers != len(widths):
        raise AdapterFormatError(source, f"an IP-Adapter with {len(widths)} cross-attention layers (the base "
                                 "UNet's)", f"{ipw.num_layers} layers")
    for i, width in enumerate(widths):
        have = int(ipw.ip_adapter[f"{2 * i + 1}.to_k_ip.weight"].shape[0])
        if have != width:
            raise AdapterFormatError(source, f"layer {2 * i + 1} {width} wide (the base UNet's)", f"{have} wide")


# ----------------------------------------------------------------------------------------- image encoders
def default_image_encoder(ip_path: str | Path) -> Path | None:
    """Where h94's layout keeps the encoder: ``image_encoder/`` beside the weights (``models/ip-adapter_sd15.bin``
    + ``models/image_encoder/``), else beside their folder; None when neither holds a ``config.json``."""
    p = Path(ip_path)
    for folder in (p.parent / "image_encoder", p.parent.parent / "image_encoder"):
        if (folder / "config.json").is_file():
            return folder
    return None


def read_image_encoder(folder: str | Path) -> tuple[CLIPVisionModelWithProjection, CLIPImageProcessor]:
    """A CLIP image encoder and its preprocessor from a local folder (``config.json`` + weights; the
    preprocessor from ``preprocessor_config.json``, else CLIP's at the encoder's image size, as diffusers'
    ``load_ip_adapter`` makes it). Nothing is downloaded."""
    folder = Path(folder)
    expected = "a CLIP image-encoder folder (config.json and model.safetensors)"
    if not folder.is_dir():
        raise AdapterFormatError(folder, expected, "nothing at that path" if not folder.exists() else "a file")
    if not (folder / "config.json").is_file():
        raise AdapterFormatError(folder, expected, "a folder without config.json")
    if not any((folder / n).is_file() for n in ENCODER_WEIGHTS):
        raise AdapterFormatError(folder, expected, "a folder without weights")
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterFormatError(folder / "config.json", "a JSON config", f"unreadable JSON ({e})") from None
    if cfg.get("model_type") not in ("clip_vision_model", "clip"):
        raise AdapterFormatError(folder, expected, f"a config of model_type {cfg.get('model_type')!r}")
    try:
        encoder = CLIPVisionModelWithProjection.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as e:
        raise AdapterFormatError(folder, expected, f"weights that do not load ({str(e).splitlines()[0]})") from None
    if (folder / "preprocessor_config.json").is_file():
        processor = CLIPImageProcessor.from_pretrained(str(folder), local_files_only=True)
    else:
        size = int(encoder.config.image_size)
        processor = CLIPImageProcessor(size=size, crop_size=size)
    return encoder.eval().requires_grad_(False), processor


def check_image_encoder_fits(ipw: IPAdapterWeights, encoder: CLIPVisionModelWithProjection,
                             folder: str | Path) -> None:
    """Refuse an encoder whose output the IP-Adapter cannot take: plain IP-Adapters read the projected image
    embeds (``projection_dim``), plus and face ones the hidden states (``hidden_size``)."""
    what = "hidden_size" if ipw.uses_hidden_states else "projection_dim"
    have = int(getattr(encoder.config, what))
    if have != ipw.image_embed_dim:
        raise AdapterFormatError(
            folder, f"an image encoder with {what} {ipw.image_embed_dim} for the {ipw.variant} IP-Adapter "
            f"{ipw.source}", f"{what} {have}", "Use the image_encoder folder published with the IP-Adapter.")
