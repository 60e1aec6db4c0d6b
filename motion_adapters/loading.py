"""Sniffing and loading: tell what a file is, then read it into our in-memory types.

``load_adapter`` returns a :class:`MotionModuleWeights`, :class:`LoraWeights`, :class:`ControlNetWeights`,
:class:`SparseCtrlWeights`, :class:`IPAdapterWeights` or :class:`BaseWeights`;
``inspect_path`` returns the report shown by ``motion-adapters inspect``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch

from .base import BaseWeights, is_diffusers_folder, read_base
from .errors import AdapterFormatError
from .formats import ours
from .formats.controlnet import (
    FAMILY_NAMES,
    ControlNetWeights,
    clean_config,
    control_kind_from_name,
    family_of,
    infer_config,
    is_diffusers_controlnet,
)
from .formats.controlnet import ldm_to_diffusers as controlnet_ldm_to_diffusers
from .formats.ip_adapter import IPAdapterWeights, ip_adapter_from_tensors
from .formats.ldm import LDM_TEXT_PREFIX, LDM_UNET_PREFIX, LDM_VAE_PREFIX, ldm_family
from .formats.lora import LoraWeights, to_canonical
from .formats.motion_module import (
    MotionModuleWeights,
    detect_version,
    infer_motion_config,
    motion_keys,
    pe_length,
    to_diffusers_layout,
)
from .formats.sparsectrl import SparseCtrlWeights, control_kind_of, is_sparsectrl
from .formats.sparsectrl import infer_config as infer_sparsectrl_config
from .formats.sparsectrl import to_diffusers as sparsectrl_to_diffusers
from .io import read_safetensors_metadata, read_state_dict
from .kinds import (
    KIND_CONTROLNET,
    KIND_IP_ADAPTER,
    KIND_MOTION,
    KIND_MOTION_LORA,
    KIND_SD,
    KIND_SPARSECTRL,
    KIND_SPATIAL_LORA,
    T2I_ADAPTER,
    describe_keys,
    sniff_keys,
)
from .swap import validate_component

W = TypeVar("W")

FOLDER_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                  "diffusion_pytorch_model.bin")
# diffusers folders of other control models, refused by name
_OTHER_CONTROL_CLASSES = {"T2IAdapter": T2I_ADAPTER, "MultiAdapter": T2I_ADAPTER}
# what a file of each kind is called where another kind was expected
_FOUND = {KIND_SPARSECTRL: "a SparseCtrl encoder", KIND_IP_ADAPTER: "an IP-Adapter"}


def _motion_from_tensors(tensors, metadata, source, config: Mapping | None = None) -> MotionModuleWeights:
    sd, layout, length = to_diffusers_layout(tensors, source)
    meta = ours.parse_metadata(metadata) if ours.is_ours(metadata) else {}
    if config is None and isinstance(meta.get("config"), dict):
        config = meta["config"]
    cfg = dict(config) if config else infer_motion_config(sd, max_seq_length=length, source=source)
    if length is not None and config is None:
        cfg["motion_max_seq_length"] = length
    expected = motion_keys(cfg)
    missing = sorted(expected - set(sd))
    unexpected = sorted(set(sd) - expected)
    if missing or unexpected:
        found = []
        if missing:
            found.append(f"{len(missing)} missing keys (first: {missing[0]!r})")
        if unexpected:
            found.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]!r})")
        raise AdapterFormatError(
            source, "a complete motion module matching its own architecture", " and ".join(found),
            "The file may be truncated or from an unsupported variant.",
        )
    if meta:
        version = f"motion-adapters (max {cfg['motion_max_seq_length']} frames)"
    else:
        version = detect_version(tensors, cfg)
    return MotionModuleWeights(
        config=cfg,
        state_dict=sd,
        source_format="ours" if meta else layout,
        version=version,
        metadata=dict(metadata),
    )


def _read_motion_folder(path: Path) -> MotionModuleWeights:
    cfg = json.loads((path / "config.json").read_text())
    for name in FOLDER_WEIGHTS:
        if (path / name).exists():
            tensors, md = read_state_dict(path / name)
            keys = {k for k in cfg if not k.startswith("_")}
            mm = _motion_from_tensors(tensors, md, path / name, {k: cfg[k] for k in keys})
            mm.source_format = "diffusers-folder"
            mm.version = detect_version(tensors, mm.config)
            return mm
    raise AdapterFormatError(path, "diffusion_pytorch_model.safetensors in the MotionAdapter folder", "none")


def controlnet_from_tensors(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], source,
                            config: Mapping | None = None) -> ControlNetWeights:
    """A ControlNet from a file's tensors: our format (config in the header), lllyasviel keys (converted) or
    diffusers keys; the config from ``config``, the header, or else the tensor shapes."""
    meta = ours.parse_metadata(metadata) if ours.is_ours(metadata) else {}
    if is_diffusers_controlnet(tensors):
        sd, fmt = dict(tensors), "ours" if meta else "diffusers-single-file"
    else:
        sd, fmt = controlnet_ldm_to_diffusers(tensors, source), "ldm-single-file"
    config = config or (meta.get("config") if isinstance(meta.get("config"), dict) else None)
    cfg, guessed = (clean_config(config), ()) if config else infer_config(sd, source)
    kind = meta.get("control_kind") or control_kind_from_name(source)
    return _controlnet(cfg, sd, fmt, kind, metadata, source, guessed)


def _controlnet(cfg: dict, sd: dict, fmt: str, kind: str | None, metadata: Mapping, source,
                guessed: tuple[str, ...] = ()) -> ControlNetWeights:
    family = family_of(cfg)
    if family == "sd2":
        raise AdapterFormatError(source, "an SD1.5 ControlNet", f"an SD2 ControlNet (cross_attention_dim "
                                 f"{cfg.get('cross_attention_dim')})", "Only SD1.5-family ControlNets attach here.")
    hint = "Its config was read from tensor shapes; the file may be truncated or a variant." if guessed else None
    validate_component("controlnet", cfg, sd, source, hint)
    return ControlNetWeights(config=cfg, state_dict=sd, source_format=fmt, control_kind=kind, family=family,
                             metadata=dict(metadata), source=str(source), guessed=guessed)


def _read_model_folder(path: Path, model: str, accepts: Callable[[Mapping[str, torch.Tensor]], bool],
                       build: Callable[[dict, dict, Mapping[str, str]], W]) -> W:
    """A diffusers ``model`` folder (``ControlNetModel``, ``SparseControlNetModel``): its config and first weights
    file, checked by ``accepts`` and turned into weights by ``build(config, tensors, metadata)``."""
    cfg = clean_config(json.loads((path / "config.json").read_text()))
    for name in FOLDER_WEIGHTS:
        if (path / name).exists():
            tensors, md = read_state_dict(path / name)
            if not accepts(tensors):
                raise AdapterFormatError(path / name, f"diffusers {model} weights", describe_keys(tensors))
            return build(cfg, tensors, md)
    raise AdapterFormatError(path, f"diffusion_pytorch_model.safetensors in the {model} folder", "none")


def _read_controlnet_folder(path: Path) -> ControlNetWeights:
    return _read_model_folder(path, "ControlNetModel", is_diffusers_controlnet, lambda cfg, tensors, md: _controlnet(
        cfg, tensors, "diffusers-folder", control_kind_from_name(path), md, path))


def sparsectrl_from_tensors(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], source,
                            config: Mapping | None = None) -> SparseCtrlWeights:
    """A SparseCtrl encoder from a file's tensors: AnimateDiff's original naming (motion modules renamed,
    ``pos_encoder.pe`` dropped, its length kept as ``motion_max_seq_length``), diffusers keys or ours; the
    config from ``config``, our header, or else the tensor shapes."""
    meta = ours.parse_metadata(metadata) if ours.is_ours(metadata) else {}
    sd, layout, length = sparsectrl_to_diffusers(tensors)
    fmt = "ours" if meta else "original" if layout == "original" else "diffusers-single-file"
    config = config or (meta.get("config") if isinstance(meta.get("config"), dict) else None)
    if config:
        cfg, guessed = clean_config(config), ()
    else:
        cfg, guessed = infer_sparsectrl_config(sd, length, source)
    return _sparsectrl(cfg, sd, fmt, metadata, source, guessed)


def _sparsectrl(cfg: dict, sd: dict, fmt: str, metadata: Mapping, source,
                guessed: tuple[str, ...] = ()) -> SparseCtrlWeights:
    family = family_of(cfg)
    if family != "sd15":
        raise AdapterFormatError(source, "an SD1.5 SparseCtrl encoder (cross_attention_dim 768)",
                                 f"an {FAMILY_NAMES[family]} one (cross_attention_dim {cfg.get('cross_attention_dim')})",
                                 "Only SD1.5-family SparseCtrl encoders attach here.")
    kind = control_kind_of(sd)
    if kind is None:
        raise AdapterFormatError(source, "a SparseCtrl encoder with a condition embedding",
                                 "no controlnet_cond_embedding weights", "The file may be truncated.")
    hint = "Its config was read from tensor shapes; the file may be truncated or a variant." if guessed else None
    validate_component("sparsectrl", cfg, sd, source, hint)
    return SparseCtrlWeights(config=cfg, state_dict=sd, source_format=fmt, control_kind=kind, family=family,
                             metadata=dict(metadata), source=str(source), guessed=guessed)


def _read_sparsectrl_folder(path: Path) -> SparseCtrlWeights:
    return _read_model_folder(path, "SparseControlNetModel", is_sparsectrl, lambda cfg, tensors, md: _sparsectrl(
        cfg, sparsectrl_to_diffusers(tensors)[0], "diffusers-folder", md, path))


def ip_adapter_from_file(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], source) -> IPAdapterWeights:
    """An IP-Adapter from h94's keys (``.bin`` flattened by the reader, or ``.safetensors``) or ours."""
    meta = ours.parse_metadata(metadata) if ours.is_ours(metadata) else {}
    config = meta.get("config") if isinstance(meta.get("config"), dict) else None
    return ip_adapter_from_tensors(tensors, metadata, source, config)


