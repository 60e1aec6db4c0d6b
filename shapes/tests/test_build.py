"""``motion-adapters toy build --quick`` into a tmp dir (1 step per stage), then the registry, the defaults of
``VideoGenerator`` / ``generate``, ``--motion none`` and ``eval toy`` on the result."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from motion_adapters.shapes.build import EXPORTS, STAGES


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from motion_adapters.shapes.build import build

    root = tmp_path_factory.mktemp("toybuild")
    out, work = root / "out", root / "work"
    summary = build(out=out, work=work, quick=True, progress=False, log=lambda _m: None)
    return out, work, summary


@pytest.fixture
def registry(built, monkeypatch):
    from motion_adapters.shapes.models import ENV_DIR

    monkeypatch.setenv(ENV_DIR, str(built[0]))
    return built[0]


def test_build_writes_every_registered_model(built):
    from motion_adapters.shapes.models import MANIFEST, MODELS

    out, work, summary = built
    assert list(summary["stages"]) == list(STAGES)
    for name in EXPORTS:
        assert (out / MODELS[name].file).exists(), name
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["total_bytes"] <= 30_000_000
    assert manifest["generation"]["height"] == 32 and manifest["generation"]["num_frames"] == 8
    for stage in STAGES:
        assert (work / stage / "DONE.json").exists()


def test_build_skips_finished_stages(built):
    from motion_adapters.shapes.build import build

    out, work, _ = built
    again = build(out=out, work=work, quick=True, stages=["vae", "motion"], progress=False, log=lambda _m: None)
    assert all(info["skipped"] for info in again["stages"].values())


def test_controlnet_stage_alone_starts_from_the_shipped_base_and_export_keeps_the_rest(built, tmp_path,
                                                                                         monkeypatch):
    """``toy build --stage controlnet --stage export`` in an empty work folder: the stage trains on the
    registry's shapes-base and writes its own dataset; export adds the ControlNet and keeps every other model
    (and the records of the stages that made them)."""
    import shutil

    from safetensors import safe_open

    from motion_adapters.hub import resolve_source
    from motion_adapters.registry import get
    from motion_adapters.shapes.build import build
    from motion_adapters.shapes.models import ENV_DIR, MANIFEST, MODELS

    out = tmp_path / "shipped"
    shutil.copytree(built[0], out)
    monkeypatch.setenv(ENV_DIR, str(out))
    work = tmp_path / "work"
    summary = build(out=out, work=work, quick=True, stages=["controlnet", "export"], progress=False,
                    log=lambda _m: None)
    assert summary["stages"]["controlnet"]["base"] == str(out / "shapes-base")
    assert (work / "data" / "controlnet_images" / "metadata.csv").exists()
    name = "shapes-silhouette-controlnet"
    assert set(summary["stages"]["export"]["kept"]) == set(EXPORTS) - {name}
    with safe_open(str(out / MODELS[name].file), "pt") as f:
        meta = f.metadata()
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    assert meta["motion_adapters.kind"] == "controlnet" and meta["motion_adapters.control_kind"] == "silhouette"
    assert dtypes == {torch.float16}
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["models"][name]["kind"] == "controlnet" and set(manifest["models"]) == set(EXPORTS)
    assert {"vae", "base", "motion", "controlnet"} <= set(manifest["stages"])
    assert get(name).kind == "controlnet" and resolve_source(name) == out / MODELS[name].file


def test_sparsectrl_stage_alone_starts_from_the_shipped_base_and_motion_module(built, tmp_path, monkeypatch):
    """``toy build --stage sparsectrl --stage export`` in an empty work folder: the stage trains on the
    registry's shapes-base and shapes-motion and writes its own clips; export adds the encoder in fp16, keeps
    every other model, and the registry makes it the shapes base's default SparseCtrl encoder."""
    import shutil

    from safetensors import safe_open

    from motion_adapters.registry import default_sparsectrl_for, get
    from motion_adapters.shapes.build import build
    from motion_adapters.shapes.models import ENV_DIR, MANIFEST, MODELS

    out = tmp_path / "shipped"
    shutil.copytree(built[0], out)
    monkeypatch.setenv(ENV_DIR, str(out))
    work = tmp_path / "work"
    summary = build(out=out, work=work, quick=True, stages=["sparsectrl", "export"], progress=False,
                    log=lambda _m: None)
    info = summary["stages"]["sparsectrl"]
    assert info["base"] == str(out / "shapes-base") and info["motion_module"] == str(out / MODELS["shapes-motion"].file)
    assert (work / "data" / "sparsectrl_clips" / "metadata.csv").exists()
    name = "shapes-rgb-sparsectrl"
    assert set(summary["stages"]["export"]["kept"]) == set(EXPORTS) - {name}
    with safe_open(str(out / MODELS[name].file), "pt") as f:
        meta = f.metadata()
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    assert meta["motion_adapters.kind"] == "sparsectrl" and meta["motion_adapters.control_kind"] == "rgb"
    assert dtypes == {torch.float16}
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["models"][name]["kind"] == "sparsectrl" and set(manifest["models"]) == set(EXPORTS)
    assert {"vae", "base", "motion", "sparsectrl"} <= set(manifest["stages"])
    assert get(name).kind == "sparsectrl" and default_sparsectrl_for("shapes-base") == name


def test_registered_defaults_generate(registry):
    from motion_adapters.inference import VideoGenerator

    gen = VideoGenerator()  # shapes-base + shapes-motion
    assert gen.base_source == "shapes-base" and gen.motion_source == "shapes-motion"
    res = gen.generate("a red circle moving right", num_inference_steps=1)
    assert res.frames.shape == (8, 32, 32, 3)  # the registered defaults: 8 frames, 32x32
    assert res.recipe["base"]["name"] == "shapes-base"
    gen.load_base("shapes-navy")  # a single-file LDM community checkpoint
    gen.set_loras({"shapes-zoom-lora": 1.0})
    assert gen.generate("a blue square", num_inference_steps=1, num_frames=2).frames.shape == (2, 32, 32, 3)
    gen.load_motion(None)
    assert gen.motion_source == "none"


def test_cli_generate_defaults_and_motion_none(registry, tmp_path):
    from motion_adapters.cli import main

    out = tmp_path / "clip.gif"
    assert main(["generate", "--prompt", "a red circle moving right", "--steps", "1", "--seed", "1",
                 "--out", str(out)]) == 0
    assert out.exists()
    out2 = tmp_path / "none.gif"
    assert main(["generate", "--prompt", "a red circle", "--motion", "none", "--base", "shapes-hq",
                 "--steps", "1", "--frames", "2", "--out", str(out2)]) == 0
    assert out2.exists()


def test_eval_toy_runs_every_arm(registry, tmp_path):
    from motion_adapters.shapes.eval_run import eval_toy, table

    res = eval_toy(n=1, steps=1)
    assert set(res["arms"]) == {"base+motion", "base, no motion", "navy+motion", "paper+motion", "zoom-lora@1",
                                "zoom-lora@0", "hq+motion"}
    assert len(res["targets"]) == 8 and "| arm |" in table(res)
    from motion_adapters.cli import main

    assert main(["eval", "toy", "--n", "1", "--steps", "1", "--json", str(tmp_path / "t.json")]) == 0
    data = json.loads((tmp_path / "t.json").read_text())
    assert np.isfinite(data["arms"]["base+motion"]["colour"]["acc"])
