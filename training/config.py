"""Typed training configs read from YAML: unknown keys and bad values are errors that name the key.

``load_config(path, overrides=["optim.lr=5e-5", ...])`` returns a :class:`TrainConfig`. Overrides are parsed
as YAML scalars/lists (``run.max_steps=10``, ``optim.betas=[0.9,0.99]``, ``model.motion_module=null``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from motion_adapters.clips.controls import NEEDS_A_MODEL, PREPROCESSORS
from motion_adapters.errors import MotionAdapterError, yaml_problem

TASKS = ("motion", "motion_lora", "spatial_lora", "spatial_full", "joint", "motiondirector", "t2i", "vae",
         "controlnet", "sparsectrl")
IMAGE_TASKS = ("t2i", "vae")  # trained on single images (data.sample: frame)
NO_MOTION_TASKS = (*IMAGE_TASKS, "controlnet")  # trained without a motion module
PRESET_DIR = Path(str(resources.files("motion_adapters.configs")))


class ConfigError(MotionAdapterError):
    """A training config is invalid; the message names the key."""


@dataclass
class ModelConfig:
    base: str = ""  # diffusers SD folder or single-file checkpoint (anything read_base accepts)
    base_config: str | None = None  # diffusers folder describing a non-SD1.5 single-file base
    motion_module: str | None = None  # starting motion module (required except for task=motion)
    # Architecture of a NEW motion module (task=motion without motion_module); channels come from the base.
    motion_num_attention_heads: int = 8
    motion_norm_num_groups: int = 32
    motion_max_seq_length: int = 32
    use_motion_mid_block: bool = False
    # task t2i / vae: architectures of models built FROM SCRATCH (diffusers/transformers config dicts). With
    # unet_config set, t2i trains a new UNet2DConditionModel (+ text encoder) on top of the VAE in model.vae;
    # without it, t2i finetunes model.base (DreamBooth-style).
    unet_config: dict[str, Any] = field(default_factory=dict)
    text_encoder_config: dict[str, Any] = field(default_factory=dict)  # vocab/bos/eos/pad come from the tokenizer
    vae_config: dict[str, Any] = field(default_factory=dict)
    vae: str | None = None  # t2i from scratch: a trained AutoencoderKL folder (output of task vae)
    tokenizer: str | None = None  # t2i from scratch: a CLIP tokenizer folder
    train_text_encoder: bool = False  # t2i: train the CLIP text encoder jointly with the UNet


@dataclass
class LoraConfig:
    rank: int = 64
    alpha: float | None = None  # None: alpha = rank (scale 1)
    dropout: float = 0.0
    spatial_rank: int | None = None  # motiondirector spatial path (default: rank)
    # spatial LoRA targets: "attn" = q/k/v/out of self- and cross-attention (v3 domain adapter);
    # "attn1_ff" = self-attention + feed-forward, no cross-attention (MotionDirector spatial path)
    spatial_targets: Literal["attn", "attn1_ff"] = "attn"
    # temporal LoRA targets: "attn" = q/k/v/out of both temporal attentions (MotionLoRA);
    # "attn_ff" = plus the feed-forward (MotionDirector temporal path)
    temporal_targets: Literal["attn", "attn_ff"] = "attn"


@dataclass
class DataConfig:
    path: str = ""  # folder with metadata.csv or metadata.jsonl
    metadata: str | None = None  # file name inside `path` (default: metadata.jsonl, then metadata.csv)
    file_column: str = "file_name"  # WebVid (videoid,name,page_dir) is detected automatically
    caption_column: str = "text"
    num_frames: int = 16
    stride: int = 4
    random_start: bool = True
    resolution: int = 256
    hflip: bool = False  # off by default: flipping breaks captions such as "moving left"
    sample: Literal["clip", "frame"] = "clip"  # "frame": one random frame per item (spatial training)
    min_frames: int | None = None  # shorter videos are skipped (default: 1, AnimateDiff repeats frames)
    empty_caption_prob: float = 0.0
    max_failed_fraction: float = 0.05
    latent_cache: str | None = None  # folder for VAE latents (encode once, reuse)
    images: str | None = None  # Latte-style joint images: an image folder, or "same" (frames of this data)
    images_per_sample: int = 0
    num_workers: int = 0


@dataclass
class LossConfig:
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    beta_schedule: Literal["linear", "scaled_linear"] = "linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    num_train_timesteps: int = 1000
    offset_noise: float = 0.0
    offset_noise_per_frame: bool = True
    zero_terminal_snr: bool = False
    temporal_coherence_weight: float = 0.0  # TF-T2V's frame-difference (temporal coherence) loss
    appearance_debias_weight: float = 0.0  # MotionDirector's appearance-debiased temporal loss
    appearance_debias_beta: float = 1.0
    image_loss_weight: float = 1.0  # joint images / spatial path
    spatial_mask_prob: float = 0.2  # motiondirector: skip the spatial path with this probability


@dataclass
class OptimConfig:
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"
    lr: float = 1e-4
    lr_spatial: float | None = None  # spatial group of joint / motiondirector (default: lr)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine decays to 0 at run.max_steps
    lr_text_encoder: float | None = None  # t2i with model.train_text_encoder (default: lr)
    ema_decay: float = 0.0  # > 0: keep an EMA of the trained weights and export it (t2i, spatial_full, vae)


@dataclass
class RunConfig:
    output_dir: str = "runs/train"
    seed: int = 42
    max_steps: int = 1000
    batch_size: int = 1  # per process
    grad_accum: int = 1
    # fp16/bf16: autocast forward, frozen weights stored in that dtype, trainable weights fp32 (fp16: GPU only)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    # gradient checkpointing + AdamW8bit + mixed precision if "no" (bf16; fp16 on GPUs without bf16)
    low_vram: bool = False
    attention: Literal["sdpa", "xformers"] = "sdpa"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    tensorboard: bool = True
    progress: bool = True
    export_dtype: Literal["fp32", "fp16"] = "fp32"  # dtype of exported weights (fp16 halves the files)
    export_ldm: bool = False  # t2i / spatial_full: also write the base as a single-file LDM model.safetensors


@dataclass
class ValidationConfig:
    every: int = 0  # 0: only at the end when prompts are given
    prompts: list[str] = field(default_factory=list)
    num_frames: int = 16
    height: int = 256
    width: int = 256
    steps: int = 25
    guidance_scale: float = 8.0
    seed: int = 42
    fps: int = 8


@dataclass
class VaeTrainConfig:
    """Task vae: reconstruction MSE (+ L1) of ``decode(mean + latent_noise·ε)``; KL off by default."""

    latent_noise: float = 0.1  # std of the noise added to the encoder mean (in latent units, before scaling)
    kl_weight: float = 0.0
    l1_weight: float = 0.0


@dataclass
class ControlNetTrainConfig:
    """Task controlnet: a ``ControlNetModel`` copied from the base UNet learns to steer it from control maps
    computed from each target frame (frames of clips are independent images)."""

    preprocessor: str = "silhouette"  # a map preprocessor of motion_adapters.clips.controls (canny, silhouette)
    # scale of the residuals in validation samples, recorded in the file's training summary (training uses 1)
    conditioning_scale: float = 1.0
    # channels of the conditioning embedding (the map encoder): one more entry than the VAE's downsamplers;
    # empty: SD's (16, 32, 96, 256) cut to that length
    embedding_channels: tuple[int, ...] = ()


@dataclass
class SparseCtrlTrainConfig:
    """Task sparsectrl: a ``SparseControlNetModel`` (the base UNet's encoder with the motion module's temporal
    layers) learns to steer the frozen base + motion module from a few conditioned keyframes of each clip.

    Each clip draws its keyframes (from its own seed): only the first frame with ``first_prob``, the first and
    the last with ``first_last_prob``, none (unconditional) with ``uncond_prob``, otherwise 1 to
    ``max_keyframes`` frames at random positions (SparseCtrl's random sparse masks)."""

    kind: Literal["rgb", "scribble"] = "rgb"  # rgb: the keyframes' VAE latents; scribble: maps of preprocessor
    preprocessor: str = "silhouette"  # kind scribble: a map preprocessor of motion_adapters.clips.controls
    max_keyframes: int = 3
    first_prob: float = 0.4
    first_last_prob: float = 0.2
    uncond_prob: float = 0.1
    # scale of the residuals in validation samples, recorded in the file's training summary (training uses 1)
    conditioning_scale: float = 1.0
    # kind scribble: channels of the map encoder (one entry per VAE level; empty: SD's cut to that length)
    embedding_channels: tuple[int, ...] = ()


@dataclass
class TrainConfig:
    task: Literal["motion", "motion_lora", "spatial_lora", "spatial_full", "joint", "motiondirector", "t2i",
                  "vae", "controlnet", "sparsectrl"] = "motion"
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    vae: VaeTrainConfig = field(default_factory=VaeTrainConfig)
    controlnet: ControlNetTrainConfig = field(default_factory=ControlNetTrainConfig)
    sparsectrl: SparseCtrlTrainConfig = field(default_factory=SparseCtrlTrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------- ranges
SEED_MAX = 2**32 - 1  # numpy's seed range (accelerate's set_seed seeds numpy too)

#: Every number of the config and the interval it must lie in: ``"[a, b]"`` / ``"(a, b)"`` / mixed, with
#: ``inf`` for no upper bound. Floats must also be finite; ``None`` (where the type allows it) means "default"
#: and is not checked. A tuple field (``optim.betas``) applies the range to each element.
RANGES: dict[str, str] = {
    "model.motion_num_attention_heads": "[1, inf)",
    "model.motion_norm_num_groups": "[1, inf)",
    "model.motion_max_seq_length": "[1, inf)",
    "lora.rank": "[1, inf)",
    "lora.alpha": "(0, inf)",
    "lora.dropout": "[0, 1)",
    "lora.spatial_rank": "[1, inf)",
    "data.num_frames": "[1, inf)",
    "data.stride": "[1, inf)",
    "data.resolution": "[8, inf)",
    "data.min_frames": "[1, inf)",
    "data.empty_caption_prob": "[0, 1]",
    "data.max_failed_fraction": "[0, 1]",
    "data.images_per_sample": "[0, inf)",
    "data.num_workers": "[0, inf)",
    "loss.beta_start": "(0, 1)",
    "loss.beta_end": "(0, 1)",
    "loss.num_train_timesteps": "[1, inf)",
    "loss.offset_noise": "[0, inf)",
    "loss.temporal_coherence_weight": "[0, inf)",
    "loss.appearance_debias_weight": "[0, inf)",
    "loss.appearance_debias_beta": "[0, inf)",
    "loss.image_loss_weight": "[0, inf)",
    "loss.spatial_mask_prob": "[0, 1]",
    "optim.lr": "(0, inf)",
    "optim.lr_spatial": "(0, inf)",
    "optim.betas": "[0, 1)",
    "optim.weight_decay": "[0, inf)",
    "optim.eps": "(0, inf)",
    "optim.max_grad_norm": "[0, inf)",  # 0: no clipping
    "optim.warmup_steps": "[0, inf)",
    "optim.lr_text_encoder": "(0, inf)",
    "optim.ema_decay": "[0, 1)",  # 0: no EMA
    "run.seed": f"[0, {SEED_MAX}]",
    "run.max_steps": "[1, inf)",
    "run.batch_size": "[1, inf)",
    "run.grad_accum": "[1, inf)",
    "run.checkpoint_every": "[1, inf)",
    "run.keep_checkpoints": "[0, inf)",  # 0: keep every checkpoint
    "run.log_every": "[1, inf)",
    "validation.every": "[0, inf)",  # 0: only at the end
    "validation.num_frames": "[1, inf)",
    "validation.height": "[8, inf)",
    "validation.width": "[8, inf)",
    "validation.steps": "[1, inf)",
    "validation.guidance_scale": "[0, inf)",
    "validation.seed": f"[0, {SEED_MAX}]",
    "validation.fps": "[1, inf)",
    "vae.latent_noise": "[0, inf)",
    "vae.kl_weight": "[0, inf)",
    "vae.l1_weight": "[0, inf)",
    "controlnet.conditioning_scale": "[0, inf)",
    "controlnet.embedding_channels": "[1, inf)",
    "sparsectrl.max_keyframes": "[1, inf)",
    "sparsectrl.first_prob": "[0, 1]",
    "sparsectrl.first_last_prob": "[0, 1]",
    "sparsectrl.uncond_prob": "[0, 1]",
    "sparsectrl.conditioning_scale": "[0, inf)",
    "sparsectrl.embedding_channels": "[1, inf)",
}


@dataclass(frozen=True)
class Interval:
    lo: float
    hi: float
    lo_open: bool
    hi_open: bool

    @classmethod
    def parse(cls, text: str) -> Interval:
        lo, hi = (float(x) for x in text[1:-1].split(","))
        return cls(lo, hi, text[0] == "(", text[-1] == ")")

    def __contains__(self, v: float) -> bool:
        return ((v > self.lo) if self.lo_open else (v >= self.lo)) and ((v < self.hi) if self.hi_open else (v <= self.hi))

    def describe(self, integer: bool) -> str:
        lo = f"{int(self.lo)}" if integer or self.lo.is_integer() else f"{self.lo:g}"
        hi = f"{int(self.hi)}" if (integer or self.hi.is_integer()) and math.isfinite(self.hi) else f"{self.hi:g}"
        if math.isinf(self.hi):
            return f"{'>' if self.lo_open else '>='} {lo}"
        return f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"


INTERVALS = {key: Interval.parse(text) for key, text in RANGES.items()}


def numeric_fields(cls=None, prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, type)`` of every int / float field (also optional and tuple ones) of the config."""
    cls = cls or TrainConfig
    out = []
    for name, tp in typing.get_type_hints(cls).items():
        key = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(tp):
            out += numeric_fields(tp, key)
        elif {int, float} & set(typing.get_args(tp) or (tp,)) and tp is not bool:
            out.append((key, tp))
    return out


def check_ranges(cfg: TrainConfig) -> None:
    """Every number finite and in its :data:`RANGES` interval; the error names the key."""
    for key, _tp in numeric_fields():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is None:
            continue
        for i, v in enumerate(value if isinstance(value, tuple) else (value,)):
            where = f"{key}[{i}]" if isinstance(value, tuple) else key
            integer = isinstance(v, int)
            rng = INTERVALS[key]
            if (not integer and not math.isfinite(v)) or v not in rng:
                what = "an integer" if integer else "a finite number"
                raise ConfigError(f"{where}: expected {what} {rng.describe(integer)}, found {v!r}")


# ------------------------------------------------------------------------------------------------ parsing
class _Loader(yaml.SafeLoader):
    """YAML with only ``true``/``false`` as booleans (YAML 1.2): PyYAML's 1.1 rules also read ``yes``/``no``/
    ``on``/``off``, which turned ``run.mixed_precision=no`` into ``False``. Boolean keys still accept those words
    (see :func:`_coerce`)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))