def folder_kind(path: Path) -> str:
    """What a folder holds: KIND_SD (diffusers SD folder), KIND_MOTION (MotionAdapter), KIND_CONTROLNET
    (ControlNetModel), KIND_SPARSECTRL (SparseControlNetModel), "lora-folder", "unsupported: …" (another
    control model) or "unknown"."""
    if is_diffusers_folder(path):
        return KIND_SD
    cfg = path / "config.json"
    cls = json.loads(cfg.read_text()).get("_class_name") if cfg.exists() else None
    if cls == "MotionAdapter":
        return KIND_MOTION
    if cls == "ControlNetModel":
        return KIND_CONTROLNET
    if cls == "SparseControlNetModel":
        return KIND_SPARSECTRL
    if cls in _OTHER_CONTROL_CLASSES:
        return _OTHER_CONTROL_CLASSES[cls]
    if (path / "pytorch_lora_weights.safetensors").exists():
        return "lora-folder"
    return "unknown"


def load_adapter(src: str | Path, expect: str | None = None, config: Mapping | None = None,
                 base_configs: dict[str, dict] | None = None):
    """Read any supported file or folder. ``expect`` (a KIND_* name or 'lora') refuses other kinds early.

    ``config`` overrides the inferred ``MotionAdapter`` config of a motion module (or the ``ControlNetModel`` /
    ``SparseControlNetModel`` config of a single-file ControlNet or SparseCtrl encoder); ``base_configs`` gives the
    architecture of a single-file SD checkpoint (default: standard SD1.5).
    """
    path = Path(src)
    if path.is_dir():
        kind = folder_kind(path)
        if kind == KIND_SD:
            obj = read_base(path)
        elif kind == KIND_MOTION:
            obj = _read_motion_folder(path)
        elif kind == KIND_CONTROLNET:
            obj = _read_controlnet_folder(path)
        elif kind == KIND_SPARSECTRL:
            obj = _read_sparsectrl_folder(path)
        elif kind == "lora-folder":
            return load_adapter(path / "pytorch_lora_weights.safetensors", expect)
        elif kind.startswith("unsupported"):
            raise AdapterFormatError(path, _expected_text(expect), f"a folder of {kind.removeprefix('unsupported: ')}")
        else:
            raise AdapterFormatError(path, "a diffusers SD folder, MotionAdapter, ControlNetModel, "
                                     "SparseControlNetModel or LoRA folder",
                                     "a folder with none of model_index.json, config.json or pytorch_lora_weights")
        _check_expect(obj, expect, path)
        return obj
    tensors, metadata = read_state_dict(path)
    kind = (ours.parse_metadata(metadata).get("kind") if ours.is_ours(metadata) else None) or sniff_keys(tensors)
    if kind.startswith("unsupported") or kind in ("unknown", "empty"):
        raise AdapterFormatError(path, _expected_text(expect), describe_keys(tensors))
    if expect and not _kind_matches(kind, expect):
        raise AdapterFormatError(path, _expected_text(expect), _found_text(kind, expect))
    if kind == KIND_MOTION:
        return _motion_from_tensors(tensors, metadata, path, config)
    if kind == KIND_CONTROLNET:
        return controlnet_from_tensors(tensors, metadata, path, config)
    if kind == KIND_SPARSECTRL:
        return sparsectrl_from_tensors(tensors, metadata, path, config)
    if kind == KIND_IP_ADAPTER:
        return ip_adapter_from_file(tensors, metadata, path)
    if kind in (KIND_MOTION_LORA, KIND_SPATIAL_LORA):
        lw = to_canonical(tensors, source=path, metadata=metadata)
        return lw
    return read_base(path, configs=base_configs)


