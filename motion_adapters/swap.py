"""Hot-swap primitives: build AnimateDiff models without random init, and copy weights into them in place.

Every swap is two phases: ``plan_copy`` validates the whole incoming state dict (every key, every shape)
against the live model and returns (destination, source) pairs without touching anything; ``apply_copy``
then copies the tensors in place. A failed validation therefore leaves the model bitwise unchanged.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, ControlNetModel, MotionAdapter, SparseControlNetModel, UNetMotionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .compat import init_config_keys
from .errors import AdapterFormatError
from .formats.controlnet import FAMILY_NAMES, GUESSABLE, ControlNetWeights, family_of
from .formats.motion_module import MotionModuleWeights, is_pe_key
from .formats.sparsectrl import GUESSABLE as SPARSECTRL_GUESSABLE
from .formats.sparsectrl import SparseCtrlWeights

MOTION_CONFIG_KEYS = (
    "motion_num_attention_heads",
    "motion_max_seq_length",
    "use_motion_mid_block",
    "motion_layers_per_block",
    "motion_transformer_layers_per_block",
    "motion_transformer_layers_per_mid_block",
    "motion_norm_num_groups",
    "block_out_channels",
)


def motion_unet_config(unet_config: Mapping, motion_config: Mapping) -> dict:
    """The ``UNetMotionModel`` config diffusers' ``from_unet2d`` would derive from a UNet2D and an adapter."""
    cfg = {k: v for k, v in dict(unet_config).items() if not k.startswith("_")}
    cfg["down_block_types"] = [
        "CrossAttnDownBlockMotion" if "CrossAttn" in t else "DownBlockMotion" for t in cfg["down_block_types"]
    ]
    cfg["up_block_types"] = [
        "CrossAttnUpBlockMotion" if "CrossAttn" in t else "UpBlockMotion" for t in cfg["up_block_types"]
    ]
    cfg.update(
        motion_num_attention_heads=motion_config["motion_num_attention_heads"],
        motion_max_seq_length=motion_config["motion_max_seq_length"],
        use_motion_mid_block=motion_config["use_motion_mid_block"],
        layers_per_block=motion_config["motion_layers_per_block"],
        temporal_transformer_layers_per_mid_block=motion_config.get("motion_transformer_layers_per_mid_block", 1),
        temporal_transformer_layers_per_block=motion_config.get("motion_transformer_layers_per_block", 1),
    )
    if motion_config.get("conv_in_channels"):
        cfg["in_channels"] = motion_config["conv_in_channels"]
    if not cfg.get("num_attention_heads"):
        cfg["num_attention_heads"] = cfg["attention_head_dim"]
    keys = init_config_keys(UNetMotionModel)
    return {k: v for k, v in cfg.items() if k in keys}


def check_motion_fits_base(mm: MotionModuleWeights, unet_config: Mapping, source) -> None:
    """Refuse a motion module whose architecture cannot sit in this base UNet (e.g. SDXL on SD1.5)."""
    base_ch = list(unet_config["block_out_channels"])
    mm_ch = list(mm.config["block_out_channels"])
    base_family = "SD1.5" if len(base_ch) == 4 else "SDXL" if len(base_ch) == 3 else f"{len(base_ch)}-level"
    mm_family = "SD1.5" if len(mm_ch) == 4 else "SDXL" if len(mm_ch) == 3 else f"{len(mm_ch)}-level"
    if base_ch != mm_ch:
        raise AdapterFormatError(
            source,
            f"a motion module for the loaded {base_family} base (block channels {base_ch})",
            f"a {mm_family} motion module (block channels {mm_ch}, version {mm.version})",
        )
    lpb = unet_config["layers_per_block"]
    if mm.config["motion_layers_per_block"] != lpb:
        raise AdapterFormatError(
            source, f"{lpb} motion modules per down block (the base's layers_per_block)",
            f"{mm.config['motion_layers_per_block']}",
        )
    if mm.config.get("conv_in_channels"):
        raise AdapterFormatError(source, "a text-to-video motion module", "a PIA image-conditioned adapter (conv_in)")


def same_motion_architecture(a: Mapping, b: Mapping) -> bool:
    return all(_norm(a.get(k)) == _norm(b.get(k)) for k in MOTION_CONFIG_KEYS)


def _norm(v):
    return list(v) if isinstance(v, tuple | list) else v


