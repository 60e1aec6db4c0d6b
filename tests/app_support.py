"""Helpers for the studio tests: a models directory with models whose effects are unmistakable, clips to train
on, and a studio server launched in-process on a free localhost port."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import torch

FAST = dict(steps=3, frames=8, width=32, height=32)   # the shapes world's size, few denoising steps
CONTROLNETS = ("controlnets/edges-canny.safetensors", "controlnets/shapes-silhouette.safetensors")
SPARSECTRL = "sparsectrl/shapes-rgb-untrained.safetensors"
IP_ADAPTER = "ip-adapters/shapes-ip.bin"   # h94's layout, its CLIP image encoder in image_encoder/ beside it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_models_dir(root: Path) -> Path:
    """``root`` with: a motion module and a LoRA whose effects survive video coding (random, large updates),
    a perturbed copy of shapes-base (a diffusers folder), two ControlNets of shapes-base (:data:`CONTROLNETS`), an
    untrained SparseCtrl encoder (:data:`SPARSECTRL`), a random IP-Adapter (:data:`IP_ADAPTER`), a dataset folder,
    and two files that are not models."""
    from motion_adapters.formats import ours
    from motion_adapters.io import read_safetensors, save_safetensors_atomic
    from motion_adapters.loading import load_adapter
    from motion_adapters.registry import model_path
    from tests.tiny_data import write_toy_dataset

    g = torch.Generator().manual_seed(0)
    root.mkdir(parents=True, exist_ok=True)
    mm = load_adapter(model_path("shapes-motion"), expect="motion_module")
    for k, v in mm.state_dict.items():
        if ".proj_out." in k:
            mm.state_dict[k] = (torch.randn(v.shape, generator=g) * 0.3).to(v.dtype)
    ours.save_motion_module(mm, root / "strong-motion.safetensors")
    lora = load_adapter(model_path("shapes-zoom-lora"), expect="lora")
    for k, v in lora.state_dict.items():
        if ".lora_B." in k:
            lora.state_dict[k] = (torch.randn(v.shape, generator=g) * 0.3).to(v.dtype)
    (root / "loras").mkdir(exist_ok=True)
    ours.save_lora(lora, root / "loras" / "strong-lora.safetensors")
    base = root / "bases" / "perturbed-base"
    shutil.copytree(model_path("shapes-base"), base)
    unet_file = base / "unet" / "diffusion_pytorch_model.safetensors"
    tensors, md = read_safetensors(unet_file)
    tensors = {k: (v.float() + torch.randn(v.shape, generator=g) * 0.05).to(v.dtype) if v.is_floating_point() else v
               for k, v in tensors.items()}
    save_safetensors_atomic(tensors, unet_file, md)
    for i, name in enumerate(CONTROLNETS):
        write_controlnet(root / name, seed=i)
    write_sparsectrl(root / SPARSECTRL)
    write_ip_adapter(root / IP_ADAPTER)
    write_toy_dataset(root / "datasets" / "squares", kinds=("mp4", "gif"), num_frames=10, size=32)
    (root / "notes.txt").write_text("not a model")
    (root / "junk.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    return root


def shapes_unet(seed: int = 0):
    """A UNet of shapes-base's layout, randomly initialised from ``seed`` (torch's global random state is left as
    it was): what the test control models are cut from, the same on every run."""
    from diffusers import UNet2DConditionModel

    from motion_adapters.base import configs_from_folder
    from motion_adapters.registry import model_path

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return UNet2DConditionModel.from_config(configs_from_folder(model_path("shapes-base"))["unet"])


def shapes_controlnet(seed: int = 0):
    """A ControlNet of shapes-base's UNet layout with every weight perturbed, so its zero convolutions act."""
    from diffusers import ControlNetModel

    cn = ControlNetModel.from_unet(shapes_unet(seed),
                                   conditioning_embedding_out_channels=(16, 32, 64))  # /4: the VAE's factor
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in cn.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return cn.eval()


def write_controlnet(path: Path, seed: int = 0) -> Path:
    """A :func:`shapes_controlnet` in our format (the library knows it by its header)."""
    from motion_adapters.formats import ours
    from motion_adapters.formats.controlnet import ControlNetWeights

    cn = shapes_controlnet(seed)
    config = {k: v for k, v in cn.config.items() if not k.startswith("_")}
    path.parent.mkdir(parents=True, exist_ok=True)
    return ours.save_controlnet(ControlNetWeights(config, dict(cn.state_dict()), "ours", "canny"), path)


def write_sparsectrl(path: Path) -> Path:
    """An untrained RGB SparseCtrl encoder of shapes-base's UNet layout, in our format: what a test picks when it
    needs an encoder without depending on the trained one."""
    from diffusers import SparseControlNetModel

    from motion_adapters.formats import ours
    from motion_adapters.formats.sparsectrl import SparseCtrlWeights

    sc = SparseControlNetModel.from_unet(shapes_unet(), conditioning_channels=4)
    config = {k: v for k, v in sc.config.items() if not k.startswith("_")}
    path.parent.mkdir(parents=True, exist_ok=True)
    return ours.save_sparsectrl(SparseCtrlWeights(config, dict(sc.state_dict()), "ours", "rgb"), path)


def write_ip_adapter(path: Path) -> Path:
    """A random plain IP-Adapter for shapes-base in h94's ``.bin`` layout, with a tiny CLIP image encoder in
    ``image_encoder/`` beside it (where the generator looks for it)."""
    from tests.tiny_models import tiny_image_encoder, tiny_ip_adapter

    path.parent.mkdir(parents=True, exist_ok=True)
    tiny_image_encoder().save_pretrained(str(path.parent / "image_encoder"))
    torch.save(tiny_ip_adapter(shapes_unet()), path)
    return path


def write_picture(path: Path, shape: str = "circle", colour: str = "red", seed: int = 0) -> Path:
    """A PNG of one still shapes-world picture (a first frame or an image prompt)."""
    from PIL import Image

    from motion_adapters.shapes.data import render_image
    from motion_adapters.shapes.world import Spec

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render_image(Spec(shape, colour), seed)).save(path)
    return path


def write_clips(folder: Path, n: int = 2) -> list[Path]:
    """``n`` short 32-px mp4 clips of a square sliding right."""
    from tests.tiny_data import moving_square, write_video

    folder.mkdir(parents=True, exist_ok=True)
    return [write_video(folder / f"clip{i}.mp4", moving_square(10, 32, 2 + i)) for i in range(n)]


def launch_studio(models_dir: Path, output_dir: Path, **cfg):
    """(demo, url, studio) of a studio serving in a background thread."""
    from motion_adapters.app.config import StudioConfig
    from motion_adapters.app.server import launch

    config = StudioConfig(models_dirs=[models_dir], output_dir=output_dir, device="cpu", **cfg)
    return launch(config, host="127.0.0.1", port=free_port(), block=False, quiet=True)


def recipe_of(result) -> dict:
    """The recipe (JSON text) from a ``/generate`` result tuple."""
    return json.loads(result[2])


def status_builds(text: str) -> int:
    import re

    m = re.search(r"builds:\s*(\d+)", text)
    assert m, text
    return int(m.group(1))
