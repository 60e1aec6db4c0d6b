"""ControlNets in every layout: reading, building, converting, inspecting, the kind told by names, refusals."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import ControlNetModel

from motion_adapters.cli import main as cli
from motion_adapters.convert import convert
from motion_adapters.errors import AdapterFormatError, MotionAdapterError
from motion_adapters.formats import ours
from motion_adapters.formats.controlnet import (
    V11_KINDS,
    ControlNetWeights,
    control_kind_from_name,
    diffusers_to_ldm,
    ldm_to_diffusers,
)
from motion_adapters.formats.ldm import diffusers_to_ldm as unet_to_ldm
from motion_adapters.headers import file_kind
from motion_adapters.io import read_safetensors_metadata, read_state_dict, save_safetensors_atomic
from motion_adapters.kinds import KIND_CONTROLNET, KIND_MOTION, KIND_SPARSECTRL, sniff_keys
from motion_adapters.loading import inspect_path, load_adapter
from motion_adapters.swap import build_controlnet, check_controlnet_fits_base
from tests.tiny_models import tiny_t2i_adapter

LDM_LAYOUTS = ["cn_ldm", "cn_ldm_prefixed", "cn_pth_fp16", "cn_fp16"]
FP16_LAYOUTS = {"cn_pth_fp16", "cn_fp16"}


@pytest.fixture(scope="module")
def ref(tiny) -> dict[str, torch.Tensor]:
    return ControlNetModel.from_pretrained(str(tiny.cn_dir)).state_dict()


@pytest.fixture(scope="module")
def unet_config(tiny) -> dict:
    return json.loads((tiny.base_a / "unet" / "config.json").read_text())


def assert_same_tensors(got: dict, want: dict, fp16: bool = False) -> None:
    assert got.keys() == want.keys()
    for k, v in want.items():
        expected = v.half().float() if fp16 else v
        assert torch.equal(got[k].float(), expected), k


def inputs(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(sample=torch.randn(1, 4, 8, 8, generator=g), timestep=torch.tensor(10),
                encoder_hidden_states=torch.randn(1, 5, 32, generator=g),
                controlnet_cond=torch.rand(1, 3, 64, 64, generator=g), return_dict=False)


@torch.no_grad()
def residuals(model: ControlNetModel, seed: int = 0) -> list[torch.Tensor]:
    down, mid = model(**inputs(seed))
    return [*down, mid]


# ------------------------------------------------------------------------------------------------- reading
def test_diffusers_folder_loads_with_its_config(tiny, ref):
    cw = load_adapter(tiny.cn_dir, expect=KIND_CONTROLNET)
    assert isinstance(cw, ControlNetWeights)
    assert (cw.source_format, cw.control_kind, cw.family, cw.guessed) == ("diffusers-folder", "canny", "sd15", ())
    assert cw.config["attention_head_dim"] == 4 and cw.config["block_out_channels"] == [32, 32, 64, 64]
    assert_same_tensors(cw.state_dict, ref)


@pytest.mark.parametrize("layout", LDM_LAYOUTS)
def test_lllyasviel_single_files_load_the_folders_tensors(tiny, ref, layout):
    path = getattr(tiny, layout)
    cw = load_adapter(path, expect=KIND_CONTROLNET)
    assert cw.source_format == "ldm-single-file" and cw.family == "sd15"
    assert_same_tensors(cw.state_dict, ref, fp16=layout in FP16_LAYOUTS)
    assert cw.state_dict["conv_in.weight"].dtype == (torch.float16 if layout in FP16_LAYOUTS else torch.float32)
    want = ControlNetModel.from_pretrained(str(tiny.cn_dir)).config
    for key in ("block_out_channels", "layers_per_block", "cross_attention_dim", "conditioning_channels",
                "conditioning_embedding_out_channels", "down_block_types", "use_linear_projection", "in_channels"):
        assert cw.config[key] == (list(want[key]) if isinstance(want[key], tuple) else want[key]), key
    assert cw.config["attention_head_dim"] == 8  # not in the weights: SD1.5's heads until a base says otherwise
    assert set(cw.guessed) == {"attention_head_dim", "norm_num_groups"}


def test_real_lllyasviel_key_names_are_written_and_read(tiny, ref):
    raw, _ = read_state_dict(tiny.cn_ldm_prefixed)
    for key in ("time_embed.0.weight", "input_blocks.0.0.weight", "input_blocks.1.1.proj_in.weight",
                "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "input_blocks.1.0.in_layers.2.weight",
                "input_blocks.3.0.op.weight", "input_blocks.11.0.out_layers.3.weight", "middle_block.1.proj_out.bias",
                "middle_block.2.emb_layers.1.weight", "input_hint_block.0.weight", "input_hint_block.14.bias",
                "zero_convs.0.0.weight", "zero_convs.11.0.bias", "middle_block_out.0.weight"):
        assert "control_model." + key in raw, key
    assert len(raw) == len(ref)
    bare, _ = read_state_dict(tiny.cn_ldm)
    assert "input_hint_block.0.weight" in bare and not any(k.startswith("control_model.") for k in bare)


def test_diffusers_single_file_loads_our_original_export(tiny, ref, tmp_path):
    out = convert(tiny.cn_dir, tmp_path / "control_v11p_sd15_canny.safetensors", "original")
    theirs = ControlNetModel.from_single_file(str(out), config=str(tiny.cn_dir), local_files_only=True)
    assert_same_tensors(theirs.state_dict(), ref)


def test_a_v10_file_with_the_whole_sd_model_keeps_only_the_controlnet(tiny, ref, tmp_path):
    base = load_adapter(tiny.base_b)
    full = {**unet_to_ldm(base.unet, unet_config=base.configs["unet"]),
            **read_state_dict(tiny.cn_ldm_prefixed)[0]}
    path = save_safetensors_atomic(full, tmp_path / "control_sd15_canny.safetensors")
    assert sniff_keys(full) == KIND_CONTROLNET
    cw = load_adapter(path, expect=KIND_CONTROLNET)
    assert_same_tensors(cw.state_dict, ref)
    assert cw.control_kind == "canny"


def test_a_diffusers_key_single_file_and_ours_load(tiny, ref, tmp_path):
    single = shutil.copy(tiny.cn_dir / "diffusion_pytorch_model.safetensors", tmp_path / "sd-controlnet-seg.safetensors")
    cw = load_adapter(single, expect=KIND_CONTROLNET)
    assert (cw.source_format, cw.control_kind) == ("diffusers-single-file", "seg")
    assert_same_tensors(cw.state_dict, ref)
    folder = load_adapter(tiny.cn_dir)
    folder.control_kind = "silhouette"
    path = ours.save_controlnet(folder, tmp_path / "mine.safetensors")
    back = load_adapter(path, expect=KIND_CONTROLNET)
    assert (back.source_format, back.control_kind, back.guessed) == ("ours", "silhouette", ())
    assert back.config == folder.config
    assert_same_tensors(back.state_dict, ref)


def test_sniffing_tells_controlnets_from_sparsectrl_and_t2i_adapters(tiny):
    assert file_kind(tiny.cn_ldm) == file_kind(tiny.cn_pth_fp16) == KIND_CONTROLNET
    assert file_kind(tiny.cn_dir / "diffusion_pytorch_model.safetensors") == KIND_CONTROLNET
    sparse = {"controlnet_cond_embedding.conv_in.weight": None, "controlnet_down_blocks.0.weight": None,
              "down_blocks.0.motion_modules.0.proj_in.weight": None}
    assert sniff_keys(sparse) == KIND_SPARSECTRL
    assert "T2I-Adapter" in file_kind(tiny.t2i_adapter) and "T2I-Adapter" in file_kind(tiny.t2i_adapter_orig)


# --------------------------------------------------------------------------------------------- control kind
V11 = {
    "control_v11p_sd15_canny.pth": "canny", "control_v11f1p_sd15_depth.pth": "depth",
    "control_v11p_sd15_inpaint.pth": "inpaint", "control_v11e_sd15_ip2p.pth": "ip2p",
    "control_v11p_sd15_lineart.pth": "lineart", "control_v11p_sd15s2_lineart_anime.pth": "lineart_anime",
    "control_v11p_sd15_mlsd.pth": "mlsd", "control_v11p_sd15_normalbae.pth": "normalbae",
    "control_v11p_sd15_openpose.pth": "openpose", "control_v11p_sd15_scribble.pth": "scribble",
    "control_v11p_sd15_seg.pth": "seg", "control_v11e_sd15_shuffle.pth": "shuffle",
    "control_v11p_sd15_softedge.pth": "softedge", "control_v11f1e_sd15_tile.pth": "tile",
}
V10_AND_OTHERS = {
    "control_sd15_canny.pth": "canny", "control_sd15_hed.pth": "hed", "control_sd15_normal.pth": "normal",
    "control_canny-fp16.safetensors": "canny", "control_openpose-fp16.safetensors": "openpose",
    "sd-controlnet-canny": "canny", "sd-controlnet-mlsd": "mlsd", "control_v11p_sd15_canny": "canny",
    "control_v11p_sd15s2_lineart_anime.fp16.safetensors": "lineart_anime",
    "control_v11p_sd15_lineart.safetensors": "lineart", "my_controlnet.safetensors": None,
    "diffusion_pytorch_model.safetensors": None, "cannyish_model.pth": None,
}


@pytest.mark.parametrize(("name", "kind"), [*V11.items(), *V10_AND_OTHERS.items()])
def test_control_kind_from_the_name(name, kind):
    assert control_kind_from_name(f"/models/{name}") == kind


def test_control_kind_from_a_hub_cache_snapshot():
    path = "/cache/models--lllyasviel--control_v11p_sd15_openpose/snapshots/0123abcd"
    assert control_kind_from_name(path) == "openpose"


def test_all_fourteen_v11_kinds_are_covered():
    assert sorted(V11.values()) == sorted(V11_KINDS) and len(V11_KINDS) == 14


# ---------------------------------------------------------------------------------------------- building
def test_build_controlnet_equals_diffusers_from_pretrained(tiny, ref):
    theirs = ControlNetModel.from_pretrained(str(tiny.cn_dir)).eval()
    mine = build_controlnet(load_adapter(tiny.cn_dir, expect=KIND_CONTROLNET), torch.float32, "cpu")
    assert isinstance(mine, ControlNetModel) and not mine.training
    assert_same_tensors(mine.state_dict(), ref)
    out, want = residuals(mine), residuals(theirs)
    assert len(out) == 13 and any(t.abs().max() > 0 for t in out)  # zero convs filled: it has an effect
    for a, b in zip(out, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["cn_ldm", "cn_pth_fp16"])
def test_a_single_file_fitted_to_its_base_computes_what_the_folder_does(tiny, unet_config, layout):
    cw = load_adapter(getattr(tiny, layout), expect=KIND_CONTROLNET)
    check_controlnet_fits_base(cw, unet_config, getattr(tiny, layout))
    assert cw.config["attention_head_dim"] == 4 and cw.config["norm_num_groups"] == 8  # the base's
    model = build_controlnet(cw, torch.float32)
    theirs = ControlNetModel.from_pretrained(str(tiny.cn_dir)).eval()
    if layout in FP16_LAYOUTS:
        theirs = theirs.half().float()
    for a, b in zip(residuals(model), residuals(theirs), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_build_casts_and_owns_its_storage(tiny):
    cw = load_adapter(tiny.cn_ldm, expect=KIND_CONTROLNET)
    model = build_controlnet(cw, torch.float16)
    assert {p.dtype for p in model.parameters()} == {torch.float16}
    assert not any(p.is_meta for p in model.parameters())
    fp32 = build_controlnet(cw)
    assert fp32.conv_in.weight.data_ptr() != cw.state_dict["conv_in.weight"].data_ptr()


# ------------------------------------------------------------------------------------------------- convert
def test_convert_to_diffusers_gives_a_folder_diffusers_loads(tiny, ref, tmp_path):
    out = tmp_path / "cn"
    assert cli(["convert", str(tiny.cn_ldm_prefixed), str(out), "--to", "diffusers"]) == 0
    assert_same_tensors(ControlNetModel.from_pretrained(str(out)).state_dict(), ref)
    cw = load_adapter(out, expect=KIND_CONTROLNET)
    assert cw.source_format == "diffusers-folder"


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_convert_to_original_loads_back_equal(tiny, ref, tmp_path, suffix):
    out = tmp_path / f"control_v11p_sd15_mlsd{suffix}"
    assert cli(["convert", str(tiny.cn_dir), str(out), "--to", "original"]) == 0
    raw, _ = read_state_dict(out)
    assert all(k.startswith("control_model.") for k in raw)
    cw = load_adapter(out, expect=KIND_CONTROLNET)
    assert cw.source_format == "ldm-single-file" and cw.control_kind == "mlsd"
    assert_same_tensors(cw.state_dict, ref)
    assert ldm_to_diffusers(diffusers_to_ldm(ref, {"layers_per_block": 2})).keys() == ref.keys()


def test_convert_to_ours_keeps_config_and_kind(tiny, ref, tmp_path):
    out = tmp_path / "cn.safetensors"
    assert cli(["convert", str(tiny.cn_dir), str(out), "--to", "ours"]) == 0
    md = ours.parse_metadata(read_safetensors_metadata(out))
    assert (md["kind"], md["control_kind"], md["base_family"]) == ("controlnet", "canny", "sd15")
    back = load_adapter(out, expect=KIND_CONTROLNET)
    assert back.config == load_adapter(tiny.cn_dir).config and back.control_kind == "canny"
    assert_same_tensors(back.state_dict, ref)


def test_convert_refusals_follow_the_other_kinds_rules(tiny, tmp_path, capsys):
    with pytest.raises(MotionAdapterError, match=r"\.safetensors"):
        convert(tiny.cn_dir, tmp_path / "cn.pth", "ours")
    with pytest.raises(MotionAdapterError, match="ours, original or diffusers"):
        convert(tiny.cn_dir, tmp_path / "cn.safetensors", "kohya")
    existing = tmp_path / "there.safetensors"
    existing.write_bytes(b"x")
    with pytest.raises(MotionAdapterError, match="exists already"):
        convert(tiny.cn_dir, existing, "original")
    assert convert(tiny.cn_dir, existing, "original", overwrite=True) == existing
    assert load_adapter(existing, expect=KIND_CONTROLNET).control_kind is None
    assert cli(["convert", str(tiny.cn_truncated), str(tmp_path / "x"), "--to", "diffusers"]) == 2
    assert str(tiny.cn_truncated) in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- inspect
def test_inspect_reports_a_controlnet(tiny, capsys):
    report = inspect_path(tiny.cn_fp16)
    assert report["kind"] == KIND_CONTROLNET and report["control_kind"] == "canny"
    assert (report["format"], report["base_family"], report["conditioning_channels"]) == (
        "ldm-single-file", "sd15", 3)
    assert report["dtype"] == "float16" and report["file_size_bytes"] == tiny.cn_fp16.stat().st_size
    assert report["num_params"] == sum(t.numel() for t in read_state_dict(tiny.cn_fp16)[0].values())
    folder = inspect_path(tiny.cn_dir)
    assert (folder["format"], folder["dtype"], folder["num_params"]) == (
        "diffusers-folder", "float32", report["num_params"])
    assert cli(["inspect", str(tiny.cn_ldm_prefixed)]) == 0
    text = capsys.readouterr().out
    assert "controlnet" in text and "control kind: canny" in text and "conditioning channels: 3" in text
    assert cli(["inspect", "--json", str(tiny.cn_sdxl)]) == 0
    sdxl = json.loads(capsys.readouterr().out)
    assert (sdxl["kind"], sdxl["base_family"], sdxl["control_kind"]) == (KIND_CONTROLNET, "sdxl", "canny")


def test_inspect_shows_our_header(tiny, tmp_path):
    cw = load_adapter(tiny.cn_dir)
    path = ours.save_controlnet(cw, tmp_path / "x.safetensors", training={"steps": 3})
    report = inspect_path(path)
    assert report["format"] == "ours" and report["metadata"]["motion_adapters"]["training"] == {"steps": 3}


# ------------------------------------------------------------------------------------------------ refusals
def test_an_sdxl_controlnet_on_an_sd15_base_is_refused_naming_both(tiny, unet_config):
    cw = load_adapter(tiny.cn_sdxl, expect=KIND_CONTROLNET)
    assert cw.family == "sdxl"
    with pytest.raises(AdapterFormatError) as e:
        check_controlnet_fits_base(cw, unet_config, tiny.cn_sdxl)
    msg = str(e.value)
    assert str(tiny.cn_sdxl) in msg and "SD1.5 base" in msg and "SDXL ControlNet" in msg and "2048" in msg


@pytest.mark.parametrize(("key", "value"), [("cross_attention_dim", 64), ("block_out_channels", [32, 64, 64, 64]),
                                            ("layers_per_block", 1)])
def test_architecture_mismatches_are_refused(tiny, unet_config, key, value):
    cw = load_adapter(tiny.cn_dir)
    cw.config[key] = value
    with pytest.raises(AdapterFormatError, match=rf"{key} .* \(the base UNet's\).*{key}") as e:
        check_controlnet_fits_base(cw, unet_config, tiny.cn_dir)
    assert str(tiny.cn_dir) in str(e.value)


def test_sd2_t2i_truncated_and_wrong_kinds_are_refused_naming_the_file(tiny, tmp_path):
    cases = [
        (tiny.cn_sd2, "an SD2 ControlNet"),
        (tiny.t2i_adapter, "T2I-Adapter, not a ControlNet"),
        (tiny.t2i_adapter_orig, "T2I-Adapter, not a ControlNet"),
        (tiny.cn_truncated, "truncated"),
        (tiny.mm_a_orig, "expected an SD1.5 ControlNet, found a motion module"),
        (tiny.mm_a_dir, "expected an SD1.5 ControlNet, found a motion module"),
    ]
    folder = tmp_path / "t2iadapter_depth_sd15v2"
    tiny_t2i_adapter(1).save_pretrained(str(folder))
    cases.append((folder, "T2I-Adapter, not a ControlNet"))
    for path, what in cases:
        with pytest.raises(AdapterFormatError) as e:
            load_adapter(path, expect=KIND_CONTROLNET)
        assert str(path) in str(e.value) and what in str(e.value), str(e.value)
    with pytest.raises(AdapterFormatError, match="found a controlnet"):
        load_adapter(tiny.cn_ldm, expect=KIND_MOTION)
    with pytest.raises(AdapterFormatError, match="found a controlnet"):
        load_adapter(tiny.cn_dir, expect=KIND_MOTION)


def test_a_controlnet_missing_tensors_is_refused(tiny, tmp_path):
    raw, _ = read_state_dict(tiny.cn_ldm)
    raw.pop("zero_convs.5.0.weight")
    path = save_safetensors_atomic(raw, tmp_path / "control_v11p_sd15_canny.safetensors")
    with pytest.raises(AdapterFormatError, match="controlnet_down_blocks.5.weight") as e:
        load_adapter(path, expect=KIND_CONTROLNET)
    assert str(path) in str(e.value)


def test_convert_config_gives_a_single_file_its_architecture(tiny, tmp_path):
    out = tmp_path / "cn.safetensors"
    assert cli(["convert", str(tiny.cn_ldm), str(out), "--to", "ours", "--config", str(tiny.cn_dir)]) == 0
    back = load_adapter(out, expect=KIND_CONTROLNET)
    assert back.config == load_adapter(tiny.cn_dir).config and back.guessed == ()
    assert back.control_kind == "depth"  # told by the source's name, kept in our header


def test_an_sdxl_controlnet_round_trips_through_the_original_layout(tiny, tmp_path):
    folder = load_adapter(tiny.cn_sdxl)
    out = convert(tiny.cn_sdxl, tmp_path / "controlnet_sdxl_canny.safetensors", "original")
    raw, _ = read_state_dict(out)
    assert "control_model.label_emb.0.0.weight" in raw
    cw = load_adapter(out, expect=KIND_CONTROLNET)
    assert cw.family == "sdxl" and "addition_time_embed_dim" in cw.guessed
    assert_same_tensors(cw.state_dict, folder.state_dict)
    for key in ("block_out_channels", "transformer_layers_per_block", "addition_embed_type",
                "projection_class_embeddings_input_dim", "use_linear_projection", "cross_attention_dim"):
        assert cw.config[key] == folder.config[key], key