def live_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's parameters and persistent buffers under their plain names.

    PEFT-wrapped layers (``…to_q.base_layer.weight``) are listed as ``…to_q.weight``; LoRA tensors are
    left out, so a base or motion swap writes under loaded LoRAs without disturbing them.
    """
    out = {}
    for key, value in module.state_dict(keep_vars=True).items():
        parts = key.split(".")
        if any(p.startswith("lora_") for p in parts):
            continue
        out[key.replace(".base_layer.", ".")] = value
    return out


def plan_copy(
    target: Mapping[str, torch.Tensor],
    incoming: Mapping[str, torch.Tensor],
    source,
    what: str,
    ignore: Callable[[str], bool] = is_pe_key,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Validate ``incoming`` against ``target`` (same keys, same shapes) and pair them up; touches nothing."""
    tgt = {k: v for k, v in target.items() if not ignore(k)}
    inc = {k: v for k, v in incoming.items() if not ignore(k)}
    missing = sorted(set(tgt) - set(inc))
    unexpected = sorted(set(inc) - set(tgt))
    problems = []
    if missing:
        problems.append(f"{len(missing)} of its {len(tgt)} tensors missing (first: {missing[0]!r})")
    if unexpected:
        problems.append(f"{len(unexpected)} tensors the model does not have (first: {unexpected[0]!r})")
    for k in sorted(set(tgt) & set(inc)):
        if tuple(tgt[k].shape) != tuple(inc[k].shape):
            problems.append(f"{k!r} of shape {tuple(inc[k].shape)} where the model has {tuple(tgt[k].shape)}")
            break
    for k, v in inc.items():
        if not (v.is_floating_point() or v.dtype in (torch.int64, torch.int32)):
            problems.append(f"{k!r} of dtype {v.dtype}")
            break
    if problems:
        raise AdapterFormatError(source, f"{what} matching the loaded model", "; ".join(problems))
    return [(tgt[k], inc[k]) for k in inc]


