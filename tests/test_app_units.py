"""The studio's parts without a server: model discovery (the allow-list), request checks, the device gate, a base
of another architecture, and the ``app`` command when gradio is missing."""

from __future__ import annotations

import shutil

import pytest
from app_support import write_models_dir

from motion_adapters.app.jobs import TRAINING, DeviceBusy, DeviceGate
from motion_adapters.app.models import NotInLibrary
from motion_adapters.app.requests import BadRequest, GenerateRequest, TrainRequest


@pytest.fixture(scope="module")
def models(shapes_env, tmp_path_factory):
    root = write_models_dir(tmp_path_factory.mktemp("models"))
    run = root / "trained" / "old-run"  # a training run's internals are not models
    (run / "checkpoints" / "step-10").mkdir(parents=True)
    shutil.copyfile(root / "loras" / "strong-lora.safetensors", run / "checkpoints" / "step-10" / "model.safetensors")
    shutil.copyfile(root / "loras" / "strong-lora.safetensors", run / "motion_lora.safetensors")
    return root


def test_library_sniffs_models_and_skips_everything_else(models):
    from motion_adapters.app.models import ModelLibrary

    lib = ModelLibrary([models])
    counts = lib.scan()
    assert "bases/perturbed-base" in lib.names("base") and "shapes-base" in lib.names("base")
    assert lib.names("motion") == ["shapes-motion", "strong-motion.safetensors"]
    assert set(lib.names("lora")) == {"shapes-zoom-lora", "loras/strong-lora.safetensors",
                                      "trained/old-run/motion_lora.safetensors"}
    assert lib.names("dataset") == ["datasets/squares"]
    assert not any("junk" in n or "notes" in n or "checkpoints" in n for n in lib.names())
    assert counts == {"base": 5, "motion": 2, "lora": 3, "dataset": 1}
    entry = lib.resolve("motion", "strong-motion.safetensors")
    assert entry.path == (models / "strong-motion.safetensors").resolve() and entry.source == str(entry.path)
    assert lib.resolve("base", "shapes-navy").source == "shapes-navy"  # embedded: its registered name
    for kind, name in [("base", str(models / "bases" / "perturbed-base")), ("lora", "../loras/strong-lora.safetensors"),
                       ("base", "strong-motion.safetensors"), ("motion", ""), ("motion", None)]:
        with pytest.raises(NotInLibrary):
            lib.resolve(kind, name)
    assert ModelLibrary([models], embedded=False).scan()["base"] == 1


def test_library_classifies_files_by_the_cores_header_rules(tiny, tmp_path):
    from motion_adapters.errors import AdapterFormatError
    from motion_adapters.headers import file_kind, read_keys
    from motion_adapters.io import read_state_dict

    assert file_kind(tiny.mm_a_orig) == file_kind(tiny.mm_b_ckpt) == file_kind(tiny.mm_v2_ckpt) == "motion_module"
    assert file_kind(tiny.base_b_ldm) == "sd_checkpoint"
    keys, metadata = read_keys(tiny.mm_b_ckpt)  # {"state_dict": …, "epoch": 3}: unwrapped as load_adapter does
    assert metadata == {} and keys == list(read_state_dict(tiny.mm_b_ckpt)[0])
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(AdapterFormatError, match="junk.ckpt: expected a .safetensors file or a torch"):
        read_keys(junk)


