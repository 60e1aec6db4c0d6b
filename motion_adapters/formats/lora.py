"""LoRA files in every layout we meet, read into one canonical form and written back out.

The layouts and how they map onto each other: see docs/formats.md#lora-layouts.

Canonical form (:class:`LoraWeights`): the diffusers/PEFT layout that ``pipe.load_lora_weights`` takes,

* ``unet.<module path>.lora_A.weight`` / ``.lora_B.weight`` with module paths as named in diffusers'
  ``UNetMotionModel`` (``down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_out.0``), and
* ``text_encoder.<module path>.lora_A.weight`` / ``.lora_B.weight`` with module paths as named in the
  transformers 5.x ``CLIPTextModel``, which is *flattened*: ``encoder.layers.0.self_attn.q_proj`` (no
  ``text_model.`` prefix; diffusers strips that prefix itself when a file still carries it).

The scale ``alpha / rank`` (kohya ``.alpha`` keys, PEFT ``lora_alpha`` metadata) is multiplied into ``lora_B``,
so every pair means ``W + B @ A``: the official AnimateDiff merge rule, and what diffusers does for a file
without alphas (``lora_alpha = r``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch

from ..compat import (
    kohya_lora_to_diffusers,
    ldm_lora_blocks_to_diffusers,
    text_encoder_lora_to_peft,
    unet_lora_to_peft,
)
from ..errors import AdapterFormatError

__all__ = [
    "FORMATS",
    "LoraWeights",
    "detect_lora_format",
    "to_canonical",
    "to_kohya",
    "to_original",
    "to_peft_file_dict",
]

FORMATS = (
    "original-motion-lora",
    "diffusers-motion-lora",
    "peft",
    "kohya",
    "domain-adapter",
    "motiondirector",
)
KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
UNET = "unet"
TEXT_ENCODER = "text_encoder"

# Suffix patterns. Order matters: PEFT first, then the new-diffusers ``lora.down`` / ``lora_linear_layer.down``,
# then the processor layout ``[.processor].<name>_lora.{down,up}.weight``.
_PEFT_RE = re.compile(r"^(?P<mod>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
_DIFFUSERS_RE = re.compile(r"^(?P<mod>.+)\.lora(?:_linear_layer)?\.(?P<dir>down|up)\.weight$")
_PROCESSOR_RE = re.compile(
    r"^(?P<prefix>.+?)(?P<proc>\.processor)?\.(?P<name>[^.]+)_lora\.(?P<dir>down|up)\.weight$"
)
_ALPHA_RE = re.compile(r"^(?P<mod>.+?)(?:\.lora_A)?\.alpha$")
# MotionDirector's temporal export does not special-case to_out.0: ``…to_out.processor.0_lora.up.weight``.
_MOTIONDIRECTOR_QUIRK_RE = re.compile(r"\.to_out\.processor\.\d+_lora\.(?:down|up)\.weight$")

_TE_PROCESSOR_NAMES = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}
_DOWN_UP = {"down": "A", "up": "B"}


@dataclass
class LoraWeights:
    """A LoRA in canonical diffusers/PEFT layout with the scale folded into ``lora_B`` (see module docstring)."""

    state_dict: dict[str, torch.Tensor]
    kind: str  # "motion_lora" | "spatial_lora"
    source_format: str  # one of FORMATS
    rank: int  # largest rank of any pair
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def num_params(self) -> int:
        return sum(int(t.numel()) for t in self.state_dict.values())

    @property
    def modules(self) -> list[str]:
        """Target module paths with their component prefix (``unet.…`` / ``text_encoder.…``), sorted."""
        return sorted({k.rsplit(".lora_", 1)[0] for k in self.state_dict})

    @property
    def ranks(self) -> dict[str, int]:
        return {
            k[: -len(".lora_A.weight")]: int(v.shape[0])
            for k, v in self.state_dict.items()
            if ".lora_A." in k
        }

    def component(self, name: str) -> dict[str, torch.Tensor]:
        """The pairs of one component (``"unet"`` or ``"text_encoder"``) without that prefix."""
        p = name + "."
        return {k[len(p) :]: v for k, v in self.state_dict.items() if k.startswith(p)}


# --------------------------------------------------------------------------------------------------------------
# detection


def _is_tensor_key(k: object) -> bool:
    return isinstance(k, str)


_TE_PATH_RE = re.compile(r"^(?:text_model\.)?encoder\.layers\.\d+\.")


def _strip_component(key: str) -> tuple[str, str]:
    """``unet.`` / ``text_encoder.`` prefix → component; un-prefixed CLIP paths count as text encoder."""
    key = key.removeprefix("base_model.model.")
    for comp in (UNET, TEXT_ENCODER):
        if key.startswith(comp + "."):
            return comp, key[len(comp) + 1 :]
    if _TE_PATH_RE.match(key):
        return TEXT_ENCODER, key
    return UNET, key


def detect_lora_format(keys: Iterable[str]) -> str | None:
    """Name the LoRA layout of a state dict from its keys, or ``None`` when it holds no LoRA weights.

    * ``kohya``: ``lora_unet_…`` / ``lora_te_…`` keys;
    * ``peft``: ``….lora_A.weight`` / ``.lora_B.weight`` (also the new-diffusers ``lora.down`` /
      ``lora_linear_layer.down`` spellings), with or without a ``unet.`` prefix;
    * processor layout (``….processor.to_q_lora.down.weight``):
      ``motiondirector`` if it has the ``to_out.processor.0_lora`` quirk or un-prefixed ``proj_lora``-style keys,
      ``original-motion-lora`` on motion modules without ``unet.`` prefix (``temporal_transformer``,
      ``attention_blocks.N``), ``diffusers-motion-lora`` on motion modules with ``unet.``/``attn1`` names, and
      ``domain-adapter`` when it targets only spatial layers (v3 domain adapter, old diffusers attn-procs).
    """
    keys = [k for k in keys if _is_tensor_key(k)]
    if not keys:
        return None
    if any(k.startswith(KOHYA_PREFIXES) for k in keys):
        return "kohya"
    peft = [k for k in keys if _PEFT_RE.match(k) or _DIFFUSERS_RE.match(k)]
    if peft:
        return "peft"
    proc = [k for k in keys if _PROCESSOR_RE.match(k)]
    if not proc:
        return None
    if any(_MOTIONDIRECTOR_QUIRK_RE.search(k) for k in proc) or any(
        ".processor." not in k and "motion_modules" not in k for k in proc
    ):
        return "motiondirector"
    motion = [k for k in proc if ".motion_modules." in k or k.startswith("motion_modules.")]
    if motion:
        if any(k.startswith(UNET + ".") for k in motion) or any(
            re.search(r"\.attn[12]\.", k) for k in motion
        ):
            return "diffusers-motion-lora"
        return "original-motion-lora"
    return "domain-adapter"


# --------------------------------------------------------------------------------------------------------------
# module-path normalisation


_MOTION_RENAMES = (("attention_blocks.0", "attn1"), ("attention_blocks.1", "attn2"))


def _original_motion_path_to_diffusers(path: str) -> str:
    """Original → diffusers motion names, restricted to LoRA targets: drop ``temporal_transformer``,
    ``attention_blocks.N``→``attnN+1`` (docs/formats.md#motion-modules-original-and-diffusers-keys)."""
    if "motion_modules" not in path:
        return path
    path = path.replace(".temporal_transformer.", ".")
    if path.endswith(".temporal_transformer"):
        path = path[: -len(".temporal_transformer")]
    for old, new in _MOTION_RENAMES:
        path = re.sub(rf"(?<=\.){re.escape(old)}(?=\.|$)", new, path)
    return path


def _diffusers_motion_path_to_original(path: str) -> str:
    """Inverse of :func:`_original_motion_path_to_diffusers`.

    Re-inserts ``temporal_transformer`` after ``motion_modules.N`` and renames ``attnN+1`` back to
    ``attention_blocks.N``.
    """
    m = re.match(r"^(?P<head>.*?\bmotion_modules\.\d+)\.(?P<rest>.+)$", path)
    if not m:
        return path
    rest = m.group("rest")
    if not rest.startswith("temporal_transformer."):
        rest = re.sub(r"^(transformer_blocks\.\d+)\.attn1(?=\.|$)", r"\1.attention_blocks.0", rest)
        rest = re.sub(r"^(transformer_blocks\.\d+)\.attn2(?=\.|$)", r"\1.attention_blocks.1", rest)
        rest = "temporal_transformer." + rest
    return f"{m.group('head')}.{rest}"


def _processor_module(prefix: str, name: str, component: str) -> str:
    if component == TEXT_ENCODER:
        name = _TE_PROCESSOR_NAMES.get(name, name)
        return f"{prefix}.{name}"
    if name == "to_out":
        return f"{prefix}.to_out.0"
    return f"{prefix}.{name}"


def _normalise_module(component: str, mod: str) -> str:
    if component == TEXT_ENCODER:
        return mod.removeprefix("text_model.")
    return _original_motion_path_to_diffusers(mod)


# --------------------------------------------------------------------------------------------------------------
# reading


def _peft_configs_from_metadata(metadata: Mapping[str, str] | None) -> dict[str | None, dict]:
    """``lora_adapter_metadata`` JSON → {component or None: LoraConfig kwargs}.

    ``save_lora_adapter`` (one model) writes the plain config; a pipeline's ``save_lora_weights`` packs it as
    ``{"unet.r": …, "unet.lora_alpha": …, "text_encoder.r": …}``.
    """
    raw = (metadata or {}).get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        cfg = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError):
        return {}
    if not isinstance(cfg, dict):
        return {}
    out: dict[str | None, dict] = {}
    for k, v in cfg.items():
        comp, _, rest = k.partition(".")
        if rest and comp in (UNET, TEXT_ENCODER):
            out.setdefault(comp, {})[rest] = v
        else:
            out.setdefault(None, {})[k] = v
    return out