def _kind_matches(kind: str, expect: str) -> bool:
    return kind == expect or (expect == "lora" and kind in (KIND_MOTION_LORA, KIND_SPATIAL_LORA))


def _expected_text(expect: str | None) -> str:
    return {
        None: "a motion module, LoRA, ControlNet, SparseCtrl encoder, IP-Adapter or SD checkpoint",
        KIND_MOTION: "an AnimateDiff motion module",
        KIND_CONTROLNET: "an SD1.5 ControlNet",
        KIND_SPARSECTRL: "an SD1.5 SparseCtrl encoder",
        KIND_IP_ADAPTER: "an SD1.5 IP-Adapter",
        KIND_SD: "an SD1.5 checkpoint",
        "lora": "a motion LoRA or spatial LoRA",
    }.get(expect, f"a {expect}")


def _found_text(kind: str, expect: str | None) -> str:
    """What was found, for a refusal: a SparseCtrl encoder passed as a motion module is named as not one."""
    text = _FOUND.get(kind, f"a {kind.replace('_', ' ')}")
    if kind == KIND_SPARSECTRL and expect == KIND_MOTION:
        return f"{text}, not a motion module (a ControlNet with motion modules, for keyframe conditioning)"
    return text


def _check_expect(obj, expect: str | None, path) -> None:
    kinds = {MotionModuleWeights: KIND_MOTION, BaseWeights: KIND_SD, ControlNetWeights: KIND_CONTROLNET,
             SparseCtrlWeights: KIND_SPARSECTRL, IPAdapterWeights: KIND_IP_ADAPTER}
    kind = kinds.get(type(obj), getattr(obj, "kind", None))
    if expect and not _kind_matches(kind, expect):
        raise AdapterFormatError(path, _expected_text(expect), _found_text(kind, expect))