def test_generate_requests_are_checked():
    ok = GenerateRequest(base="b", motion="m", prompt=" a cat ", loras=[("", 1.0), ("x", "0.5")], frames=8.0,
                         context_overlap=-1).checked()
    assert ok.options.prompt == "a cat" and ok.loras == [("x", 0.5)] and ok.options.num_frames == 8
    assert ok.options.context_overlap is None and ok.options.context_length is None
    assert 0 <= ok.options.seed < 2**31  # -1: a random seed, drawn here and recorded in the recipe
    travel = GenerateRequest(base="b", motion="m", prompt="0: a bud\n\n 4: a rose ", frames=8).checked()
    assert travel.options.prompt == {0: "a bud", 4: "a rose"}
    for kw, field in [({"frames": 0}, "Frames"), ({"width": 20}, "Width"), ({"steps": "many"}, "Steps"),
                      ({"prompt": ""}, "Prompt"), ({"seed": -5}, "Seed"), ({"scheduler": "x"}, "Scheduler"),
                      ({"fmt": "avi"}, "Format"), ({"loras": [("x", 1), ("x", 0.5)]}, "twice"),
                      ({"loras": [("x", float("inf"))]}, "LoRA 1 weight"), ({"prompt": "x" * 5000}, "Prompt"),
                      ({"context_length": 1}, "Context length"), ({"prompt": "0: a\nfive: b"}, "Prompt: .*FRAME"),
                      ({"prompt": "0: a\n9: b"}, "Prompt: expected prompt-travel frame indices below Frames 8"),
                      ({"fps": 0.5}, "FPS"), ({"guidance": float("nan")}, "Guidance"),
                      ({"context_length": 4, "context_overlap": 4}, "Context overlap: expected less than")]:
        with pytest.raises(BadRequest, match=field):
            GenerateRequest(**{"base": "b", "motion": "m", "prompt": "p", **kw}).checked()


def test_train_requests_are_checked(tmp_path):
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"\0" * 100)
    base = {"preset": "motion_lora", "base": "b", "motion": "m", "clips": [str(clip)], "captions": "a square"}
    assert TrainRequest(**base).checked(10_000).captions == "a square"
    bad = [({"preset": "dreambooth"}, "Preset"), ({"captions": ""}, "Captions"),
           ({"captions": "a\nb"}, "one line per clip"), ({"dataset": "d"}, "both"), ({"clips": []}, "neither"),
           ({"name": "../x"}, "Name"), ({"resolution": 30}, "multiple of 8"), ({"steps": 0}, "Steps")]
    for kw, message in bad:
        with pytest.raises(BadRequest, match=message):
            TrainRequest(**{**base, **kw}).checked(10_000)
    with pytest.raises(BadRequest, match="at most"):
        TrainRequest(**base).checked(50)
    txt = tmp_path / "a.txt"
    txt.write_text("x")
    with pytest.raises(BadRequest, match=".mp4"):
        TrainRequest(**{**base, "clips": [str(txt)]}).checked(10_000)


def test_device_gate_refuses_instead_of_waiting():
    gate = DeviceGate()
    gate.acquire(TRAINING)
    with pytest.raises(DeviceBusy, match="training job is running"):
        with gate.hold("generation"):
            pass
    gate.release()
    with gate.hold("generation"):
        assert gate.owner == "generation"
    assert gate.owner is None


def test_a_base_of_another_architecture_rebuilds_once_and_says_so(tiny, shapes_env, tmp_path):
    from motion_adapters.app.config import StudioConfig
    from motion_adapters.app.studio import Studio

    models = tmp_path / "models"
    models.mkdir()
    for name in ("base_a", "base_b", "mm_a"):
        (models / name).symlink_to(getattr(tiny, name if name != "mm_a" else "mm_a_dir"))
    studio = Studio(StudioConfig(models_dirs=[models], output_dir=tmp_path / "out", device="cpu"))
    small = dict(frames=4, width=64, height=64, steps=2, fmt="gif", prompt="a square")
    clip = studio.generate(GenerateRequest(base="shapes-base", motion="shapes-motion",
                                           **{**small, "width": 32, "height": 32}))
    assert clip.notices == [] and studio.builds == 1
    clip = studio.generate(GenerateRequest(base="base_a", motion="mm_a", **small))
    assert studio.builds == 2 and "another architecture" in clip.notices[0]
    studio.generate(GenerateRequest(base="base_b", motion="mm_a", **small))  # same architecture: in place
    assert studio.builds == 2 and studio.status()["base"] == "base_b"


def test_app_command_explains_the_missing_extra(monkeypatch, capsys):
    import importlib.util

    from motion_adapters.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["app"]) == 2
    assert 'pip install "motion-adapters[app]"' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["app", "--help"])
    assert e.value.code == 0 and "--models-dir" in capsys.readouterr().out