#: YAML 1.1 words for booleans: accepted by boolean keys; a boolean given to a key of string choices is read
#: back as the word among the choices (``mixed_precision: no`` parsed elsewhere as ``False`` → ``"no"``).
BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def yaml_load(text: str) -> Any:
    """``yaml.safe_load`` without the YAML 1.1 booleans (``no`` stays the string ``"no"``)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: expected {_type_name(tp)}, found {value!r}")
    if origin is Literal:
        if isinstance(value, str) and value not in args and value.lower() in BOOL_WORDS:
            value = BOOL_WORDS[value.lower()]  # "No", "off" → the choice that means false ("no")
        if isinstance(value, bool) and all(isinstance(a, str) for a in args):
            value = next((a for a in args if BOOL_WORDS.get(a.lower()) is value), value)
        if value not in args:
            raise ConfigError(f"{key}: expected one of {list(args)}, found {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, found {value!r}")
        return _build(tp, value, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, found {value!r}")
        return dict(value)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, found {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, found {len(value)} ({value!r})")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, str) and value.lower() in BOOL_WORDS:
            return BOOL_WORDS[value.lower()]
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, found {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, found {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, found {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, found {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover - schema bug


def _build(cls, values: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in values:
        if k not in names:
            where = f"{prefix}.{k}" if prefix else k
            raise ConfigError(f"{where}: unknown key (valid keys{' of ' + prefix if prefix else ''}: "
                              f"{', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in values.items()}
    return cls(**kwargs)


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {p} is not a section")
    node[parts[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """``"a.b=value"`` → ``("a.b", yaml-parsed value)``."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. optim.lr=5e-5)")
    key, raw = item.split("=", 1)
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: expected a YAML value, found {raw!r} ({yaml_problem(e)})") from e
    return key.strip(), value