def _pattern_value(patterns: Mapping[str, object] | None, module: str) -> object | None:
    """PEFT's rank/alpha pattern lookup: a pattern matches a module path or its dotted suffix (regex allowed)."""
    for pat, val in (patterns or {}).items():
        try:
            if re.fullmatch(rf"(?:.*\.)?(?:{pat})", module):
                return val
        except re.error:
            if module == pat or module.endswith("." + pat):
                return val
    return None


def _peft_scale(cfg: Mapping | None, module: str, rank: int) -> float:
    if not cfg:
        return 1.0
    alpha = _pattern_value(cfg.get("alpha_pattern"), module)
    if alpha is None:
        alpha = cfg.get("lora_alpha")
    if alpha is None:
        return 1.0
    alpha = float(alpha)
    if cfg.get("use_rslora"):
        return alpha / math.sqrt(rank)
    return alpha / rank


@dataclass
class _Pair:
    component: str
    module: str
    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    down_key: str | None = None
    up_key: str | None = None
    alpha: float | None = None


def _unknown_key(source, key: str, fmt: str | None) -> AdapterFormatError:
    what = (
        "a DoRA magnitude (dora_scale / lora_magnitude_vector)"
        if ("dora_scale" in key or "magnitude_vector" in key)
        else "a key that is not a LoRA down/up weight or alpha"
    )
    return AdapterFormatError(
        source,
        f"only LoRA down/up weights and alphas in a {fmt or 'LoRA'} file",
        f"{key!r}: {what}",
        "DoRA, LoCon/LoHa/LoKr and other LyCORIS variants are not supported; export a plain LoRA.",
    )