def _dtype_summary(tensors: Mapping[str, torch.Tensor]) -> str:
    counts = Counter(str(t.dtype).replace("torch.", "") for t in tensors.values())
    return ", ".join(f"{d}" if len(counts) == 1 else f"{d} ({n})" for d, n in counts.most_common())


def inspect_path(src: str | Path) -> dict:
    """What a file or folder is: kind, layout, version, channels, mid block, pe length, params, dtype, rank, metadata."""
    path = Path(src)
    if path.is_file():
        raw, raw_md = read_state_dict(path)
        if sniff_keys(raw) == KIND_SD and not ours.is_ours(raw_md):
            return _inspect_ldm(path, raw, raw_md)
    obj = load_adapter(path)
    report: dict = {"path": str(path)}
    if path.is_file():
        report["file_size_bytes"] = path.stat().st_size
    if isinstance(obj, MotionModuleWeights):
        c = obj.config
        tensors = obj.state_dict
        raw_pe = None
        if path.is_file():
            raw, _ = read_state_dict(path)
            raw_pe = pe_length(raw)
        report.update(
            kind=KIND_MOTION,
            format=obj.source_format,
            version=obj.version,
            base_family=obj.family,
            channels=list(c["block_out_channels"]),
            mid_block=bool(c["use_motion_mid_block"]),
            pe_length=raw_pe if raw_pe is not None else c["motion_max_seq_length"],
            max_frames=c["motion_max_seq_length"],
            num_modules=sum(1 for k in tensors if k.endswith(".proj_in.weight")),
            num_params=obj.num_params,
            dtype=_dtype_summary(tensors),
            config=c,
        )
    elif isinstance(obj, ControlNetWeights):
        report.update(_controlnet_report(obj))
    elif isinstance(obj, SparseCtrlWeights):
        report.update(_sparsectrl_report(obj))
    elif isinstance(obj, IPAdapterWeights):
        report.update(_ip_adapter_report(obj))
    elif isinstance(obj, LoraWeights):
        report.update(
            kind=obj.kind,
            format=obj.source_format,
            base_family="sd15",
            lora_rank=obj.rank,
            num_modules=sum(1 for k in obj.state_dict if k.endswith("lora_A.weight")),
            components=sorted({k.split(".", 1)[0] for k in obj.state_dict}),
            num_params=obj.num_params,
            dtype=_dtype_summary(obj.state_dict),
        )
    else:
        report.update(
            kind=KIND_SD,
            format=obj.source_format,
            base_family=obj.family,
            components={c: sum(t.numel() for t in sd.values()) for c in ("unet", "vae", "text_encoder")
                        if (sd := getattr(obj, c)) is not None},
            num_params=sum(t.numel() for c in ("unet", "vae", "text_encoder")
                           if (sd := getattr(obj, c)) is not None for t in sd.values()),
            dtype=_dtype_summary(obj.unet),
        )
    md = getattr(obj, "metadata", None)
    if md is None and path.is_file() and path.suffix in (".safetensors", ".sft"):

        md = read_safetensors_metadata(path)
    if md:
        report["metadata"] = {**{k: v for k, v in md.items() if not k.startswith(ours.PREFIX)},
                              **({"motion_adapters": ours.parse_metadata(md)} if ours.is_ours(md) else {})}
    return report


