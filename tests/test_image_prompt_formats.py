"""SparseCtrl encoders and IP-Adapters in every layout: reading, building, fitting, converting, inspecting,
the image-encoder folder, refusals naming the file."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import AnimateDiffPipeline, SparseControlNetModel, UNet2DConditionModel
from safetensors.torch import save_file

from motion_adapters.cli import main as cli
from motion_adapters.convert import convert
from motion_adapters.errors import AdapterFormatError, MotionAdapterError, UnsafePickleError
from motion_adapters.formats import ours
from motion_adapters.formats.ip_adapter import (
    IPAdapterWeights,
    check_image_encoder_fits,
    check_ip_adapter_fits_base,
    cross_attention_widths,
    default_image_encoder,
    read_image_encoder,
)
from motion_adapters.formats.motion_module import is_pe_key
from motion_adapters.formats.sparsectrl import SparseCtrlWeights
from motion_adapters.headers import file_kind
from motion_adapters.io import read_safetensors_metadata, read_state_dict, save_safetensors_atomic
from motion_adapters.kinds import KIND_CONTROLNET, KIND_IP_ADAPTER, KIND_MOTION, KIND_SPARSECTRL, sniff_keys
from motion_adapters.loading import inspect_path, load_adapter
from motion_adapters.schedulers import make_scheduler
from motion_adapters.swap import build_sparsectrl, check_sparsectrl_fits_base
from motion_adapters.tokenizer import clip_tokenizer
from tests.tiny_models import TINY_UNET, tiny_motion_adapter, tiny_sd_components, tiny_sparsectrl

SC_DIRS = {"rgb": "sc_rgb_dir", "scribble": "sc_scribble_dir"}
SC_CKPTS = {"rgb": "sc_rgb_ckpt", "scribble": "sc_scribble_ckpt"}
IP_FILES = {"plain": "ip_bin", "plus": "ip_plus_st", "plus-face": "ip_plus_face", "full-face": "ip_full_face"}


@pytest.fixture(scope="module")
def unet_config(tiny) -> dict:
    return json.loads((tiny.base_a / "unet" / "config.json").read_text())


def no_pe(sd: dict) -> dict:
    return {k: v for k, v in sd.items() if not is_pe_key(k)}


def assert_same_tensors(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert torch.equal(got[k], v), k


def folder_tensors(tiny, kind: str) -> dict:
    return no_pe(SparseControlNetModel.from_pretrained(str(getattr(tiny, SC_DIRS[kind]))).state_dict())


def flat_original(tiny, kind: str, tmp_path) -> str:
    """The original-layout state dict of a SparseCtrl .ckpt as a flat .safetensors (what from_single_file reads)."""
    raw, _ = read_state_dict(getattr(tiny, SC_CKPTS[kind]))
    return str(save_safetensors_atomic(raw, tmp_path / f"v3_sd15_sparsectrl_{kind}.safetensors"))


@torch.no_grad()
def sc_residuals(model: SparseControlNetModel, kind: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    frames = 2
    size = 8 if kind == "rgb" else 64
    cond = torch.rand(1, model.config.conditioning_channels, frames, size, size, generator=g)
    down, mid = model(sample=torch.randn(1, 4, frames, 8, 8, generator=g), timestep=torch.tensor(10),
                      encoder_hidden_states=torch.randn(frames, 5, 32, generator=g), controlnet_cond=cond,
                      conditioning_mask=torch.ones(1, 1, frames, size, size), return_dict=False)
    return [*down, mid]


# ================================================================================================ SparseCtrl
@pytest.mark.parametrize("kind", ["rgb", "scribble"])
def test_a_sparsectrl_folder_loads_with_its_config(tiny, kind):
    sw = load_adapter(getattr(tiny, SC_DIRS[kind]), expect=KIND_SPARSECTRL)
    assert isinstance(sw, SparseCtrlWeights)
    assert (sw.source_format, sw.control_kind, sw.family, sw.guessed) == ("diffusers-folder", kind, "sd15", ())
    assert sw.conditioning_channels == (4 if kind == "rgb" else 3)
    assert_same_tensors(sw.state_dict, folder_tensors(tiny, kind))


@pytest.mark.parametrize("kind", ["rgb", "scribble"])
def test_the_original_layout_loads_what_diffusers_reads_from_it(tiny, kind, tmp_path):
    sw = load_adapter(getattr(tiny, SC_CKPTS[kind]), expect=KIND_SPARSECTRL)
    assert (sw.source_format, sw.control_kind, sw.family) == ("original", kind, "sd15")
    folder = getattr(tiny, SC_DIRS[kind])
    theirs = SparseControlNetModel.from_single_file(flat_original(tiny, kind, tmp_path), config=str(folder),
                                                    local_files_only=True)
    assert_same_tensors(sw.state_dict, no_pe(theirs.state_dict()))
    want = SparseControlNetModel.from_pretrained(str(folder)).config
    for key in ("block_out_channels", "layers_per_block", "cross_attention_dim", "conditioning_channels",
                "concat_conditioning_mask", "use_simplified_condition_embedding", "down_block_types",
                "motion_max_seq_length", "motion_num_attention_heads", "in_channels", "use_linear_projection"):
        assert sw.config[key] == (list(want[key]) if isinstance(want[key], tuple) else want[key]), key
    if kind == "scribble":
        assert sw.config["conditioning_embedding_out_channels"] == list(want["conditioning_embedding_out_channels"])
    assert set(sw.guessed) == {"attention_head_dim", "norm_num_groups"}


def test_the_original_layout_uses_animatediffs_key_names(tiny):
    raw, _ = read_state_dict(tiny.sc_rgb_ckpt)
    mm = "down_blocks.0.motion_modules.0.temporal_transformer"
    for key in (f"{mm}.transformer_blocks.0.attention_blocks.0.to_q.weight", f"{mm}.transformer_blocks.0.norms.0.weight",
                f"{mm}.transformer_blocks.0.ff_norm.bias", f"{mm}.transformer_blocks.0.attention_blocks.0.pos_encoder.pe",
                f"{mm}.norm.weight", f"{mm}.proj_in.weight", "controlnet_cond_embedding.weight",
                "controlnet_down_blocks.11.weight", "controlnet_mid_block.bias", "down_blocks.0.attentions.0.proj_in.weight"):
        assert key in raw, key
    assert raw[f"{mm}.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"].shape == (1, 32, 32)
    assert not any("attention_blocks.1" in k or "animatediff_config" in k for k in raw)
    scribble, _ = read_state_dict(tiny.sc_scribble_ckpt)
    assert "controlnet_cond_embedding.conv_in.weight" in scribble and "animatediff_config" not in scribble
    assert sniff_keys(raw) == sniff_keys(scribble) == KIND_SPARSECTRL
    assert file_kind(tiny.sc_rgb_dir / "diffusion_pytorch_model.safetensors") == KIND_SPARSECTRL


def test_a_diffusers_key_single_file_and_ours_load(tiny, tmp_path):
    single = shutil.copy(tiny.sc_rgb_dir / "diffusion_pytorch_model.safetensors", tmp_path / "sparsectrl.safetensors")
    sw = load_adapter(single, expect=KIND_SPARSECTRL)
    assert (sw.source_format, sw.control_kind) == ("diffusers-single-file", "rgb")
    assert_same_tensors(sw.state_dict, folder_tensors(tiny, "rgb"))
    folder = load_adapter(tiny.sc_scribble_dir)
    path = ours.save_sparsectrl(folder, tmp_path / "mine.safetensors", training={"steps": 2})
    back = load_adapter(path, expect=KIND_SPARSECTRL)
    assert (back.source_format, back.control_kind, back.guessed) == ("ours", "scribble", ())
    assert back.config == folder.config
    assert_same_tensors(back.state_dict, folder.state_dict)


@pytest.mark.parametrize("kind", ["rgb", "scribble"])
def test_a_single_file_fitted_to_its_base_computes_what_the_folder_does(tiny, unet_config, kind):
    path = getattr(tiny, SC_CKPTS[kind])
    sw = load_adapter(path, expect=KIND_SPARSECTRL)
    check_sparsectrl_fits_base(sw, unet_config, path)
    assert sw.config["attention_head_dim"] == 4 and sw.config["norm_num_groups"] == 8  # the base's
    mine = build_sparsectrl(sw, torch.float32, "cpu")
    assert isinstance(mine, SparseControlNetModel) and not mine.training
    assert not any(p.is_meta for p in mine.parameters())
    assert mine.conv_in.weight.data_ptr() != sw.state_dict["conv_in.weight"].data_ptr()
    theirs = SparseControlNetModel.from_pretrained(str(getattr(tiny, SC_DIRS[kind]))).eval()
    assert_same_tensors(mine.state_dict(), theirs.state_dict())  # pe tables computed alike
    out = sc_residuals(mine, kind)
    assert len(out) == 13 and any(t.abs().max() > 0 for t in out)
    for a, b in zip(out, sc_residuals(theirs, kind), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert {p.dtype for p in build_sparsectrl(sw, torch.float16).parameters()} == {torch.float16}


@pytest.mark.parametrize(("key", "value"), [("cross_attention_dim", 64), ("block_out_channels", [32, 64, 64, 64]),
                                            ("layers_per_block", 1)])
def test_sparsectrl_architecture_mismatches_are_refused_naming_the_file(tiny, unet_config, key, value):
    sw = load_adapter(tiny.sc_rgb_dir)
    sw.config[key] = value
    with pytest.raises(AdapterFormatError, match=rf"SparseCtrl encoder with {key} .*\(the base UNet's\)") as e:
        check_sparsectrl_fits_base(sw, unet_config, tiny.sc_rgb_dir)
    assert str(tiny.sc_rgb_dir) in str(e.value)


def test_sparsectrl_refusals_name_the_file(tiny, tmp_path):
    unet = UNet2DConditionModel(**{**TINY_UNET, "cross_attention_dim": 2048})
    sdxl = tmp_path / "sparsectrl_sdxl.safetensors"
    save_file(tiny_sparsectrl(unet, "rgb", 3).state_dict(), str(sdxl))
    raw, _ = read_state_dict(tiny.sc_rgb_ckpt)
    truncated = tmp_path / "v3_sd15_sparsectrl_rgb.safetensors"
    data = save_safetensors_atomic(raw, truncated).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    missing = save_safetensors_atomic({k: v for k, v in raw.items() if "controlnet_down_blocks.3." not in k},
                                      tmp_path / "sc_missing.safetensors")
    cases = [
        (sdxl, KIND_SPARSECTRL, "an SDXL one (cross_attention_dim 2048)"),
        (truncated, KIND_SPARSECTRL, "truncated"),
        (missing, KIND_SPARSECTRL, "SparseCtrl weights matching the loaded model, found 2 of its 476 tensors "
                                   "missing (first: 'controlnet_down_blocks.3.bias')"),
        (tiny.sc_rgb_ckpt, KIND_MOTION, "expected an AnimateDiff motion module, found a SparseCtrl encoder, not a "
                                        "motion module"),
        (tiny.sc_scribble_dir, KIND_MOTION, "a SparseCtrl encoder, not a motion module"),
        (tiny.sc_rgb_dir, KIND_CONTROLNET, "expected an SD1.5 ControlNet, found a SparseCtrl encoder"),
        (tiny.mm_a_orig, KIND_SPARSECTRL, "expected an SD1.5 SparseCtrl encoder, found a motion module"),
        (tiny.cn_ldm, KIND_SPARSECTRL, "expected an SD1.5 SparseCtrl encoder, found a controlnet"),
    ]
    for path, expect, what in cases:
        with pytest.raises(AdapterFormatError) as e:
            load_adapter(path, expect=expect)
        assert str(path) in str(e.value) and what in str(e.value), str(e.value)


def test_sparsectrl_convert_round_trips(tiny, tmp_path, capsys):
    ref = folder_tensors(tiny, "rgb")
    out = tmp_path / "sc"
    assert cli(["convert", str(tiny.sc_rgb_ckpt), str(out), "--to", "diffusers"]) == 0
    assert json.loads((out / "config.json").read_text())["_class_name"] == "SparseControlNetModel"
    assert_same_tensors(no_pe(SparseControlNetModel.from_pretrained(str(out)).state_dict()), ref)
    orig = tmp_path / "v3_sd15_sparsectrl_rgb.safetensors"
    assert cli(["convert", str(tiny.sc_rgb_dir), str(orig), "--to", "original"]) == 0
    back = load_adapter(orig, expect=KIND_SPARSECTRL)
    assert back.source_format == "original" and back.control_kind == "rgb"
    assert_same_tensors(back.state_dict, ref)
    theirs = SparseControlNetModel.from_single_file(str(orig), config=str(tiny.sc_rgb_dir), local_files_only=True)
    assert_same_tensors(no_pe(theirs.state_dict()), ref)
    assert convert(tiny.sc_scribble_dir, tmp_path / "scribble.ckpt", "original").suffix == ".ckpt"
    mine = tmp_path / "sc.safetensors"
    assert cli(["convert", str(tiny.sc_scribble_ckpt), str(mine), "--to", "ours", "--config",
                str(tiny.sc_scribble_dir)]) == 0
    md = ours.parse_metadata(read_safetensors_metadata(mine))
    assert (md["kind"], md["control_kind"], md["base_family"]) == ("sparsectrl", "scribble", "sd15")
    assert load_adapter(mine).config == load_adapter(tiny.sc_scribble_dir).config
    with pytest.raises(MotionAdapterError, match="SparseCtrl encoder exports to ours, original or diffusers"):
        convert(tiny.sc_rgb_dir, tmp_path / "x.safetensors", "kohya")


def test_inspect_reports_a_sparsectrl_encoder(tiny, capsys):
    report = inspect_path(tiny.sc_rgb_ckpt)
    assert (report["kind"], report["control_kind"], report["format"], report["base_family"]) == (
        KIND_SPARSECTRL, "rgb", "original", "sd15")
    assert (report["conditioning_channels"], report["conditioning_mask"], report["max_frames"]) == (4, True, 32)
    assert report["channels"] == [32, 32, 64, 64] and report["num_modules"] == 8
    assert report["num_params"] == sum(t.numel() for t in folder_tensors(tiny, "rgb").values())
    assert report["dtype"] == "float32" and report["file_size_bytes"] == tiny.sc_rgb_ckpt.stat().st_size
    assert cli(["inspect", str(tiny.sc_scribble_dir)]) == 0
    text = capsys.readouterr().out
    assert "sparsectrl" in text and "control kind: scribble" in text and "conditioning channels: 3" in text


# =============================================================================================== IP-Adapters
@pytest.mark.parametrize(("variant", "tokens"), [("plain", 4), ("plus", 16), ("plus-face", 16), ("full-face", 257)])
def test_each_h94_variant_loads(tiny, variant, tokens):
    path = getattr(tiny, IP_FILES[variant])
    ipw = load_adapter(path, expect=KIND_IP_ADAPTER)
    assert isinstance(ipw, IPAdapterWeights)
    assert (ipw.variant, ipw.family, ipw.cross_attention_dim, ipw.image_embed_dim, ipw.num_tokens) == (
        variant, "sd15", 32, 32, tokens)
    assert ipw.source_format == "h94" and ipw.num_layers == 16 and ipw.uses_hidden_states == (variant != "plain")
    want = tiny.ip_dicts(variant)
    for part in ("image_proj", "ip_adapter"):
        assert_same_tensors(getattr(ipw, part), want[part])
    assert file_kind(path) == KIND_IP_ADAPTER


def test_a_plus_face_file_renamed_is_read_as_plus(tiny, tmp_path):
    renamed = shutil.copy(tiny.ip_plus_face, tmp_path / "my_adapter.safetensors")
    assert load_adapter(renamed).variant == "plus"


@pytest.fixture(scope="module")
def tiny_pipe():
    c = tiny_sd_components(0)
    return AnimateDiffPipeline(vae=c.vae, text_encoder=c.text_encoder, tokenizer=clip_tokenizer(), unet=c.unet,
                               motion_adapter=tiny_motion_adapter(0), scheduler=make_scheduler("ddim"))


@pytest.mark.parametrize("variant", ["plain", "plus", "full-face"])
def test_diffusers_load_ip_adapter_takes_what_we_read(tiny, tiny_pipe, variant):
    ipw = load_adapter(getattr(tiny, IP_FILES[variant]), expect=KIND_IP_ADAPTER)
    tiny_pipe.load_ip_adapter(ipw.as_diffusers(), subfolder="", weight_name="", image_encoder_folder=None)
    try:
        procs = [p for n, p in tiny_pipe.unet.attn_processors.items() if hasattr(p, "to_k_ip")]
        assert len(procs) == ipw.num_layers
        for i, proc in enumerate(procs):
            assert torch.equal(proc.to_k_ip[0].weight, ipw.ip_adapter[f"{2 * i + 1}.to_k_ip.weight"])
            assert torch.equal(proc.to_v_ip[0].weight, ipw.ip_adapter[f"{2 * i + 1}.to_v_ip.weight"])
        assert tiny_pipe.unet.encoder_hid_proj is not None
    finally:
        tiny_pipe.unload_ip_adapter()


def test_an_ip_adapter_fits_the_base_it_was_made_for(tiny, unet_config):
    unet = UNet2DConditionModel.from_pretrained(str(tiny.base_a / "unet"))
    widths = [unet.get_submodule(n.removesuffix(".processor")).to_k.out_features
              for n in unet.attn_processors if n.endswith("attn2.processor")]
    assert cross_attention_widths(unet_config) == widths
    ipw = load_adapter(tiny.ip_plus_st)
    check_ip_adapter_fits_base(ipw, unet_config, tiny.ip_plus_st)
    with pytest.raises(AdapterFormatError, match=r"cross_attention_dim 64 \(the base UNet's\)") as e:
        check_ip_adapter_fits_base(ipw, {**unet_config, "cross_attention_dim": 64}, tiny.ip_plus_st)
    assert str(tiny.ip_plus_st) in str(e.value)
    with pytest.raises(AdapterFormatError, match="with 10 cross-attention layers .* found 16 layers"):
        check_ip_adapter_fits_base(ipw, {**unet_config, "layers_per_block": 1}, tiny.ip_plus_st)
    with pytest.raises(AdapterFormatError, match="layer 1 64 wide"):
        check_ip_adapter_fits_base(ipw, {**unet_config, "block_out_channels": [64, 64, 64, 64]}, tiny.ip_plus_st)


def test_the_image_encoder_folder(tiny, tmp_path):
    assert default_image_encoder(tiny.ip_bin) == tiny.image_encoder_dir
    nested = tmp_path / "ip" / "sd15"
    nested.mkdir(parents=True)
    shutil.copytree(tiny.image_encoder_dir, tmp_path / "ip" / "image_encoder")
    assert default_image_encoder(nested / "ip-adapter_sd15.bin") == tmp_path / "ip" / "image_encoder"
    assert default_image_encoder(tmp_path / "elsewhere" / "ip.bin") is None
    encoder, processor = read_image_encoder(tiny.image_encoder_dir)
    assert encoder.config.projection_dim == 32 and not encoder.training
    assert processor.crop_size["height"] == 32
    pixels = processor(images=[torch.zeros(3, 40, 40).numpy().transpose(1, 2, 0)], return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, 32, 32)
    with torch.no_grad():
        out = encoder(pixels, output_hidden_states=True)
    assert out.image_embeds.shape == (1, 32) and out.hidden_states[-2].shape == (1, 17, 32)
    for variant in ("plain", "plus", "full-face"):
        check_image_encoder_fits(load_adapter(getattr(tiny, IP_FILES[variant])), encoder, tiny.image_encoder_dir)


@pytest.mark.parametrize(("variant", "what"), [("plain", "projection_dim 32"), ("plus-face", "hidden_size 32")])
def test_an_image_encoder_that_does_not_fit_is_refused_naming_both(tiny, variant, what):
    ipw = load_adapter(getattr(tiny, IP_FILES[variant]))
    encoder, _ = read_image_encoder(tiny.image_encoder_bad)
    with pytest.raises(AdapterFormatError, match=what) as e:
        check_image_encoder_fits(ipw, encoder, tiny.image_encoder_bad)
    assert str(tiny.image_encoder_bad) in str(e.value) and str(getattr(tiny, IP_FILES[variant])) in str(e.value)


def test_odd_image_encoder_folders_are_refused_naming_them(tiny, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(tiny.image_encoder_dir / "config.json", no_weights / "config.json")
    text_model = tmp_path / "text_encoder"
    shutil.copytree(tiny.base_a / "text_encoder", text_model)
    broken = tmp_path / "broken"
    shutil.copytree(tiny.image_encoder_dir, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    for folder, what in [(tmp_path / "missing", "nothing at that path"), (empty, "without config.json"),
                         (no_weights, "without weights"), (text_model, "model_type 'clip_text_model'"),
                         (broken, "do not load"), (tiny.ip_bin, "a file")]:
        with pytest.raises(AdapterFormatError) as e:
            read_image_encoder(folder)
        assert str(folder) in str(e.value) and what in str(e.value), str(e.value)


class NotATensor:
    """Pickled into a .bin: weights_only refuses to build it."""


def test_ip_adapter_refusals_name_the_file(tiny, tmp_path):
    pickled = tmp_path / "ip-adapter_sd15.bin"
    torch.save({"image_proj": NotATensor(), "ip_adapter": {}}, pickled)
    with pytest.raises(UnsafePickleError) as e:
        load_adapter(pickled, expect=KIND_IP_ADAPTER)
    assert str(pickled) in str(e.value)
    flat = {f"{p}.{k}": v for p, d in tiny.ip_dicts("plain").items() for k, v in d.items()}
    truncated = save_safetensors_atomic(flat, tmp_path / "ip-adapter_sd15.safetensors")
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    gap = save_safetensors_atomic({k: v for k, v in flat.items() if not k.startswith("ip_adapter.5.")},
                                  tmp_path / "ip_gap.safetensors")
    no_pairs = save_safetensors_atomic({k: v for k, v in flat.items() if not k.startswith("ip_adapter.1.")},
                                       tmp_path / "ip_no_first.safetensors")
    face_id = save_safetensors_atomic({**flat, "ip_adapter.1.to_k_lora.down.weight": torch.zeros(4, 32)},
                                      tmp_path / "ip-adapter-faceid_sd15.safetensors")
    cases = [
        (tiny.ip_sdxl, KIND_IP_ADAPTER, "expected an IP-Adapter for SD1.5 (keys and values from 768-wide text "
                                        "embeddings), found one made for SDXL (2048-wide)"),
        (truncated, KIND_IP_ADAPTER, "truncated"),
        (gap, KIND_IP_ADAPTER, "found no '5.to_k_ip.weight' among its 30 keys"),
        (no_pairs, KIND_IP_ADAPTER, "no tensor '1.to_k_ip.weight'"),
        (face_id, KIND_IP_ADAPTER, "FaceID"),
        (tiny.ip_bin, KIND_CONTROLNET, "expected an SD1.5 ControlNet, found an IP-Adapter"),
        (tiny.mm_a_orig, KIND_IP_ADAPTER, "expected an SD1.5 IP-Adapter, found a motion module"),
    ]
    for path, expect, what in cases:
        with pytest.raises(AdapterFormatError) as e:
            load_adapter(path, expect=expect)
        assert str(path) in str(e.value) and what in str(e.value), str(e.value)


def test_ip_adapter_convert_round_trips(tiny, tmp_path):
    mine = tmp_path / "face.safetensors"
    assert cli(["convert", str(tiny.ip_plus_face), str(mine), "--to", "ours"]) == 0
    md = ours.parse_metadata(read_safetensors_metadata(mine))
    assert (md["kind"], md["base_family"], md["config"]["variant"]) == ("ip_adapter", "sd15", "plus-face")
    back = load_adapter(mine, expect=KIND_IP_ADAPTER)
    assert (back.variant, back.source_format, back.num_tokens) == ("plus-face", "ours", 16)  # the header tells
    orig = tmp_path / "ip-adapter-full-face_sd15.safetensors"
    assert cli(["convert", str(tiny.ip_full_face), str(orig), "--to", "original"]) == 0
    raw, _ = read_state_dict(orig)
    want = {f"{p}.{k}": v for p, d in tiny.ip_dicts("full-face").items() for k, v in d.items()}
    assert_same_tensors(raw, want)
    assert load_adapter(orig).variant == "full-face"
    with pytest.raises(MotionAdapterError, match="an IP-Adapter exports to ours or original"):
        convert(tiny.ip_bin, tmp_path / "ip_folder", "diffusers")
    with pytest.raises(MotionAdapterError, match=r"\.safetensors"):
        convert(tiny.ip_bin, tmp_path / "ip.bin", "original")


def test_inspect_reports_an_ip_adapter(tiny, capsys):
    report = inspect_path(tiny.ip_bin)
    assert (report["kind"], report["variant"], report["format"], report["base_family"]) == (
        KIND_IP_ADAPTER, "plain", "h94", "sd15")
    assert (report["num_tokens"], report["image_embed_dim"], report["cross_attention_dim"], report["num_layers"]) == (
        4, 32, 32, 16)
    assert report["num_params"] == load_adapter(tiny.ip_bin).num_params
    assert cli(["inspect", str(tiny.ip_plus_st)]) == 0
    text = capsys.readouterr().out
    assert "ip_adapter" in text and "variant: plus" in text and "num tokens: 16" in text
    assert "image embed dim: 32" in text and "hidden states" in text
    assert cli(["inspect", str(tiny.ip_sdxl)]) == 2
    assert str(tiny.ip_sdxl) in capsys.readouterr().err