def _collect_pairs(state_dict: Mapping[str, torch.Tensor], source, fmt: str) -> dict[tuple[str, str], _Pair]:
    pairs: dict[tuple[str, str], _Pair] = {}
    adapters: set[str] = set()
    alphas: dict[tuple[str, str], float] = {}
    for key, value in state_dict.items():
        if key.startswith(("text_encoder_2.", "lora_te2_")):
            raise AdapterFormatError(
                source, "an SD1.x LoRA (UNet and one text encoder)", f"{key!r}: a second text encoder (SDXL)"
            )
        comp, rest = _strip_component(key)
        alpha_m = _ALPHA_RE.match(rest)
        if alpha_m and value.numel() == 1:
            alphas[(comp, _normalise_module(comp, alpha_m.group("mod")))] = float(value.item())
            continue
        m = _PEFT_RE.match(rest)
        if m:
            mod, ab = m.group("mod"), m.group("ab")
            if m.group("adapter"):
                adapters.add(m.group("adapter"))
        else:
            m = _DIFFUSERS_RE.match(rest)
            if m:
                mod, ab = m.group("mod"), _DOWN_UP[m.group("dir")]
            else:
                m = _PROCESSOR_RE.match(rest)
                if not m:
                    raise _unknown_key(source, key, fmt)
                mod = _processor_module(m.group("prefix"), m.group("name"), comp)
                ab = _DOWN_UP[m.group("dir")]
        mod = _normalise_module(comp, mod.replace(".processor.", "."))
        p = pairs.setdefault((comp, mod), _Pair(comp, mod))
        slot = "down" if ab == "A" else "up"
        if getattr(p, slot) is not None:
            raise AdapterFormatError(
                source,
                "one down and one up weight per LoRA module",
                f"two {slot} weights for {comp}.{mod} ({getattr(p, slot + '_key')!r} and {key!r})",
            )
        setattr(p, slot, value)
        setattr(p, slot + "_key", key)
    if len(adapters) > 1:
        raise AdapterFormatError(
            source,
            "weights of a single PEFT adapter",
            f"several adapter names in the keys: {sorted(adapters)}",
        )
    for k, a in alphas.items():
        if k in pairs:
            pairs[k].alpha = a
        else:
            raise AdapterFormatError(
                source,
                "an alpha only for modules that have LoRA weights",
                f"an alpha for {k[0]}.{k[1]}, which has no down/up weights",
            )
    return pairs