def _controlnet_report(cw: ControlNetWeights) -> dict:
    c = cw.config
    return dict(
        kind=KIND_CONTROLNET,
        control_kind=cw.control_kind,
        format=cw.source_format,
        base_family=cw.family,
        channels=list(c["block_out_channels"]),
        conditioning_channels=cw.conditioning_channels,
        cross_attention_dim=c.get("cross_attention_dim"),
        num_params=cw.num_params,
        dtype=_dtype_summary(cw.state_dict),
        config=c,
        **({"guessed": list(cw.guessed)} if cw.guessed else {}),
    )


def _sparsectrl_report(sw: SparseCtrlWeights) -> dict:
    c = sw.config
    return dict(
        kind=KIND_SPARSECTRL,
        control_kind=sw.control_kind,
        format=sw.source_format,
        base_family=sw.family,
        channels=list(c["block_out_channels"]),
        conditioning_channels=sw.conditioning_channels,
        conditioning_mask=bool(c.get("concat_conditioning_mask", True)),
        cross_attention_dim=c.get("cross_attention_dim"),
        max_frames=c.get("motion_max_seq_length"),
        num_modules=sum(1 for k in sw.state_dict if "motion_modules." in k and k.endswith(".proj_in.weight")),
        num_params=sw.num_params,
        dtype=_dtype_summary(sw.state_dict),
        config=c,
        **({"guessed": list(sw.guessed)} if sw.guessed else {}),
    )


def _ip_adapter_report(ipw: IPAdapterWeights) -> dict:
    tensors = {**ipw.image_proj, **ipw.ip_adapter}
    return dict(
        kind=KIND_IP_ADAPTER,
        variant=ipw.variant,
        format=ipw.source_format,
        base_family=ipw.family,
        cross_attention_dim=ipw.cross_attention_dim,
        image_embed_dim=ipw.image_embed_dim,
        image_input="hidden states (hidden_size)" if ipw.uses_hidden_states else "image embeds (projection_dim)",
        num_tokens=ipw.num_tokens,
        num_layers=ipw.num_layers,
        num_params=ipw.num_params,
        dtype=_dtype_summary(tensors),
    )


def _inspect_ldm(path: Path, raw: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> dict:
    prefixes = {"unet": LDM_UNET_PREFIX, "vae": LDM_VAE_PREFIX, "text_encoder": LDM_TEXT_PREFIX}
    components = {c: sum(t.numel() for k, t in raw.items() if k.startswith(p)) for c, p in prefixes.items()}
    components = {c: n for c, n in components.items() if n}
    report = dict(
        path=str(path),
        file_size_bytes=path.stat().st_size,
        kind=KIND_SD,
        format="ldm-single-file",
        base_family=ldm_family(raw),
        components=components,
        num_params=sum(components.values()),
        dtype=_dtype_summary({k: t for k, t in raw.items() if k.startswith(LDM_UNET_PREFIX)}),
        ema=any(k.startswith("model_ema.") for k in raw),
    )
    if metadata:
        report["metadata"] = dict(metadata)
    return report
