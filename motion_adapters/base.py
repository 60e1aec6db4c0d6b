"""Community SD1.5 checkpoints, offline: diffusers folders and single-file LDM (civitai) checkpoints.

A base is read into plain diffusers-layout state dicts plus the configs that describe them; building or
swapping models from it is :mod:`motion_adapters.swap`'s job.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from .errors import AdapterFormatError, MotionAdapterError
from .formats.ldm import is_ldm_checkpoint, ldm_family, ldm_to_diffusers
from .io import read_state_dict
from .kinds import describe_keys
from .swap import validate_component
from .tokenizer import CLIP_MAX_LENGTH, _cache_dir, clip_tokenizer, clip_tokenizer_dir

COMPONENTS = ("unet", "vae", "text_encoder")
_WEIGHT_NAMES = {
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
             "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
            "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"),
    "text_encoder": ("model.safetensors", "model.fp16.safetensors", "pytorch_model.bin", "pytorch_model.fp16.bin"),
}


@dataclass
class BaseWeights:
    """An SD1.5-family checkpoint as diffusers-layout state dicts (a component is None if the file lacks it)."""

    source: str
    source_format: str  # "diffusers-folder" | "ldm-single-file"
    family: str
    unet: dict[str, torch.Tensor]
    vae: dict[str, torch.Tensor] | None
    text_encoder: dict[str, torch.Tensor] | None
    configs: dict[str, dict] = field(default_factory=dict)
    tokenizer_dir: Path | None = None


def skeleton_config(component: str) -> dict:
    """The shipped SD1.5 config (no weights) of ``unet``, ``vae`` or ``text_encoder``.

    The sampler's config is :func:`motion_adapters.schedulers.scheduler_config`.
    """
    if component not in COMPONENTS:
        raise MotionAdapterError(f"component: expected one of {', '.join(COMPONENTS)}, found {component!r}")
    text = resources.files("motion_adapters.assets").joinpath(f"sd15/{component}/config.json").read_text()
    return json.loads(text)


def skeleton_dir(cache_root: Path | None = None) -> Path:
    """A complete offline SD1.5 diffusers config folder (configs + CLIP tokenizer), for ``config=`` arguments."""

    out = (cache_root or _cache_dir().parent) / "sd15-skeleton"
    if not (out / "tokenizer" / "merges.txt").exists():
        src = resources.files("motion_adapters.assets").joinpath("sd15")
        for comp in ("unet", "vae", "text_encoder", "scheduler"):
            (out / comp).mkdir(parents=True, exist_ok=True)
            name = "scheduler_config.json" if comp == "scheduler" else "config.json"
            (out / comp / name).write_text(src.joinpath(f"{comp}/{name}").read_text())
        (out / "model_index.json").write_text(src.joinpath("model_index.json").read_text())
        shutil.copytree(clip_tokenizer_dir(), out / "tokenizer", dirs_exist_ok=True)
    return out


def _read_component(folder: Path, component: str) -> dict[str, torch.Tensor] | None:
    sub = folder / component
    if not sub.is_dir():
        return None
    for name in _WEIGHT_NAMES[component]:
        if (sub / name).exists():
            return read_state_dict(sub / name)[0]
    raise AdapterFormatError(sub, f"one of {', '.join(_WEIGHT_NAMES[component])}", "no weight file")


def _read_config(folder: Path, component: str) -> dict | None:
    p = folder / component / "config.json"
    return json.loads(p.read_text()) if p.exists() else None


def tokenizer_dir_of(folder: str | Path | None) -> Path | None:
    """``folder/tokenizer`` when it holds a CLIP tokenizer (``vocab.json`` or a fast ``tokenizer.json``)."""
    if folder is None:
        return None
    tok = Path(folder) / "tokenizer"
    return tok if (tok / "vocab.json").exists() or (tok / "tokenizer.json").exists() else None


def is_diffusers_folder(path: Path) -> bool:
    return path.is_dir() and (path / "model_index.json").exists()


def configs_from_folder(folder: str | Path) -> dict[str, dict]:
    """The ``unet``/``vae``/``text_encoder`` configs of a diffusers folder (weights not needed)."""
    folder = Path(folder)
    cfgs = {c: cfg for c in COMPONENTS if (cfg := _read_config(folder, c)) is not None}
    if "unet" not in cfgs:
        raise AdapterFormatError(folder, "a diffusers folder with unet/config.json", "none")
    return cfgs


def unet_family(unet_config: dict) -> str:
    """``sdxl`` for an SDXL UNet (added time/text embeddings), else ``sd15`` (SD1.5 and SD1.5-layout models of
    any depth, such as a 3-level UNet)."""
    return "sdxl" if unet_config.get("addition_embed_type") == "text_time" else "sd15"


def read_base(src: str | Path, configs: dict[str, dict] | None = None,
              tokenizer_dir: str | Path | None = None) -> BaseWeights:
    """Read a community checkpoint: a diffusers SD folder or a single-file LDM ``.safetensors``/``.ckpt``.

    ``configs`` (``unet``/``vae``/``text_encoder``) describe the architecture for single-file checkpoints;
    they default to the shipped SD1.5 skeleton; ``tokenizer_dir`` gives a single file's tokenizer (default:
    SD1.5's CLIP tokenizer). Nothing here touches the network.
    """
    path = Path(src)
    if is_diffusers_folder(path):
        unet = _read_component(path, "unet")
        if unet is None:
            raise AdapterFormatError(path, "a unet/ subfolder in the diffusers folder", "none")
        cfgs = {c: cfg for c in COMPONENTS if (cfg := _read_config(path, c)) is not None}
        return BaseWeights(
            source=str(path),
            source_format="diffusers-folder",
            family=unet_family(cfgs.get("unet", {})),
            unet=unet,
            vae=_read_component(path, "vae"),
            text_encoder=_read_component(path, "text_encoder"),
            configs=cfgs,
            tokenizer_dir=tokenizer_dir_of(path),
        )
    if path.is_dir():
        raise AdapterFormatError(path, "a diffusers SD folder (with model_index.json) or a single checkpoint file",
                                 "a folder without model_index.json")

    tensors, _ = read_state_dict(path)
    if not is_ldm_checkpoint(tensors):

        raise AdapterFormatError(path, "an SD checkpoint (keys under model.diffusion_model.)", describe_keys(tensors))
    family = ldm_family(tensors)
    if family not in ("sd15", "unknown"):
        raise AdapterFormatError(path, "an SD1.5-family checkpoint", f"a {family} checkpoint")
    cfgs = {c: (configs or {}).get(c) or skeleton_config(c) for c in COMPONENTS}
    comps = ldm_to_diffusers(tensors, cfgs["unet"], cfgs["vae"], source=path)

    hint = None if configs else (
        "A single file carries no architecture; it was read as standard SD1.5. For another architecture "
        "pass config= (--config) a diffusers folder that describes it.")
    for comp, sd in comps.items():
        validate_component(comp, cfgs[comp], sd, path, hint)
    return BaseWeights(
        source=str(path),
        source_format="ldm-single-file",
        family=family if family != "unknown" else "sd15",
        unet=comps["unet"],
        vae=comps.get("vae"),
        text_encoder=comps.get("text_encoder"),
        configs=cfgs,
        tokenizer_dir=Path(tokenizer_dir) if tokenizer_dir is not None else None,
    )


def load_tokenizer(base: BaseWeights):
    """The base's own CLIP tokenizer when it ships one (diffusers folders), else SD1.5's offline tokenizer."""
    from transformers import CLIPTokenizer


    if base.tokenizer_dir is None:
        return clip_tokenizer()
    tok = CLIPTokenizer.from_pretrained(str(base.tokenizer_dir), local_files_only=True)
    if tok.model_max_length > 10_000:  # a tokenizer_config without model_max_length: encode_prompt would overflow
        tok.model_max_length = CLIP_MAX_LENGTH
    return tok