def _validate_and_fold(
    pairs: Mapping[tuple[str, str], _Pair], source, configs: Mapping[str | None, dict]
) -> tuple[dict[str, torch.Tensor], int]:
    out: dict[str, torch.Tensor] = {}
    max_rank = 0
    for (comp, mod), p in sorted(pairs.items()):
        if p.down is None or p.up is None:
            have, missing = ("down", "up") if p.up is None else ("up", "down")
            raise AdapterFormatError(
                source,
                "every LoRA down (lora_A) weight paired with its up (lora_B) weight",
                f"{getattr(p, have + '_key')!r} has no {missing} weight",
            )
        if p.down.ndim < 2 or p.up.ndim < 2 or p.down.shape[0] != p.up.shape[1]:
            dr = p.down.shape[0] if p.down.ndim else None
            ur = p.up.shape[1] if p.up.ndim >= 2 else None
            raise AdapterFormatError(
                source,
                "LoRA down/up pairs of equal rank",
                f"{p.down_key}: down rank {dr}, up rank {ur} "
                f"(down {tuple(p.down.shape)}, up {tuple(p.up.shape)})",
            )
        rank = int(p.down.shape[0])
        if p.alpha is not None:
            scale = p.alpha / rank
        else:
            scale = _peft_scale(configs.get(comp, configs.get(None)), mod, rank)
        up = p.up if scale == 1.0 else (p.up.float() * scale).to(p.up.dtype)
        out[f"{comp}.{mod}.lora_A.weight"] = p.down
        out[f"{comp}.{mod}.lora_B.weight"] = up
        max_rank = max(max_rank, rank)
    return out, max_rank


# SD1.5 UNet: 2 resnets per block. Used to remap LDM-named (input_blocks/middle_block/output_blocks) kohya keys.
_SD15_UNET_CONFIG = SimpleNamespace(layers_per_block=2)


