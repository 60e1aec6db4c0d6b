"""Motion modules in every layout: conversions both ways, diffusers' own loader, sniffing and refusals."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import MotionAdapter

from motion_adapters.cli import main as cli
from motion_adapters.errors import AdapterFormatError
from motion_adapters.formats.motion_module import (
    diffusers_to_original,
    is_pe_key,
    original_to_diffusers,
    sinusoidal_pe,
)
from motion_adapters.io import read_state_dict, save_safetensors_atomic
from motion_adapters.loading import inspect_path, load_adapter
from tests.tiny_models import tiny_motion_adapter


def _no_pe(sd):
    return {k: v for k, v in sd.items() if not is_pe_key(k)}


def test_original_diffusers_round_trip_is_exact():
    adapter = tiny_motion_adapter(0, use_motion_mid_block=True)
    sd = adapter.state_dict()
    orig = diffusers_to_original(sd, 32)
    key = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight"
    assert key in orig
    assert "mid_block.motion_modules.0.temporal_transformer.norm.bias" in orig
    assert not any(".norms." in k and k.endswith(".norm.weight") for k in orig)
    pes = [k for k in orig if k.endswith("pos_encoder.pe")]
    assert len(pes) == 2 * sum(1 for k in sd if k.endswith("pos_embed.pe"))
    back = original_to_diffusers(orig)
    assert back.keys() == _no_pe(sd).keys()
    assert all(torch.equal(back[k], sd[k]) for k in back)
    # the pe tables we write are the ones diffusers computes
    name = next(k for k in sd if k.endswith("pos_embed.pe"))
    assert torch.allclose(sinusoidal_pe(32, sd[name].shape[-1]), sd[name], atol=1e-6)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_exported_original_loads_in_diffusers_from_single_file(tmp_path, tiny, suffix):
    out = tmp_path / f"mm{suffix}"
    assert cli(["convert", str(tiny.mm_a_dir), str(out), "--to", "original"]) == 0
    raw, _ = read_state_dict(out)
    assert any(k.endswith("attention_blocks.1.pos_encoder.pe") for k in raw)
    theirs = MotionAdapter.from_single_file(str(out), config=str(tiny.mm_a_dir), local_files_only=True)
    ref = MotionAdapter.from_pretrained(str(tiny.mm_a_dir))
    a, b = theirs.state_dict(), ref.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_all_layouts_read_to_the_same_tensors(tiny, tmp_path):
    ref = _no_pe(MotionAdapter.from_pretrained(str(tiny.mm_a_dir)).state_dict())
    ours = tmp_path / "mm_ours.safetensors"
    cli(["convert", str(tiny.mm_a_orig), str(ours), "--to", "ours"])
    folder = tmp_path / "mm_diffusers"
    cli(["convert", str(ours), str(folder), "--to", "diffusers"])
    for src in (tiny.mm_a_dir, tiny.mm_a_orig, ours, folder):
        mm = load_adapter(src)
        assert mm.state_dict.keys() == ref.keys(), src
        assert all(torch.equal(mm.state_dict[k], ref[k]) for k in ref), src
        assert mm.config["motion_max_seq_length"] == 32
    assert json.loads((folder / "config.json").read_text())["use_motion_mid_block"] is False


def test_train_py_checkpoint_with_ddp_prefix_and_full_unet(tiny, tmp_path):
    raw, _ = read_state_dict(tiny.mm_a_orig)
    full = {f"module.{k}": v for k, v in raw.items()}
    full["module.conv_in.weight"] = torch.zeros(32, 4, 3, 3)
    full["module.down_blocks.0.resnets.0.conv1.weight"] = torch.zeros(32, 32, 3, 3)
    path = tmp_path / "checkpoint-epoch-3.ckpt"
    torch.save({"epoch": 3, "global_step": 100, "state_dict": full}, path)
    mm = load_adapter(path)
    ref = load_adapter(tiny.mm_a_orig)
    assert mm.state_dict.keys() == ref.state_dict.keys()
    assert mm.version == "v3"


@pytest.mark.parametrize(
    "name, version, mid, pe_len, channels",
    [
        ("mm_a_orig", "v3", False, 32, [32, 32, 64, 64]),
        ("mm_b_ckpt", "v3", False, 32, [32, 32, 64, 64]),
        ("mm_v2_ckpt", "v2", True, 32, [32, 32, 64, 64]),
        ("mm_v1", "v1", False, 24, [32, 32, 64, 64]),
        ("mm_sdxl", "sdxl-beta", False, 32, [32, 32, 64]),
    ],
)
def test_sniff_versions(tiny, name, version, mid, pe_len, channels):
    report = inspect_path(getattr(tiny, name))
    assert report["kind"] == "motion_module"
    assert report["format"] == "original"
    assert report["version"] == version
    assert report["mid_block"] is mid
    assert report["pe_length"] == pe_len
    assert report["channels"] == channels
    assert report["dtype"] == "float32"
    assert report["num_params"] == load_adapter(getattr(tiny, name)).num_params


def test_param_count_formula_on_full_size_shapes():
    # one module is 22·C² + 21·C parameters; v2 SD1.5 totals 453,209,280 (docs/formats.md#parameter-counts)
    from accelerate import init_empty_weights

    with init_empty_weights():
        v2 = MotionAdapter(use_motion_mid_block=True)
    n = sum(p.numel() for p in v2.parameters())
    assert n == 453_209_280


def test_inspect_cli_json(tiny, capsys):
    assert cli(["inspect", str(tiny.mm_v2_ckpt), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["version"] == "v2" and report["mid_block"] is True


def test_ours_metadata_round_trip(tiny, tmp_path, capsys):
    out = tmp_path / "ours.safetensors"
    cli(["convert", str(tiny.mm_v2_ckpt), str(out), "--to", "ours"])
    _, meta = read_state_dict(out)
    assert meta["motion_adapters.kind"] == "motion_module"
    assert json.loads(meta["motion_adapters.config"])["use_motion_mid_block"] is True
    report = inspect_path(out)
    assert report["format"] == "ours"
    assert report["metadata"]["motion_adapters"]["base_family"] == "sd15"
    assert cli(["inspect", str(out)]) == 0
    assert "motion_module" in capsys.readouterr().out


def test_refusals_name_file_and_kind(tiny, tmp_path):
    raw, _ = read_state_dict(tiny.mm_a_orig)
    # a module with tensors missing (e.g. a bad partial conversion)
    partial = dict(list(raw.items())[: len(raw) // 2])
    p = tmp_path / "partial.safetensors"
    save_safetensors_atomic(partial, p)
    with pytest.raises(AdapterFormatError, match=r"partial\.safetensors.*missing keys"):
        load_adapter(p)
    # an image-finetune UNet (no motion modules) passed as a motion module
    p = tmp_path / "image_finetune.safetensors"
    save_safetensors_atomic({"conv_in.weight": torch.zeros(4, 4, 3, 3), "down_blocks.0.resnets.0.conv1.weight":
                             torch.zeros(4, 4, 3, 3)}, p)
    with pytest.raises(AdapterFormatError, match="image-finetune"):
        load_adapter(p, expect="motion_module")
    # SparseCtrl and HotshotXL are recognised and refused by name
    p = tmp_path / "sparsectrl.safetensors"
    save_safetensors_atomic({"controlnet_cond_embedding.conv_in.weight": torch.zeros(2, 2), **raw}, p)
    with pytest.raises(AdapterFormatError, match="SparseCtrl"):
        load_adapter(p)
    p = tmp_path / "hotshot.safetensors"
    save_safetensors_atomic({"down_blocks.0.attentions.0.temporal_attentions.0.pos_encoder.positional_encoding":
                             torch.zeros(1, 8, 4)}, p)
    with pytest.raises(AdapterFormatError, match="HotshotXL"):
        load_adapter(p)
    # a base checkpoint where a motion module is expected
    with pytest.raises(AdapterFormatError, match="expected an AnimateDiff motion module, found a sd checkpoint"):
        load_adapter(tiny.base_b_ldm, expect="motion_module")