def resolve_config_path(path: str | Path) -> Path:
    """A YAML path, or the name of a shipped preset (``motion`` → ``configs/motion.yaml``)."""
    p = Path(path)
    if p.exists():
        return p
    preset = PRESET_DIR / f"{path}.yaml"
    if preset.exists():
        return preset
    raise ConfigError(f"config {path}: expected a YAML file or a preset name "
                      f"({', '.join(sorted(q.stem for q in PRESET_DIR.glob('*.yaml')))}), found nothing there")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                values: dict | None = None) -> TrainConfig:
    """Read, override and validate a config (``values`` replaces the YAML file when given)."""
    tree: dict = {}
    if path is not None:
        p = resolve_config_path(path)
        try:
            tree = yaml_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: expected a YAML config, found invalid YAML ({yaml_problem(e)})") from e
        if not isinstance(tree, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level, found {type(tree).__name__}")
    if values:
        tree = _merge(tree, values)
    for item in overrides or []:
        key, value = parse_override(item)
        _set_path(tree, key, value)
    cfg = _build(TrainConfig, tree)
    validate(cfg)
    return cfg


def _merge(a: dict, b: dict) -> dict:
    """``b`` over ``a``, section by section, in new dicts (overrides applied later never touch ``values``)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k] if isinstance(out.get(k), dict) else {}, v) if isinstance(v, dict) else v
    return out


def validate(cfg: TrainConfig) -> None:
    """Ranges (:data:`RANGES`), then cross-field checks (each message names the key)."""
    check_ranges(cfg)
    scratch = cfg.task == "vae" or (cfg.task == "t2i" and bool(cfg.model.unet_config))
    if not cfg.model.base and not scratch:
        raise ConfigError("model.base: expected a base checkpoint (diffusers folder or single file), found nothing")
    if cfg.task == "vae" and not cfg.model.vae_config:
        raise ConfigError("model.vae_config: task vae builds an AutoencoderKL from scratch; expected its config, "
                          "found nothing")
    if cfg.task == "t2i" and cfg.model.unet_config:
        for key in ("vae", "tokenizer"):
            if not getattr(cfg.model, key):
                raise ConfigError(f"model.{key}: t2i from scratch (model.unet_config set) needs it, found nothing")
        if not cfg.model.text_encoder_config:
            raise ConfigError("model.text_encoder_config: t2i from scratch needs the text encoder's config, "
                              "found nothing")
    if cfg.model.train_text_encoder and cfg.task != "t2i":
        raise ConfigError(f"model.train_text_encoder: only task t2i trains the text encoder, found task {cfg.task}")
    if not cfg.data.path:
        raise ConfigError("data.path: expected a dataset folder (with metadata.csv or metadata.jsonl), found nothing")
    if cfg.task in IMAGE_TASKS and cfg.data.sample != "frame":
        raise ConfigError(f"data.sample: task {cfg.task} trains on images; expected 'frame', found "
                          f"{cfg.data.sample!r}")
    if cfg.task not in ("motion", *NO_MOTION_TASKS) and not cfg.model.motion_module:
        raise ConfigError(f"model.motion_module: task {cfg.task} trains on top of an existing motion module; "
                          "expected its path, found nothing")
    if cfg.task == "controlnet":
        validate_controlnet(cfg)
    if cfg.task == "sparsectrl":
        validate_sparsectrl(cfg)
    if cfg.data.resolution % 8:
        raise ConfigError(f"data.resolution: expected a multiple of 8 (VAE downsampling), found {cfg.data.resolution}")
    if cfg.data.num_frames > cfg.model.motion_max_seq_length and cfg.task == "motion" and not cfg.model.motion_module:
        raise ConfigError(f"data.num_frames: expected at most model.motion_max_seq_length "
                          f"({cfg.model.motion_max_seq_length}), found {cfg.data.num_frames}")
    if cfg.loss.zero_terminal_snr and cfg.loss.prediction_type != "v_prediction":
        raise ConfigError("loss.zero_terminal_snr: requires loss.prediction_type=v_prediction "
                          "(epsilon prediction is degenerate at SNR 0), found epsilon")
    if cfg.data.images_per_sample and not cfg.data.images:
        raise ConfigError("data.images: data.images_per_sample > 0 needs an image folder or 'same', found nothing")
    if cfg.data.sample == "frame" and cfg.task in ("motion", "motion_lora", "motiondirector"):
        raise ConfigError(f"data.sample: task {cfg.task} trains temporal layers and needs clips, found 'frame'")
    for key in ("height", "width"):
        if getattr(cfg.validation, key) % 8:
            raise ConfigError(f"validation.{key}: expected a multiple of 8 (VAE downsampling), found "
                              f"{getattr(cfg.validation, key)}")


def check_preprocessor(key: str, value: str) -> None:
    """``value`` names a map preprocessor this toolkit ships (the error names ``key``)."""
    name = value.strip().lower()
    if name not in PREPROCESSORS:
        needs = f" (it needs {NEEDS_A_MODEL[name]}, which this toolkit does not ship)" if name in NEEDS_A_MODEL else ""
        raise ConfigError(f"{key}: expected one of {', '.join(PREPROCESSORS)}, found {value!r}{needs}")


def validate_controlnet(cfg: TrainConfig) -> None:
    """Task controlnet: a known preprocessor, a 2-D base (no motion module)."""
    check_preprocessor("controlnet.preprocessor", cfg.controlnet.preprocessor)
    if cfg.model.motion_module:
        raise ConfigError("model.motion_module: task controlnet trains on the 2-D base frame by frame; expected "
                          f"nothing, found {cfg.model.motion_module!r}")


def validate_sparsectrl(cfg: TrainConfig) -> None:
    """Task sparsectrl: clips (keyframes of a clip), the motion module it starts from, keyframe probabilities
    that leave room for each other, a known preprocessor for scribble encoders."""
    sc = cfg.sparsectrl
    if cfg.data.sample != "clip":
        raise ConfigError(f"data.sample: task sparsectrl conditions keyframes of clips; expected 'clip', found "
                          f"{cfg.data.sample!r}")
    total = sc.first_prob + sc.first_last_prob + sc.uncond_prob
    if total > 1 + 1e-9:
        raise ConfigError(f"sparsectrl.uncond_prob: sparsectrl.first_prob + first_last_prob + uncond_prob must be "
                          f"at most 1, found {sc.first_prob:g} + {sc.first_last_prob:g} + {sc.uncond_prob:g} = "
                          f"{total:g}")
    if sc.max_keyframes > cfg.data.num_frames:
        raise ConfigError(f"sparsectrl.max_keyframes: expected at most data.num_frames ({cfg.data.num_frames}), "
                          f"found {sc.max_keyframes}")
    if sc.kind == "scribble":
        check_preprocessor("sparsectrl.preprocessor", sc.preprocessor)
    elif sc.embedding_channels:
        raise ConfigError("sparsectrl.embedding_channels: an rgb encoder takes latents (no map encoder); expected "
                          f"nothing, found {list(sc.embedding_channels)}")