def _kohya_to_processor_dict(state_dict: Mapping[str, torch.Tensor], source) -> dict[str, torch.Tensor]:
    """kohya → diffusers keys with diffusers' own converter, after folding ``alpha / rank`` into ``lora_up``."""
    sd: dict[str, torch.Tensor] = {}
    names: dict[str, dict[str, str]] = {}
    for key in state_dict:
        if not key.startswith(KOHYA_PREFIXES):
            raise AdapterFormatError(
                source,
                "only lora_unet_/lora_te_ keys in a kohya LoRA",
                f"{key!r} (mixed with another layout)",
            )
        name, _, suffix = key.partition(".")
        if suffix not in ("lora_down.weight", "lora_up.weight", "alpha"):
            raise _unknown_key(source, key, "kohya")
        if "motion_modules" in name:
            raise AdapterFormatError(
                source,
                "a kohya image LoRA (UNet spatial layers / text encoder)",
                f"{key!r}: a motion-module layer in kohya naming",
                "Motion LoRAs are read from the original AnimateDiff or diffusers/PEFT layouts.",
            )
        names.setdefault(name, {})[suffix] = key
    for parts in names.values():
        if "lora_down.weight" not in parts or "lora_up.weight" not in parts:
            have = parts.get("lora_down.weight") or parts.get("lora_up.weight") or parts["alpha"]
            missing = "up" if "lora_up.weight" not in parts else "down"
            raise AdapterFormatError(
                source,
                "every LoRA down weight paired with its up weight",
                f"{have!r} has no {missing} weight",
            )
        down, up = state_dict[parts["lora_down.weight"]], state_dict[parts["lora_up.weight"]]
        if down.ndim < 2 or up.ndim < 2 or down.shape[0] != up.shape[1]:
            raise AdapterFormatError(
                source,
                "LoRA down/up pairs of equal rank",
                f"{parts['lora_down.weight']}: down rank {down.shape[0] if down.ndim else None}, "
                f"up rank {up.shape[1] if up.ndim >= 2 else None}",
            )
        if "alpha" in parts:
            scale = float(state_dict[parts["alpha"]].item()) / down.shape[0]
            if scale != 1.0:
                up = (up.float() * scale).to(up.dtype)
        sd[parts["lora_down.weight"]] = down
        sd[parts["lora_up.weight"]] = up
    try:
        if any(p in k for k in sd for p in ("input_blocks", "middle_block", "output_blocks")):
            sd = ldm_lora_blocks_to_diffusers(sd, _SD15_UNET_CONFIG)
        converted, _alphas = kohya_lora_to_diffusers(sd)
    except (ValueError, KeyError) as e:
        raise AdapterFormatError(source, "a kohya LoRA diffusers can convert", f"{e}") from e
    if any(k.startswith("text_encoder_2.") for k in converted):
        raise AdapterFormatError(
            source,
            "an SD1.x LoRA (one text encoder)",
            "lora_te2_ keys: an SDXL LoRA",
            "SDXL is not supported here.",
        )
    return converted


