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
from diffusers import ControlNetModel, SparseControlNetModel, UNet2DConditionModel  # noqa: E402

from motion_adapters.formats.controlnet import diffusers_to_ldm as controlnet_to_ldm  # noqa: E402
from motion_adapters.formats.ldm import save_ldm_checkpoint  # noqa: E402
from motion_adapters.formats.motion_module import diffusers_to_original  # noqa: E402
from motion_adapters.formats.sparsectrl import to_original as sparsectrl_to_original  # noqa: E402
from motion_adapters.io import save_pickle_atomic, save_safetensors_atomic  # noqa: E402
from motion_adapters.shapes.build import build  # noqa: E402
from motion_adapters.shapes.models import ENV_DIR, is_built, toy_dir  # noqa: E402
from tests.tiny_models import (  # noqa: E402
    TINY_UNET,
    save_sd_folder,
    t2i_adapter_to_original,
    tiny_controlnet,
    tiny_image_encoder,
    tiny_ip_adapter,
    tiny_motion_adapter,
    tiny_sd_components,
    tiny_sdxl_controlnet,
    tiny_sparsectrl,
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

    # SparseCtrl encoders and IP-Adapters for base_a, built on first use.
    @cached_property
    def sc_rgb_dir(self) -> Path:
        """diffusers SparseControlNetModel folder, rgb (one-convolution embedding, 4 channels + mask)."""
        return self._save_folder(tiny_sparsectrl(self._unet_a(), "rgb", seed=11), "animatediff-sparsectrl-rgb")

    @cached_property
    def sc_scribble_dir(self) -> Path:
        """diffusers SparseControlNetModel folder, scribble (hint-embedding stack, 3 channels + mask)."""
        return self._save_folder(tiny_sparsectrl(self._unet_a(), "scribble", seed=12),
                                 "animatediff-sparsectrl-scribble")

    @cached_property
    def sc_rgb_ckpt(self) -> Path:
        """sc_rgb_dir in AnimateDiff v3's layout (original motion-module names, pos_encoder.pe), nested under
        ``controlnet`` beside a non-tensor ``animatediff_config``, .ckpt."""
        path = self.root / "v3_sd15_sparsectrl_rgb.ckpt"
        torch.save({"controlnet": self._sc_original(self.sc_rgb_dir), "animatediff_config": {"version": "v3"}}, path)
        return path

    @cached_property
    def sc_scribble_ckpt(self) -> Path:
        """sc_scribble_dir in AnimateDiff v3's layout, the state dict at the top with ``animatediff_config``."""
        path = self.root / "v3_sd15_sparsectrl_scribble.ckpt"
        torch.save({**self._sc_original(self.sc_scribble_dir), "animatediff_config": {"version": "v3"}}, path)
        return path

    @cached_property
    def image_encoder_dir(self) -> Path:
        """h94's layout: ``models/image_encoder`` (CLIPVisionModelWithProjection, hidden and projection 32)."""
        return self._save_folder(tiny_image_encoder(13), "h94/models/image_encoder")

    @cached_property
    def image_encoder_bad(self) -> Path:
        """An image encoder of other widths (hidden 48, projection 16): fits none of the IP-Adapters."""
        return self._save_folder(tiny_image_encoder(14, hidden_size=48, projection_dim=16), "encoder_bad")

    @cached_property
    def ip_bin(self) -> Path:
        """A plain IP-Adapter as h94's ``models/ip-adapter_sd15.bin`` (two sub-dicts), image encoder beside."""
        _ = self.image_encoder_dir
        path = self.root / "h94/models/ip-adapter_sd15.bin"
        torch.save(self.ip_dicts("plain"), path)
        return path

    @cached_property
    def ip_plus_st(self) -> Path:
        """A plus IP-Adapter as h94's ``.safetensors`` (flat ``image_proj.`` / ``ip_adapter.`` keys)."""
        return self._ip_safetensors("plus", "h94/models/ip-adapter-plus_sd15.safetensors")

    @cached_property
    def ip_plus_face(self) -> Path:
        """A plus-face IP-Adapter (the Resampler of plus; told by the name), ``.safetensors``."""
        return self._ip_safetensors("plus-face", "h94/models/ip-adapter-plus-face_sd15.safetensors")

    @cached_property
    def ip_full_face(self) -> Path:
        """A full-face IP-Adapter (``proj.0``/``proj.2``/``proj.3``), ``.bin``."""
        path = self.root / "h94/models/ip-adapter-full-face_sd15.bin"
        torch.save(self.ip_dicts("full-face"), path)
        return path

    @cached_property
    def ip_sdxl(self) -> Path:
        """An IP-Adapter made for SDXL (key/value projections from 2048-wide text), two layers only."""
        ip = self.ip_dicts("plain")
        ip["image_proj"] = {"proj.weight": torch.zeros(4 * 2048, 32), "proj.bias": torch.zeros(4 * 2048),
                            "norm.weight": torch.ones(2048), "norm.bias": torch.zeros(2048)}
        ip["ip_adapter"] = {f"{i}.to_{kv}_ip.weight": torch.zeros(32, 2048) for i in (1, 3) for kv in "kv"}
        path = self.root / "h94/sdxl_models/ip-adapter_sdxl.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_safetensors_atomic({f"{p}.{k}": v for p, d in ip.items() for k, v in d.items()}, path)

    def ip_dicts(self, variant: str) -> dict[str, dict[str, torch.Tensor]]:
        """The h94 dicts of each variant (fixed seeds: the same tensors on every call)."""
        seeds = {"plain": 21, "plus": 22, "plus-face": 23, "full-face": 24}
        return tiny_ip_adapter(self._unet_a(), variant, seed=seeds[variant])

    def _ip_safetensors(self, variant: str, name: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        flat = {f"{p}.{k}": v for p, d in self.ip_dicts(variant).items() for k, v in d.items()}
        return save_safetensors_atomic(flat, path)

    def _unet_a(self) -> UNet2DConditionModel:
        return UNet2DConditionModel.from_pretrained(str(self.base_a / "unet"))

    def _sc_original(self, folder: Path) -> dict[str, torch.Tensor]:
        sc = SparseControlNetModel.from_pretrained(str(folder))
        return sparsectrl_to_original(sc.state_dict(), sc.config)

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
