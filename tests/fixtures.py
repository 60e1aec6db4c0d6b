"""Offline fixtures: tiny SD1.5-layout models written in every real layout (no network anywhere)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from dataclasses import dataclass  # noqa: E402
from functools import cached_property  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from diffusers import ControlNetModel, UNet2DConditionModel  # noqa: E402

from motion_adapters.formats.controlnet import diffusers_to_ldm as controlnet_to_ldm  # noqa: E402
from motion_adapters.formats.ldm import save_ldm_checkpoint  # noqa: E402
from motion_adapters.formats.motion_module import diffusers_to_original  # noqa: E402
from motion_adapters.io import save_pickle_atomic, save_safetensors_atomic  # noqa: E402
from motion_adapters.shapes.build import build  # noqa: E402
from motion_adapters.shapes.models import ENV_DIR, is_built, toy_dir  # noqa: E402
from tests.tiny_models import (  # noqa: E402
    TINY_UNET,
    save_sd_folder,
    t2i_adapter_to_original,
    tiny_controlnet,
    tiny_motion_adapter,
    tiny_sd_components,
    tiny_sdxl_controlnet,
    tiny_t2i_adapter,
)

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))  # children inherit the same count


@dataclass
class TinyWorld:
    root: Path
    base_a: Path          # diffusers folder
    base_b: Path          # diffusers folder (different weights)
    base_b_ldm: Path      # base B as a single-file LDM .safetensors
    mm_a_dir: Path        # diffusers MotionAdapter folder (v3-like: no mid block, L=32)
    mm_a_orig: Path       # mm A in original layout, .safetensors
    mm_b_ckpt: Path       # another v3-like module, original layout .ckpt wrapped in {"state_dict": …}
    mm_v2_ckpt: Path      # v2-like (mid block), original layout .ckpt
    mm_v1: Path           # v1-like (L=24), original layout .safetensors
    mm_sdxl: Path         # SDXL-beta-like (3 levels), original layout .safetensors

    # ControlNets, built on first use (tests that do not touch them pay nothing). All but cn2_dir and the
    # refused ones hold the same tensors: cn_dir's, a ControlNet copied from base_a's UNet encoder.
    @cached_property
    def cn_dir(self) -> Path:
        """diffusers ControlNetModel folder (fp32), named like lllyasviel's canny repository."""
        unet = UNet2DConditionModel.from_pretrained(str(self.base_a / "unet"))
        return self._save_folder(tiny_controlnet(unet, seed=5), "control_v11p_sd15_canny")

    @cached_property
    def cn2_dir(self) -> Path:
        """A second, different ControlNet for base_a (other seed), diffusers folder."""
        unet = UNet2DConditionModel.from_pretrained(str(self.base_a / "unet"))
        return self._save_folder(tiny_controlnet(unet, seed=6), "control_v11p_sd15_openpose")

    @cached_property
    def cn_ldm(self) -> Path:
        """cn_dir in lllyasviel's layout without the ``control_model.`` prefix, fp32 .safetensors."""
        return save_safetensors_atomic(self._ldm(prefix=""), self.root / "control_v11f1p_sd15_depth.safetensors")

    @cached_property
    def cn_ldm_prefixed(self) -> Path:
        """cn_dir in lllyasviel's layout under ``control_model.``, fp32 .pth."""
        return save_pickle_atomic(self._ldm(), self.root / "control_v11p_sd15_canny.pth")

    @cached_property
    def cn_pth_fp16(self) -> Path:
        """cn_dir in lllyasviel's layout under ``control_model.``, fp16 .pth (wrapped in ``state_dict``)."""
        path = self.root / "control_sd15_scribble.pth"
        torch.save({"state_dict": {k: v.half() for k, v in self._ldm().items()}}, path)
        return path

    @cached_property
    def cn_fp16(self) -> Path:
        """cn_dir as the webui's extracted fp16 files: ``control_model.`` keys, fp16 .safetensors."""
        return save_safetensors_atomic({k: v.half() for k, v in self._ldm().items()},
                                       self.root / "control_canny-fp16.safetensors")

    @cached_property
    def cn_sdxl(self) -> Path:
        """An SDXL-layout ControlNet (cross_attention_dim 2048, text_time), diffusers folder."""
        return self._save_folder(tiny_sdxl_controlnet(7), "controlnet-canny-sdxl-1.0")

    @cached_property
    def cn_sd2(self) -> Path:
        """An SD2-layout ControlNet (cross_attention_dim 1024, linear projections), lllyasviel layout."""
        unet = UNet2DConditionModel(**{**TINY_UNET, "cross_attention_dim": 1024, "use_linear_projection": True})
        cn = tiny_controlnet(unet, seed=8)
        return save_safetensors_atomic(controlnet_to_ldm(cn.state_dict(), cn.config),
                                       self.root / "control_v11p_sd21_canny.safetensors")

    @cached_property
    def t2i_adapter(self) -> Path:
        """A diffusers T2I-Adapter's weights (``adapter.body.…``), single .safetensors."""
        path = self.root / "t2iadapter_canny_sd15"
        tiny_t2i_adapter(9).save_pretrained(str(path))
        return path / "diffusion_pytorch_model.safetensors"

    @cached_property
    def t2i_adapter_orig(self) -> Path:
        """The same T2I-Adapter in TencentARC's original keys (``body.N.block1``, ``conv_in``), .pth."""
        return save_pickle_atomic(t2i_adapter_to_original(tiny_t2i_adapter(9).state_dict()),
                                  self.root / "t2iadapter_canny_sd14v1.pth")

    @cached_property
    def cn_truncated(self) -> Path:
        """cn_ldm cut short at half its bytes (an interrupted download)."""
        data = self.cn_ldm.read_bytes()
        path = self.root / "control_v11p_sd15_truncated.safetensors"
        path.write_bytes(data[: len(data) // 2])
        return path

    def _save_folder(self, model: torch.nn.Module, name: str) -> Path:
        model.save_pretrained(str(self.root / name))
        return self.root / name

    def _ldm(self, prefix: str = "control_model.") -> dict[str, torch.Tensor]:
        cn = ControlNetModel.from_pretrained(str(self.cn_dir))
        return controlnet_to_ldm(cn.state_dict(), cn.config, prefix=prefix)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyWorld:
    root = tmp_path_factory.mktemp("tiny")
    a = tiny_sd_components(0)
    b = tiny_sd_components(10)
    save_sd_folder(a, root / "base_a")
    save_sd_folder(b, root / "base_b")
    save_ldm_checkpoint(root / "base_b.safetensors", b.unet, b.vae, b.text_encoder, unet_config=dict(b.unet.config))

    mm_a = tiny_motion_adapter(0)
    mm_a.save_pretrained(root / "mm_a")
    save_safetensors_atomic(diffusers_to_original(mm_a.state_dict(), 32), root / "mm_a_orig.safetensors")
    mm_b = tiny_motion_adapter(1)
    torch.save({"state_dict": diffusers_to_original(mm_b.state_dict(), 32), "epoch": 3},
               root / "mm_b.ckpt")
    v2 = tiny_motion_adapter(2, use_motion_mid_block=True)
    save_pickle_atomic(diffusers_to_original(v2.state_dict(), 32), root / "mm_v2.ckpt")
    v1 = tiny_motion_adapter(3, motion_max_seq_length=24)
    save_safetensors_atomic(diffusers_to_original(v1.state_dict(), 24), root / "mm_v1.safetensors")
    xl = tiny_motion_adapter(4, block_out_channels=(32, 32, 64))
    save_safetensors_atomic(diffusers_to_original(xl.state_dict(), 32), root / "mm_sdxl.safetensors")
    return TinyWorld(
        root=root,
        base_a=root / "base_a",
        base_b=root / "base_b",
        base_b_ldm=root / "base_b.safetensors",
        mm_a_dir=root / "mm_a",
        mm_a_orig=root / "mm_a_orig.safetensors",
        mm_b_ckpt=root / "mm_b.ckpt",
        mm_v2_ckpt=root / "mm_v2.ckpt",
        mm_v1=root / "mm_v1.safetensors",
        mm_sdxl=root / "mm_sdxl.safetensors",
    )


@pytest.fixture(scope="session")
def shapes_world(tmp_path_factory) -> Path:
    """The embedded shapes-world models: the shipped ones when built, else a ``toy build --quick`` (seconds)."""
    if is_built():
        return toy_dir()
    root = tmp_path_factory.mktemp("shapes-world")
    build(out=root / "out", work=root / "work", quick=True, progress=False, log=lambda _m: None)
    return root / "out"


@pytest.fixture(scope="module")
def shapes_env(shapes_world):
    """The registry pointed at ``shapes_world`` for a whole test module (servers and training children)."""
    mp = pytest.MonkeyPatch()
    mp.setenv(ENV_DIR, str(shapes_world))
    yield shapes_world
    mp.undo()