def _kohya_to_peft(converted: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' processor-style output of the kohya converter → PEFT keys, via diffusers' own tables."""
    unet = {k[len("unet.") :]: v for k, v in converted.items() if k.startswith("unet.")}
    te = {k[len("text_encoder.") :]: v for k, v in converted.items() if k.startswith("text_encoder.")}
    out = {f"unet.{k}": v for k, v in unet_lora_to_peft(unet).items()}
    if te:
        out.update({f"text_encoder.{k}": v for k, v in text_encoder_lora_to_peft(te).items()})
    return out


def to_canonical(
    state_dict: Mapping[str, torch.Tensor],
    source: object = None,
    metadata: Mapping[str, str] | None = None,
    *,
    fmt: str | None = None,
) -> LoraWeights:
    """Read a LoRA state dict of any supported layout into :class:`LoraWeights`.

    ``source`` names the file in error messages; ``metadata`` is the safetensors header (its
    ``lora_adapter_metadata`` JSON gives PEFT's ``lora_alpha``/``r``); ``fmt`` forces a layout instead of
    :func:`detect_lora_format`. Non-tensor entries (``animatediff_config``) are dropped.

    kohya files go through diffusers' own ``_convert_non_diffusers_lora_to_diffusers`` (and
    ``_maybe_map_sgm_blocks_to_diffusers`` for LDM block names), with each module's ``alpha / rank`` folded into
    ``lora_up`` first. Folding per module matters: diffusers 0.42.1 loading a kohya file directly turns
    alphas that differ between modules into ``alpha_pattern`` keys (processor names, ``text_model.`` prefixes)
    that match no module, so PEFT ignores them (RuntimeWarning) and those modules get the most common alpha.
    """
    tensors = {k: v for k, v in state_dict.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    detected = detect_lora_format(tensors)
    fmt = fmt or detected
    if fmt is None:
        sample = ", ".join(repr(k) for k in list(tensors)[:3]) or "no tensors"
        raise AdapterFormatError(
            source,
            "a LoRA (keys ending lora_A/lora_B.weight, *_lora.down/up.weight or lora_down/lora_up.weight)",
            f"no LoRA keys ({len(tensors)} tensors, e.g. {sample})",
            "A motion module or a full checkpoint is not a LoRA; load it with the motion-module or base loaders.",
        )
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    configs: dict[str | None, dict] = {}
    if fmt == "kohya":
        tensors = _kohya_to_peft(_kohya_to_processor_dict(tensors, source))
    else:
        configs = _peft_configs_from_metadata(metadata)
    pairs = _collect_pairs(tensors, source, fmt)
    if not pairs:
        raise AdapterFormatError(source, "at least one LoRA down/up pair", "none")
    sd, rank = _validate_and_fold(pairs, source, configs)
    motion = all(comp == UNET and ".motion_modules." in f".{mod}" for comp, mod in pairs)
    return LoraWeights(
        state_dict=sd,
        kind="motion_lora" if motion else "spatial_lora",
        source_format=fmt,
        rank=rank,
        metadata={k: v for k, v in (metadata or {}).items() if isinstance(v, str)},
    )


# --------------------------------------------------------------------------------------------------------------
# writing


def _split_pair_key(key: str) -> tuple[str, str, str]:
    comp, rest = key.split(".", 1)
    mod, ab = rest.rsplit(".lora_", 1)
    return comp, mod, ab[0]  # "A" / "B"


def _processor_key(mod: str, ab: str) -> str:
    d = "down" if ab == "A" else "up"
    if mod.endswith(".to_out.0"):
        return f"{mod[: -len('.to_out.0')]}.processor.to_out_lora.{d}.weight"
    parent, _, last = mod.rpartition(".")
    if not parent:
        return f"processor.{last}_lora.{d}.weight"
    return f"{parent}.processor.{last}_lora.{d}.weight"


def to_original(lw: LoraWeights) -> dict[str, torch.Tensor]:
    """Export to the original AnimateDiff processor layout (docs/formats.md#lora-layouts).

    Motion-module pairs get original names (``temporal_transformer``, ``attention_blocks.{0,1}``); spatial UNet
    pairs keep diffusers names like the v3 domain adapter. ``up`` already carries the scale (original consumers
    ignore alpha). Keys have no ``unet.`` prefix. The original layout has no text-encoder part.
    """
    te = [k for k in lw.state_dict if k.startswith(TEXT_ENCODER + ".")]
    if te:
        raise ValueError(
            f"the original AnimateDiff LoRA layout has no text-encoder part, but this LoRA has {len(te) // 2} "
            f"text-encoder modules (e.g. {te[0]!r}); use to_kohya() or to_peft_file_dict() instead."
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in lw.state_dict.items():
        _, mod, ab = _split_pair_key(key)
        out[_processor_key(_diffusers_motion_path_to_original(mod), ab)] = value.detach().contiguous()
    return out


def to_kohya(lw: LoraWeights) -> dict[str, torch.Tensor]:
    """Export a spatial LoRA as kohya/A1111 ``lora_unet_…`` / ``lora_te_…`` keys with ``.alpha`` = rank.

    Text-encoder names get kohya's ``text_model_`` segment (``lora_te_text_model_encoder_layers_0_self_attn_q_proj``).
    Motion LoRAs have no kohya form that A1111/ComfyUI image-LoRA loaders understand: ValueError.
    """
    motion = [k for k in lw.state_dict if ".motion_modules." in k]
    if lw.kind == "motion_lora" or motion:
        raise ValueError(
            "kohya/A1111 LoRA files hold image (spatial) LoRAs; this LoRA targets motion modules "
            f"({(motion or list(lw.state_dict))[0]!r}). Use to_original() for AnimateDiff/ComfyUI or "
            "to_peft_file_dict() for diffusers."
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in lw.state_dict.items():
        comp, mod, ab = _split_pair_key(key)
        if comp == UNET:
            name = "lora_unet_" + mod.replace(".", "_")
        elif comp == TEXT_ENCODER:
            if not mod.startswith("text_model."):
                mod = "text_model." + mod
            name = "lora_te_" + mod.replace(".", "_")
        else:  # pragma: no cover - canonical keys only have these two components
            raise ValueError(f"unknown component in {key!r}")
        out[f"{name}.{'lora_down' if ab == 'A' else 'lora_up'}.weight"] = value.detach().contiguous()
        if ab == "A":
            out[f"{name}.alpha"] = torch.tensor(float(value.shape[0]), dtype=torch.float32)
    return out


def to_peft_file_dict(lw: LoraWeights) -> dict[str, torch.Tensor]:
    """The diffusers ``pytorch_lora_weights.safetensors`` layout (loadable with ``load_lora_weights``)."""
    return {k: v.detach().contiguous() for k, v in lw.state_dict.items()}
