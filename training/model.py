"""Assemble the models of a training run (frozen base + trainable groups) and export what was trained."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch
from diffusers import MotionAdapter, StableDiffusionPipeline, UNet2DConditionModel
from peft import LoraConfig as PeftLoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import save_file

from motion_adapters.base import configs_from_folder, load_tokenizer, read_base, tokenizer_dir_of
from motion_adapters.errors import AdapterFormatError
from motion_adapters.files import atomic_dir, atomic_file, only_names
from motion_adapters.formats.ldm import save_ldm_checkpoint
from motion_adapters.formats.lora import LoraWeights
from motion_adapters.formats.motion_module import MotionModuleWeights, is_pe_key
from motion_adapters.formats.ours import save_lora, save_motion_module
from motion_adapters.hub import resolve_source
from motion_adapters.loading import KIND_MOTION, load_adapter
from motion_adapters.schedulers import make_scheduler
from motion_adapters.swap import (
    build_motion_unet,
    build_text_encoder,
    build_vae,
    check_motion_fits_base,
    materialize,
    spatial_tensors,
)
from motion_adapters.training.config import ConfigError, TrainConfig
from motion_adapters.training.params import lora_targets, split_parameters
from motion_adapters.training.t2i import build_t2i_models
from motion_adapters.training.train_models import (
    SPATIAL,
    TEMPORAL,
    TrainModels,
    resolve_base,
    trained_groups,
    uses_lora,
)

log = logging.getLogger(__name__)
#: what an exported diffusers SD folder (``base/``) holds: such a folder is replaced by the next export
BASE_FOLDER_NAMES = frozenset({"model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler",
                               "feature_extractor", "safety_checker", "training.json"})


def new_motion_module(unet_config: dict, cfg: TrainConfig, seed: int) -> MotionModuleWeights:
    """A fresh motion module for ``unet_config``: diffusers' normal init, then every ``proj_out`` zeroed.

    The zeroed output projection makes each module the identity at step 0 (AnimateDiff's
    ``zero_initialize=True``; diffusers' ``MotionAdapter`` initialises ``proj_out`` like any linear layer).
    """
    m = cfg.model
    config = {
        "block_out_channels": list(unet_config["block_out_channels"]),
        "motion_layers_per_block": unet_config["layers_per_block"],
        "motion_transformer_layers_per_block": 1,
        "motion_mid_block_layers_per_block": 1,
        "motion_transformer_layers_per_mid_block": 1,
        "motion_num_attention_heads": m.motion_num_attention_heads,
        "motion_norm_num_groups": m.motion_norm_num_groups,
        "motion_max_seq_length": m.motion_max_seq_length,
        "use_motion_mid_block": m.use_motion_mid_block,
        "conv_in_channels": None,
    }
    torch.manual_seed(seed)
    adapter = MotionAdapter(**config)
    sd = {}
    for k, v in adapter.state_dict().items():
        if is_pe_key(k):
            continue
        if ".proj_out." in k and ".transformer_blocks." not in k:
            v = torch.zeros_like(v)
        sd[k] = v
    return MotionModuleWeights(config=config, state_dict=sd, source_format="new", version="new")


def build_models(cfg: TrainConfig, device: str | torch.device = "cpu",
                 frozen_dtype: torch.dtype | None = None) -> TrainModels:
    """Frozen base + motion module on ``device``, with the task's parameters trainable (always fp32).

    ``frozen_dtype`` (mixed precision): the frozen weights (VAE, text encoder, UNet parameters that do not
    train) are stored in that dtype; the UNet is built in fp32 on the CPU, cast, then moved, so the device
    never holds an fp32 copy of the frozen weights. The tensors read from the files are released once the
    modules hold them (the files themselves are only ever read).
    """
    if cfg.task == "t2i":
        return build_t2i_models(cfg, device)
    base_src, base_config = resolve_base(cfg)
    base_cfgs = configs_from_folder(base_config) if base_config else None
    base = read_base(base_src, configs=base_cfgs, tokenizer_dir=tokenizer_dir_of(base_config))
    if base.vae is None or base.text_encoder is None:
        raise AdapterFormatError(cfg.model.base, "a complete checkpoint (UNet, VAE, text encoder) for training",
                                 f"no {'VAE' if base.vae is None else 'text encoder'}")
    if cfg.model.motion_module:
        motion = load_adapter(resolve_source(cfg.model.motion_module), expect=KIND_MOTION)
        check_motion_fits_base(motion, base.configs["unet"], cfg.model.motion_module)
        if cfg.data.num_frames > motion.config["motion_max_seq_length"]:
            raise ConfigError(f"data.num_frames: expected at most {motion.config['motion_max_seq_length']} "
                              f"(the motion module's frame cap), found {cfg.data.num_frames}")
    else:
        motion = new_motion_module(base.configs["unet"], cfg, cfg.run.seed)
    vae_dtype = frozen_dtype or torch.float32
    unet = build_motion_unet(base.configs["unet"], base.unet, motion, cfg.model.base, torch.float32,
                             "cpu" if frozen_dtype else device)
    vae = build_vae(base.configs["vae"], base.vae, cfg.model.base, vae_dtype, device)
    te = build_text_encoder(base.configs["text_encoder"], base.text_encoder, cfg.model.base, vae_dtype, device)
    tokenizer = load_tokenizer(base)
    base = dataclasses.replace(base, unet=_placeholders(base.unet), vae=_placeholders(base.vae),
                               text_encoder=_placeholders(base.text_encoder))
    motion = dataclasses.replace(motion, state_dict=_placeholders(motion.state_dict))
    tm = TrainModels(unet, vae, te, tokenizer, base, motion)
    groups = trained_groups(cfg.task)
    if uses_lora(cfg.task):
        for group in groups:
            rank = cfg.lora.rank if group == TEMPORAL else (cfg.lora.spatial_rank or cfg.lora.rank)
            which = cfg.lora.temporal_targets if group == TEMPORAL else cfg.lora.spatial_targets
            if cfg.task == "motiondirector":  # as MotionDirector: temporal attn1/attn2/ff, spatial attn1+ff
                which = "attn_ff" if group == TEMPORAL else "attn1_ff"
            targets = lora_targets(unet, group, which)
            pc = PeftLoraConfig(r=rank, lora_alpha=cfg.lora.alpha or rank, lora_dropout=cfg.lora.dropout,
                                target_modules=targets, init_lora_weights=True)
            name = f"{group}_lora"
            unet.add_adapter(pc, adapter_name=name)
            tm.lora_adapters[group] = name
        for layer in unet.modules():
            if isinstance(layer, BaseTunerLayer):
                layer.set_adapter([n for n in tm.lora_adapters.values() if n in layer.lora_A])
        unet.requires_grad_(False)
        for group, name in tm.lora_adapters.items():
            tm.groups[group] = [n for n, p in unet.named_parameters() if f".{name}." in n]
    else:
        unet.requires_grad_(False)
        spatial, temporal = split_parameters(unet)
        chosen = {SPATIAL: spatial, TEMPORAL: temporal}
        for group in groups:
            tm.groups[group] = list(chosen[group])
    params = dict(unet.named_parameters())
    for names in tm.groups.values():
        for n in names:
            params[n].requires_grad_(True)
    if frozen_dtype is not None:
        cast_frozen(unet, frozen_dtype)
        unet.to(device)
    unet.train()
    return tm


def _placeholders(sd: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    """Meta-device stand-ins (names, shapes, dtypes kept) for tensors the built modules now hold."""
    return None if sd is None else {k: torch.empty_like(v, device="meta") for k, v in sd.items()}


@torch.no_grad()
def cast_frozen(module: torch.nn.Module, dtype: torch.dtype) -> int:
    """Store the frozen (``requires_grad=False``) floating-point parameters of ``module`` in ``dtype``.

    Trainable parameters stay fp32 (the optimizer's master weights); buffers are left alone. Returns the
    number of parameters cast. Each tensor is replaced, not copied into, so the old storage is freed.
    """
    n = 0
    for p in module.parameters():
        if not p.requires_grad and p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
            n += p.numel()
    return n


def set_lora_scale(unet: torch.nn.Module, adapter: str, scale: float) -> None:
    """Scale one PEFT adapter in place (0 disables it for a forward without touching requires_grad)."""
    for m in unet.modules():
        if isinstance(m, BaseTunerLayer) and adapter in m.scaling:
            m.set_scale(adapter, scale)


# ---------------------------------------------------------------------------------------------- export
def export_lora(unet: torch.nn.Module, adapter: str, kind: str) -> LoraWeights:
    """A trained PEFT adapter in our canonical layout (``unet.…lora_A/B.weight``, alpha/r folded into B)."""
    sd = get_peft_model_state_dict(unet, adapter_name=adapter)
    cfg = unet.peft_config[adapter]
    out, rank = {}, 0
    for k, v in sd.items():
        v = v.detach().float().cpu().clone()
        if ".lora_B." in k:
            module = k.split(".lora_B.")[0]
            short = module.rsplit(".", 1)[-1]
            r = cfg.rank_pattern.get(short, cfg.r) if cfg.rank_pattern else cfg.r
            alpha = cfg.alpha_pattern.get(short, cfg.lora_alpha) if cfg.alpha_pattern else cfg.lora_alpha
            v = v * (alpha / r)
        if ".lora_A." in k:
            rank = max(rank, int(v.shape[0]))
        out[f"unet.{k}"] = v
    return LoraWeights(state_dict=out, kind=kind, source_format="peft", rank=rank)


def export_motion(unet: torch.nn.Module, motion: MotionModuleWeights) -> MotionModuleWeights:
    live = {k: v for k, v in unet.state_dict().items() if "motion_modules." in k and not is_pe_key(k)}
    sd = {k: live[k].detach().float().cpu().clone() for k in motion.state_dict}
    return MotionModuleWeights(config=dict(motion.config), state_dict=sd, source_format="ours", version="trained")


def save_outputs(tm: TrainModels, unet: torch.nn.Module, cfg: TrainConfig, out_dir: Path,
                 training: dict) -> dict[str, str]:
    """Write what the task trained, through our formats (adapters) or as a diffusers folder (spatial_full)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    if cfg.task == "motion" or cfg.task == "joint":
        p = save_motion_module(export_motion(unet, tm.motion), out_dir / "motion_module.safetensors", training)
        written["motion_module"] = str(p)
    if TEMPORAL in tm.lora_adapters:
        lw = export_lora(unet, tm.lora_adapters[TEMPORAL], "motion_lora")
        written["motion_lora"] = str(save_lora(lw, out_dir / "motion_lora.safetensors", training))
    if SPATIAL in tm.lora_adapters:
        lw = export_lora(unet, tm.lora_adapters[SPATIAL], "spatial_lora")
        written["spatial_lora"] = str(save_lora(lw, out_dir / "spatial_lora.safetensors", training))
    if cfg.task in ("spatial_full", "joint", "t2i"):
        written["base"] = str(save_base_folder(tm, unet, out_dir / "base", training, cfg))
        if cfg.run.export_ldm:
            written["ldm"] = str(save_base_ldm(tm, unet, out_dir / "model.safetensors", cfg))
    if cfg.run.export_dtype == "fp16":
        for key in ("motion_module", "motion_lora", "spatial_lora"):
            if key in written:
                to_fp16_file(Path(written[key]))
    return written


def to_fp16_file(path: Path) -> None:
    """Rewrite a ``.safetensors`` file with its floating-point tensors in fp16 (metadata kept)."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _half(sd: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    out = {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu() for k, v in sd.items()}
    return {k: v.half() if dtype == "fp16" and v.is_floating_point() else v for k, v in out.items()}


def _fp32_vae_text_encoder(tm: TrainModels, cfg: TrainConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The training VAE / text encoder if fp32, else fp32 ones read again from the base (not the half copies)."""
    if all(p.dtype == torch.float32 for m in (tm.vae, tm.text_encoder) for p in m.parameters()):
        return tm.vae, tm.text_encoder
    base_src, base_config = resolve_base(cfg)
    base = read_base(base_src, configs=configs_from_folder(base_config) if base_config else None)
    return (build_vae(base.configs["vae"], base.vae, base_src, torch.float32, "cpu"),
            build_text_encoder(base.configs["text_encoder"], base.text_encoder, base_src, torch.float32, "cpu"))


def save_base_ldm(tm: TrainModels, unet: torch.nn.Module, path: Path, cfg: TrainConfig) -> Path:
    """The spatial UNet with the base's VAE and text encoder as one single-file LDM checkpoint (civitai layout)."""
    dtype = cfg.run.export_dtype
    vae, te = _fp32_vae_text_encoder(tm, cfg)
    ucfg = {k: v for k, v in tm.base.configs["unet"].items() if not k.startswith("_")}
    return save_ldm_checkpoint(path, _half(spatial_tensors(unet), dtype), _half(vae.state_dict(), dtype),
                               _half(te.state_dict(), dtype), unet_config=ucfg, metadata={"format": "pt"})


def save_base_folder(tm: TrainModels, unet: torch.nn.Module, folder: Path, training: dict,
                     cfg: TrainConfig) -> Path:
    """The finetuned spatial UNet with the base's VAE/text encoder as a diffusers SD folder (atomic rename);
    ``dtype="fp16"`` stores every weight file in half precision (loaders cast back)."""
    spatial = {k: v.detach().float().cpu() for k, v in spatial_tensors(unet).items()}
    ucfg = {k: v for k, v in tm.base.configs["unet"].items() if not k.startswith("_")}
    unet2d = materialize(lambda: UNet2DConditionModel.from_config(ucfg), spatial, folder, "spatial UNet weights")
    vae, te = _fp32_vae_text_encoder(tm, cfg)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=te, tokenizer=tm.tokenizer, unet=unet2d,
        scheduler=make_scheduler("ddim"), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )

    def write(tmp: Path) -> None:
        pipe.save_pretrained(str(tmp))
        if cfg.run.export_dtype == "fp16":
            for f in tmp.glob("*/*.safetensors"):
                to_fp16_file(f)
        (tmp / "training.json").write_text(json.dumps(training, indent=2, default=str))

    # a folder this export wrote before is replaced; one holding anything else is left alone (an error)
    return atomic_dir(folder, write, overwrite=True, label="export", replaceable=only_names(BASE_FOLDER_NAMES))