@torch.no_grad()
def apply_copy(plan: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Copy validated tensors into the live model (casts dtype and moves device as needed)."""
    for dst, src in plan:
        dst.copy_(src)


def materialize(
    factory: Callable[[], torch.nn.Module],
    state_dict: Mapping[str, torch.Tensor],
    source,
    what: str,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    copy: bool | Callable[[str], bool] = True,
) -> torch.nn.Module:
    """Build a module on the meta device (no random init) and assign the given tensors to it.

    Buffers are built for real (they are cheap and include computed tables such as ``pos_embed.pe``).
    Every parameter must be provided; nothing is left uninitialised. ``copy`` (a flag, or a test on the key):
    give the module its own storage even when no cast is needed — tensors read with safetensors are views of
    the file's memory map, and a model holding them would change (or crash with SIGBUS) when the file is
    overwritten or truncated on disk. Pass ``False`` only for tensors a live model already owns.
    """
    with init_empty_weights(include_buffers=False):
        module = factory()
    expected = module.state_dict()
    plan_copy(expected, state_dict, source, what)  # validation only
    wants_copy = copy if callable(copy) else (lambda _key: copy)
    tensors = {}
    for k, v in state_dict.items():
        if k in expected:
            t = _cast(v, dtype, device)
            tensors[k] = t.clone() if t is v and wants_copy(k) else t
    module.load_state_dict(tensors, strict=False, assign=True)
    for name, buf in list(module.named_buffers()):
        if name not in tensors:
            _set_buffer(module, name, _cast(buf, dtype, device))
    leftover = [n for n, p in module.named_parameters() if p.is_meta]
    if leftover:
        raise AdapterFormatError(source, f"{what} covering every parameter", f"no value for {leftover[0]!r}")
    return module.eval().requires_grad_(False)


def _cast(t: torch.Tensor, dtype, device) -> torch.Tensor:
    if dtype is not None and t.is_floating_point() and t.dtype != dtype:
        t = t.to(dtype)
    if device is not None and t.device != torch.device(device):
        t = t.to(device)
    return t


def _set_buffer(module: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    owner_name, _, attr = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    owner._buffers[attr] = value


def build_motion_unet(
    unet_config: Mapping,
    spatial: Mapping[str, torch.Tensor],
    motion: MotionModuleWeights,
    source,
    dtype=None,
    device=None,
    copy_spatial: bool = True,
) -> UNetMotionModel:
    """A ``UNetMotionModel`` from UNet2D weights + a motion module, with no random initialisation.

    ``copy_spatial=False`` reuses the spatial tensors as they are (for re-assembling a live model)."""
    cfg = motion_unet_config(unet_config, motion.config)
    return materialize(
        lambda: UNetMotionModel.from_config(cfg), {**spatial, **motion.state_dict}, source,
        "UNet + motion-module weights", dtype, device,
        copy=True if copy_spatial else (lambda key: "motion_modules." in key),
    )


def identity_motion_module(unet_config: Mapping) -> MotionModuleWeights:
    """A motion module that does nothing: every weight zero, so each temporal transformer returns its input
    exactly (``proj_out`` = 0) and frames are denoised independently, as per-frame SD. No random init: the
    zeros are the only memory it costs. Heads/groups are picked to divide the base's channels."""
    import math

    ch = list(unet_config["block_out_channels"])
    g = math.gcd(*ch)
    config = {"block_out_channels": ch, "motion_layers_per_block": unet_config["layers_per_block"],
              "motion_transformer_layers_per_block": 1, "motion_mid_block_layers_per_block": 1,
              "motion_transformer_layers_per_mid_block": 1, "motion_num_attention_heads": 8 if g % 8 == 0 else 1,
              "motion_norm_num_groups": 32 if g % 32 == 0 else int(unet_config.get("norm_num_groups", 1)),
              "motion_max_seq_length": 32, "use_motion_mid_block": False, "conv_in_channels": None}
    with init_empty_weights():
        adapter = MotionAdapter(**config)
    sd = {k: torch.zeros(v.shape, dtype=torch.float32) for k, v in adapter.state_dict().items() if not is_pe_key(k)}
    return MotionModuleWeights(config=config, state_dict=sd, source_format="none", version="none (identity)")


def adapter_view(unet: UNetMotionModel, motion_config: Mapping) -> MotionAdapter:
    """A ``MotionAdapter`` whose modules *are* the UNet's motion modules (shared, not copied).

    The pipeline keeps a ``motion_adapter`` component (FreeNoise reads its config) without holding the
    motion weights twice.
    """
    cfg = {k: v for k, v in dict(motion_config).items() if not k.startswith("_")}
    with init_empty_weights(include_buffers=False):
        adapter = MotionAdapter(**cfg)
    for mine, theirs in zip(adapter.down_blocks, unet.down_blocks, strict=True):
        mine.motion_modules = theirs.motion_modules
    for mine, theirs in zip(adapter.up_blocks, unet.up_blocks, strict=True):
        mine.motion_modules = theirs.motion_modules
    if getattr(adapter, "mid_block", None) is not None:
        adapter.mid_block.motion_modules = unet.mid_block.motion_modules
    return adapter.eval().requires_grad_(False)


def build_vae(config: Mapping, state_dict, source, dtype=None, device=None) -> AutoencoderKL:
    cfg = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    return materialize(lambda: AutoencoderKL.from_config(cfg), state_dict, source, "VAE weights", dtype, device)


def build_text_encoder(config: Mapping, state_dict, source, dtype=None, device=None) -> CLIPTextModel:
    cfg = CLIPTextConfig.from_dict({k: v for k, v in dict(config).items() if not k.startswith("_")})
    sd = {k: v for k, v in state_dict.items() if not k.endswith("position_ids")}
    return materialize(lambda: CLIPTextModel(cfg), sd, source, "text-encoder weights", dtype, device)


def check_controlnet_fits_base(cw: ControlNetWeights, unet_config: Mapping, source) -> None:
    """Refuse a ControlNet whose residuals cannot be added to this base UNet (another family, widths, depth).

    A single file does not store attention heads or GroupNorm groups (``cw.guessed``); a ControlNet is a
    copy of its base's encoder, so those are then taken from the base's ``unet_config``."""
    _check_encoder_fits_base("ControlNet", cw.config, cw.family, cw.guessed, GUESSABLE, unet_config, source)


def _check_encoder_fits_base(noun: str, mine: dict, family: str, guessed: Iterable[str], guessable: Iterable[str],
                             unet_config: Mapping, source) -> None:
    """Refuse a copy of the base's encoder (a ``noun``: ControlNet, SparseCtrl encoder) of another family,
    widths or depth; its ``guessed`` config keys that are ``guessable`` are set from the base."""
    base = dict(unet_config)
    base_fam = family_of(base)
    if base_fam != family:
        raise AdapterFormatError(
            source, f"a {noun} for the loaded {FAMILY_NAMES[base_fam]} base (cross_attention_dim "
            f"{base.get('cross_attention_dim')})", f"an {FAMILY_NAMES.get(family, family)} {noun} "
            f"(cross_attention_dim {mine.get('cross_attention_dim')})")
    for key in ("cross_attention_dim", "block_out_channels", "layers_per_block"):
        want, have = _norm(base.get(key)), _norm(mine.get(key))
        if want != have:
            raise AdapterFormatError(source, f"a {noun} with {key} {want} (the base UNet's)", f"{key} {have}")
    for key in guessed:
        if key in guessable and key in base:
            mine[key] = _norm(base[key])


def build_controlnet(cw: ControlNetWeights, dtype: torch.dtype | None = None,
                     device: torch.device | str | None = None) -> ControlNetModel:
    """A live diffusers ``ControlNetModel`` holding ``cw``'s tensors (built on the meta device: no random init)."""
    return materialize(_factory("controlnet", cw.config), cw.state_dict, cw.source, "ControlNet weights",
                       dtype, device)


def check_sparsectrl_fits_base(sw: SparseCtrlWeights, unet_config: Mapping, source) -> None:
    """Refuse a SparseCtrl encoder whose residuals cannot be added to this base UNet (another family, widths,
    depth). What a single file does not store (``sw.guessed``: heads, GroupNorm groups) is taken from the base,
    whose encoder the SparseCtrl one copies."""
    _check_encoder_fits_base("SparseCtrl encoder", sw.config, sw.family, sw.guessed, SPARSECTRL_GUESSABLE,
                             unet_config, source)


def build_sparsectrl(sw: SparseCtrlWeights, dtype: torch.dtype | None = None,
                     device: torch.device | str | None = None) -> SparseControlNetModel:
    """A live diffusers ``SparseControlNetModel`` holding ``sw``'s tensors (meta build: no random init; the
    motion modules' ``pe`` tables are computed from ``motion_max_seq_length``)."""
    return materialize(_factory("sparsectrl", sw.config), sw.state_dict, sw.source, "SparseCtrl weights",
                       dtype, device)


def motion_tensors(unet: UNetMotionModel) -> dict[str, torch.Tensor]:
    return {k: v for k, v in live_tensors(unet).items() if "motion_modules." in k}


def spatial_tensors(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in live_tensors(unet).items() if "motion_modules." not in k}


def _factory(component: str, config: Mapping) -> Callable[[], torch.nn.Module]:
    cfg = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    if component == "unet":
        from diffusers import UNet2DConditionModel

        return lambda: UNet2DConditionModel.from_config(cfg)
    if component == "vae":
        return lambda: AutoencoderKL.from_config(cfg)
    if component == "text_encoder":
        return lambda: CLIPTextModel(CLIPTextConfig.from_dict(cfg))
    if component == "controlnet":
        keys = init_config_keys(ControlNetModel)
        return lambda: ControlNetModel.from_config({k: v for k, v in cfg.items() if k in keys})
    if component == "sparsectrl":
        keys = init_config_keys(SparseControlNetModel)
        return lambda: SparseControlNetModel.from_config({k: v for k, v in cfg.items() if k in keys})
    raise ValueError(component)


_LABELS = {"sparsectrl": "SparseCtrl"}


def validate_component(component: str, config: Mapping, state_dict: Mapping[str, torch.Tensor], source,
                       hint: str | None = None) -> None:
    """Check a converted component against the architecture its config describes (meta build, no memory)."""
    expected = _meta_state_dict(component, json.dumps(dict(config), sort_keys=True, default=list))
    try:
        plan_copy(expected, {k: v for k, v in state_dict.items() if not k.endswith("position_ids")},
                  source, f"{_LABELS.get(component, component.replace('_', ' '))} weights")
    except AdapterFormatError as e:
        if hint:
            raise AdapterFormatError(source, e.expected, e.found, hint) from None
        raise


@functools.lru_cache(maxsize=16)
def _meta_state_dict(component: str, config_json: str) -> dict[str, torch.Tensor]:
    """Shapes-only (meta) state dict of a component, cached per config: building it costs ~0.1 s at SD1.5 size."""
    with init_empty_weights(include_buffers=False):
        module = _factory(component, json.loads(config_json))()
    return module.state_dict()

