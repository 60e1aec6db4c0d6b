"""The studio's parts without a server: model discovery (the allow-list), request checks, the device gate, a base
of another architecture, and the ``app`` command when gradio is missing."""

from __future__ import annotations

import shutil

import pytest
from app_support import CONTROLNETS, IP_ADAPTER, SPARSECTRL, write_models_dir, write_picture

from motion_adapters.app.jobs import TRAINING, DeviceBusy, DeviceGate
from motion_adapters.app.models import NotInLibrary
from motion_adapters.app.requests import BadRequest, ControlSlot, GenerateRequest, ImageInput, TrainRequest


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
    assert lib.names("controlnet") == ["shapes-silhouette-controlnet", *CONTROLNETS]
    assert lib.resolve("controlnet", CONTROLNETS[0]).detail == "ControlNet"
    embedded_sparsectrl = [n for n in lib.names("sparsectrl") if lib.resolve("sparsectrl", n).registered]
    assert lib.names("sparsectrl") == [*embedded_sparsectrl, SPARSECTRL]
    assert lib.resolve("sparsectrl", SPARSECTRL).detail == "SparseCtrl encoder"
    assert lib.names("ip_adapter") == [IP_ADAPTER] and not any("image_encoder" in n for n in lib.names())
    assert not any("junk" in n or "notes" in n or "checkpoints" in n for n in lib.names())
    assert counts == {"base": 5, "motion": 2, "lora": 3, "controlnet": 3, "sparsectrl": 1 + len(embedded_sparsectrl),
                      "ip_adapter": 1, "dataset": 1}
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


def test_video_input_requests_are_checked(tmp_path):
    """The clip, its strength and the ControlNet slots: errors name the page's fields and the slot's number."""
    clip, maps, txt = tmp_path / "clip.mp4", tmp_path / "edges.png", tmp_path / "a.txt"
    for f in (clip, maps, txt):
        f.write_bytes(b"\0" * 100)
    base = {"base": "b", "motion": "m", "prompt": "p", "video": str(clip)}
    ok = GenerateRequest(**base, strength=0.5, controlnets=[
        ControlSlot(), ControlSlot("cn", 1.5, "canny", start=0.2), ControlSlot("cn2", 0.5, "maps", str(maps))]).checked()
    assert ok.video == str(clip) and ok.options.strength == 0.5 and ok.uploads == [str(clip), str(maps)]
    assert [(c.slot, c.name, c.scale, c.start, c.preprocessor, c.maps) for c in ok.controlnets] == [
        (2, "cn", 1.5, 0.2, "canny", None), (3, "cn2", 0.5, 0.0, None, str(maps))]
    plain = GenerateRequest(base="b", motion="m", prompt="p", strength=7,  # no clip: the strength is not used
                            controlnets=[ControlSlot("cn", source="maps", maps=str(maps))]).checked()
    assert plain.options.strength is None and plain.video is None and plain.controlnets[0].maps == str(maps)
    bad = [({"video": str(txt)}, "^Video: expected .mp4"), ({"strength": 1.5}, "^Strength: expected"),
           ({"strength": "lots"}, "^Strength"), ({"controlnets": [ControlSlot("cn", scale=3)]}, "^ControlNet 1 scale"),
           ({"controlnets": [ControlSlot(), ControlSlot("cn", start=0.5, end=0.5)]}, "^ControlNet 2 start/end: expected"),
           ({"controlnets": [ControlSlot("cn", source="depth")]}, "^ControlNet 1 control: expected one of canny, "
                                                                   "silhouette, maps, found 'depth'"),
           ({"controlnets": [ControlSlot("cn", source="maps")]}, "^ControlNet 1 maps: expected uploaded control maps"),
           ({"controlnets": [ControlSlot("cn", source="maps", maps=str(txt))]}, "^ControlNet 1 maps: expected .mp4"),
           ({"controlnets": [ControlSlot("cn"), ControlSlot("cn", source="silhouette")]},
            "^ControlNet 2: expected each ControlNet once, found 'cn' in ControlNet 1 too"),
           ({"video": None, "controlnets": [ControlSlot("cn")]}, "^ControlNet 1 control: expected a Video to compute "
                                                                  "canny maps from")]
    for kw, message in bad:
        with pytest.raises(BadRequest, match=message):
            GenerateRequest(**{**base, **kw}).checked()
    with pytest.raises(BadRequest, match="^Video: expected files of at most"):
        GenerateRequest(**base).checked(max_upload_bytes=50)


def test_image_input_requests_are_checked(tmp_path):
    """First / last frame, SparseCtrl, IP-Adapter: each upload readable, each piece with what it needs; every error
    one line naming the page's field."""
    first, last, ip = (write_picture(tmp_path / f"{n}.png", seed=i) for i, n in enumerate(("first", "last", "ip")))
    txt, broken, clip = tmp_path / "a.txt", tmp_path / "broken.png", tmp_path / "clip.mp4"
    for f in (txt, broken, clip):
        f.write_bytes(b"\0" * 100)
    base = {"base": "b", "motion": "m", "prompt": "p"}
    ok = GenerateRequest(**base, strength=0.5, images=ImageInput(str(first), str(last), "sc", "ip", str(ip),
                                                                 0.9)).checked()
    assert ok.images == ImageInput(str(first), str(last), "sc", "ip", str(ip), 0.9)
    assert ok.uploads == [str(first), str(last), str(ip)] and ok.options.strength == 0.5  # a first frame: used
    ip_only = GenerateRequest(**base, images=ImageInput(ip_adapter="ip", ip_image=str(ip))).checked()
    assert ip_only.options.strength is None and ip_only.images.ip_scale == 0.6 and ip_only.images.first is None
    bad = [(ImageInput(str(broken)), "^First frame: expected a readable picture, found 'broken.png'"),
           (ImageInput(str(txt)), "^First frame: expected .png"),
           (ImageInput(last=str(last)), "^Last frame: expected a First frame to go with it, found none"),
           (ImageInput(str(first), str(broken)), "^Last frame: expected a readable picture"),
           (ImageInput(sparsectrl="sc"), "^SparseCtrl: expected a First frame"),
           (ImageInput(ip_image=str(ip)), "^IP image: expected an IP-Adapter to read it, found none"),
           (ImageInput(ip_adapter="ip"), "^IP-Adapter: expected an IP image to steer by, found none"),
           (ImageInput(ip_adapter="ip", ip_image=str(txt)), "^IP image: expected .png"),
           (ImageInput(ip_adapter="ip", ip_image=str(ip), ip_scale=2), "^IP scale: expected"),
           (ImageInput(ip_adapter="ip", ip_image=str(ip), ip_scale="much"), "^IP scale")]
    for images, message in bad:
        with pytest.raises(BadRequest, match=message):
            GenerateRequest(**base, images=images).checked()
    with pytest.raises(BadRequest, match="^First frame: expected a Video .* or a First frame, found both"):
        GenerateRequest(**base, video=str(clip), images=ImageInput(str(first))).checked()
    with pytest.raises(BadRequest, match="^Last frame: expected Frames of at least 2"):
        GenerateRequest(**base, frames=1, images=ImageInput(str(first), str(last))).checked()
    with pytest.raises(BadRequest, match="^First frame: expected files of at most"):
        GenerateRequest(**base, images=ImageInput(str(first))).checked(max_upload_bytes=50)


def test_image_inputs_become_the_generators_arguments(tmp_path):
    """``image`` (and ``keyframes`` for the last frame) with the encoder that holds them (then no strength: not
    video to video), the IP-Adapter by its library source; nothing at all for an empty area (a text-to-video call
    passes none of the new arguments)."""
    from pathlib import Path
    from types import SimpleNamespace

    from motion_adapters.app.models import Entry
    from motion_adapters.app.requests import CheckedControl
    from motion_adapters.app.studio import image_inputs

    def resolve(kind, name):
        return Entry(name, kind, Path("/models") / name, kind)

    lib = SimpleNamespace(resolve=resolve)
    base = Entry("bases/plain", "base", tmp_path, "SD checkpoint")  # no registered family: no default encoder
    assert image_inputs(lib, ImageInput(), base, 8, []) == {}
    assert image_inputs(lib, ImageInput("a.png"), base, 8, []) == {"image": "a.png", "sparsectrl": None}
    assert image_inputs(lib, ImageInput("a.png", "b.png", "sc.safetensors"), base, 16, []) == {
        "image": "a.png", "keyframes": {15: "b.png"}, "sparsectrl": "/models/sc.safetensors", "strength": None}
    assert image_inputs(lib, ImageInput(ip_adapter="ip.bin", ip_image="c.png", ip_scale=1.2), base, 8, []) == {
        "ip_adapter": "/models/ip.bin", "ip_image": "c.png", "ip_scale": 1.2}
    with pytest.raises(BadRequest, match="^Last frame: expected a SparseCtrl encoder to hold it \\(bases/plain has "
                                         "no default one"):
        image_inputs(lib, ImageInput("a.png", "b.png"), base, 8, [])
    control = CheckedControl(2, "cn", 1.0, 0.0, 1.0, None, "maps.mp4")
    with pytest.raises(BadRequest, match="^ControlNet 2: expected no ControlNet beside a SparseCtrl encoder"):
        image_inputs(lib, ImageInput("a.png", sparsectrl="sc"), base, 8, [control])
    assert "image" in image_inputs(lib, ImageInput("a.png"), base, 8, [control])  # no encoder: video to video


def test_the_image_input_reaches_the_generator_and_the_recipe_names_uploads_by_file_name(models, tmp_path):
    """The studio hands the generator the uploaded pictures, the chosen encoder and IP-Adapter and the page's
    labels; the recipe it writes names each upload by its file name only (a stand-in generator records the call)."""
    from types import SimpleNamespace

    import numpy as np

    from motion_adapters.app.config import StudioConfig
    from motion_adapters.app.studio import Studio

    first, last, ip = (write_picture(tmp_path / "uploads" / f"a3f{i}" / f"{n}.png", seed=i)
                       for i, n in enumerate(("red circle", "last", "style")))
    calls = []

    def generate(**kw):
        calls.append(kw)
        recipe = {"seed": kw["seed"], "prompt": kw["prompt"], "image": {"path": kw["image"], "sha256": "ab"},
                  "keyframes": [{"index": i, "path": p} for i, p in kw.get("keyframes", {}).items()],
                  "ip_adapter": {"scale": kw.get("ip_scale"), "image": {"path": kw.get("ip_image")}}}
        return SimpleNamespace(frames=np.zeros((kw["num_frames"], 32, 32, 3)), recipe=recipe, control_maps=[])

    studio = Studio(StudioConfig(models_dirs=[models], output_dir=tmp_path / "out", device="cpu"))
    studio.gen = SimpleNamespace(generate=generate, builds=1, sparsectrl=None, ip_adapter=None)
    studio.loaded.update(base="shapes-base", motion="shapes-motion")  # nothing to swap
    request = dict(base="shapes-base", motion="shapes-motion", prompt="a red circle", frames=8, fmt="gif")
    clip = studio.generate(GenerateRequest(**request, images=ImageInput(str(first), str(last), SPARSECTRL,
                                                                        IP_ADAPTER, str(ip), 0.9)))
    kw = calls[-1]
    assert kw["image"] == str(first) and kw["keyframes"] == {7: str(last)} and kw["strength"] is None
    assert kw["sparsectrl"] == str((models / SPARSECTRL).resolve())
    assert (kw["ip_adapter"], kw["ip_image"], kw["ip_scale"]) == (str((models / IP_ADAPTER).resolve()), str(ip), 0.9)
    assert kw["labels"]["image"] == "First frame" and kw["labels"]["ip_scale"] == "IP scale"
    assert clip.recipe["image"] == {"path": "red circle.png", "sha256": "ab"}
    assert clip.recipe["keyframes"] == [{"index": 7, "path": "last.png"}]
    assert clip.recipe["ip_adapter"]["image"] == {"path": "style.png"}
    assert str(tmp_path / "uploads") not in clip.download.read_bytes().decode("latin-1")


def test_reuse_recipe_fills_the_video_input_where_it_can(models):
    import json

    from motion_adapters.app.models import ModelLibrary
    from motion_adapters.app.video_input import reuse_recipe

    lib = ModelLibrary([models])
    lib.scan()
    path = str(lib.resolve("controlnet", CONTROLNETS[1]).path)
    recipe = {"seed": 1, "video": {"path": "clip.mp4", "sha256": "ab", "frames": 8}, "strength": 0.4, "controlnets": [
        {"name": "gone.safetensors", "path": "/elsewhere/gone.safetensors", "scale": 0.7, "start": 0.0, "end": 1.0,
         "control": {"preprocessor": "silhouette"}},
        {"name": "x", "path": path, "scale": 1.5, "start": 0.1, "end": 0.8, "control": {"path": "edges.mp4"}}]}
    values, notes = reuse_recipe(lib, json.dumps(recipe))
    assert values == [0.4, "", 0.7, "silhouette", 0.0, 1.0, CONTROLNETS[1], 1.5, "maps", 0.1, 0.8]
    assert any("clip.mp4" in n for n in notes) and any("gone.safetensors" in n for n in notes)
    assert any("edges.mp4" in n for n in notes)
    plain, notes = reuse_recipe(lib, json.dumps({"seed": 1, "strength": None, "controlnets": []}))
    assert plain == [0.8, "", 1.0, "canny", 0.0, 1.0, "", 1.0, "canny", 0.0, 1.0] and notes == []


def test_reuse_recipe_fills_the_image_input_where_it_can(models):
    import json

    from motion_adapters.app.image_input import reuse_image_recipe
    from motion_adapters.app.models import ModelLibrary

    lib = ModelLibrary([models])
    lib.scan()
    sc, ip = (str(lib.resolve(kind, name).path) for kind, name in (("sparsectrl", SPARSECTRL),
                                                                    ("ip_adapter", IP_ADAPTER)))
    recipe = {"seed": 1, "image": {"path": "first.png", "sha256": "ab"}, "keyframes": [{"index": 7, "path": "b.png"}],
              "sparsectrl": {"name": "x", "path": sc, "scale": 1.0},
              "ip_adapter": {"name": "y", "path": ip, "scale": 0.9, "image": {"path": "style.png"}}}
    values, notes = reuse_image_recipe(lib, json.dumps(recipe))
    assert values == [SPARSECTRL, IP_ADAPTER, 0.9]
    assert [n.split(" (")[0] for n in notes] == ["upload the First frame again", "upload the IP image again",
                                                  "upload the Last frame again"]
    gone = {**recipe, "sparsectrl": {"name": "old.ckpt", "path": "/elsewhere/old.ckpt"}, "ip_adapter": None}
    values, notes = reuse_image_recipe(lib, json.dumps(gone))
    assert values == ["", "", 0.6] and any("SparseCtrl of the recipe (old.ckpt) is not in the library" in n
                                           for n in notes)
    assert reuse_image_recipe(lib, json.dumps({"seed": 1})) == (["", "", 0.6], [])


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


# ------------------------------------------------------------------------------------- training jobs
FAKE_TRAINER = """
import shutil, sys, time
from pathlib import Path
from tqdm.auto import tqdm
lora, go = sys.argv[1], Path(sys.argv[2])
bar = tqdm(total=3, desc="train motion_lora", dynamic_ncols=True)  # as the trainer draws it
bar.update(1)
bar.set_postfix(loss="0.1234")
deadline = time.time() + 120
while not go.exists() and time.time() < deadline:  # the test looks at the log meanwhile
    time.sleep(0.02)
bar.update(2)
bar.close()
shutil.copyfile(lora, "motion_lora.safetensors")  # cwd: the job folder
print("wrote motion_lora: motion_lora.safetensors", flush=True)
"""


def fake_job(root, name="run", total=3):
    from motion_adapters.app.jobs import TrainingJob

    out = root / "trained" / name
    return TrainingJob(name=name, task="motion_lora", out_dir=out, config_path=out / "studio-config.yaml",
                       total_steps=total)


def wait_for(predicate, timeout=60.0):
    import time

    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def test_a_finished_job_has_its_outputs_in_the_library_already(shapes_env, tmp_path):
    """No poll can see "finished" while the library still has the old lists: the rescan (on_exit) runs while
    the job still reads as running, and a poller racing the whole exit never sees a finished job without its
    LoRA."""
    import sys
    import threading
    import time
    from types import SimpleNamespace

    from motion_adapters.app.jobs import TrainingRunner
    from motion_adapters.app.models import ModelLibrary
    from motion_adapters.app.training import snapshot
    from motion_adapters.registry import model_path

    lib = ModelLibrary([tmp_path], embedded=False)
    lib.scan()
    seen_in_on_exit = []

    def on_exit(job):
        seen_in_on_exit.append((job.state, runner.running))
        time.sleep(0.3)  # a slow rescan: the window the page used to fall into
        lib.scan()

    gate = DeviceGate()
    runner = TrainingRunner(gate, on_exit=on_exit, command=[sys.executable, "-c", FAKE_TRAINER,
                                                            str(model_path("shapes-zoom-lora")), str(tmp_path / "go")])
    job = runner.start(fake_job(tmp_path))
    studio = SimpleNamespace(library=lib)
    polls, stop = [], threading.Event()

    def poll():
        while not stop.is_set():
            snap = snapshot(studio, job)
            polls.append((snap["state"], list(snap["outputs"])))
            if snap["state"] != "running":
                return

    poller = threading.Thread(target=poll)
    poller.start()
    (tmp_path / "go").touch()
    poller.join(120)
    stop.set()
    assert seen_in_on_exit == [("running", True)]
    assert polls[-1] == ("finished", ["trained/run/motion_lora.safetensors"])
    assert all(outputs for state, outputs in polls if state == "finished")
    assert job.ended is not None and job.returncode == 0 and gate.owner is None and not runner.running
    assert runner.cancel() is False  # nothing left to cancel


def test_the_log_shows_the_trainers_progress_while_it_runs(tmp_path):
    """The child's progress bar (tqdm, refreshed with \\r) reaches train.log while it runs, one line per refresh."""
    import sys

    from motion_adapters.app.jobs import TrainingRunner

    lora = tmp_path / "lora.safetensors"
    lora.write_bytes(b"x")
    runner = TrainingRunner(DeviceGate(), command=[sys.executable, "-c", FAKE_TRAINER, str(lora), str(tmp_path / "go")])
    job = runner.start(fake_job(tmp_path))
    try:
        wait_for(lambda: "1/3" in job.log_tail())
        assert job.state == "running" and job.proc.poll() is None
        line = next(ln for ln in job.log_tail().splitlines() if "1/3" in ln)
        assert line.startswith("train motion_lora:") and "\r" not in line
    finally:
        (tmp_path / "go").touch()
    wait_for(lambda: job.ended is not None)
    tail = job.log_tail()
    assert job.state == "finished" and "3/3" in tail and tail.splitlines()[-1].startswith("wrote motion_lora")
    assert len(tail.splitlines()) == len(set(tail.splitlines()))  # repeated refreshes are shown once


def test_a_cancelled_job_reads_cancelled_and_frees_the_device(tmp_path):
    import sys

    from motion_adapters.app.jobs import TrainingRunner

    gate = DeviceGate()
    runner = TrainingRunner(gate, command=[sys.executable, "-c", FAKE_TRAINER, "x", str(tmp_path / "never")])
    job = runner.start(fake_job(tmp_path))
    wait_for(lambda: "1/3" in job.log_tail())
    assert gate.owner == TRAINING and runner.cancel(wait=10)
    assert job.state == "cancelled" and gate.owner is None and not runner.running


def test_the_loss_chart_gets_numeric_axes_from_the_first_update(shapes_env, tmp_path):
    """What the Train tab sends to its LinePlot: typed (int step, float loss) even before the first step, so
    gradio declares both axes quantitative (an untyped empty frame made them categorical for good)."""
    import json
    import time

    import gradio as gr

    from motion_adapters.app.config import StudioConfig
    from motion_adapters.app.studio import Studio
    from motion_adapters.app.train_tab import build_train_tab
    from motion_adapters.app.ui import Dropdowns

    studio = Studio(StudioConfig(models_dirs=[tmp_path / "models"], output_dir=tmp_path / "out", device="cpu"))
    with gr.Blocks():
        follow, outputs = build_train_tab(studio, Dropdowns(studio.library))
    plot = outputs[1]
    assert isinstance(plot, gr.LinePlot)
    quantitative = {"step": "quantitative", "loss": "quantitative"}
    assert plot.value["datatypes"] == quantitative  # the page's initial, empty chart

    for losses in ([], [(1, 0.5)], [(1, 0.5), (2, 0.25), (3, 1e-5)]):
        job = fake_job(tmp_path, name=f"run{len(losses)}")
        job.out_dir.mkdir(parents=True)
        (job.out_dir / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": v}) + "\n" for s, v in losses))
        job.returncode, job.ended = 0, time.time()
        studio.runner.job = job
        frame = list(follow())[-1][1]  # the tab's own progress function
        assert [str(t) for t in frame.dtypes] == ["int64", "float64"], frame.dtypes
        data = plot.postprocess(frame)
        assert data.datatypes == quantitative and data.data == [list(p) for p in losses]


def test_page_errors_never_show_the_upload_folder(tmp_path):
    """The pickle refusal of an uploaded .ckpt names the file by its upload name, not gradio's cache path."""
    import pickle
    from pathlib import Path

    import gradio as gr
    from gradio.utils import get_upload_folder

    from motion_adapters.app.library import inspect_upload
    from motion_adapters.app.ui import hide_upload_paths, page_errors

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    folder = Path(get_upload_folder()) / "0123456789abcdef-test"
    folder.mkdir(parents=True, exist_ok=True)
    evil = folder / "my evil model.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": {"w": Evil()}}, protocol=2))
    try:
        with pytest.raises(gr.Error) as e:
            page_errors(inspect_upload)(str(evil), 10_000)
        message = e.value.message
        assert message.startswith("my evil model.ckpt: expected a pickle of plain tensors"), message
        assert str(folder.parent) not in message and "gradio" not in message and "0123456789" not in message
    finally:
        evil.unlink()
        folder.rmdir()
    root = str(Path(get_upload_folder()))
    assert hide_upload_paths(f"'{root}/ab12/x.ckpt' and {root}/cd/34/y z.pt: bad") == "'x.ckpt' and y z.pt: bad"
    assert hide_upload_paths("/data/models/x.ckpt: bad") == "/data/models/x.ckpt: bad"


def test_opening_the_library_tab_shows_models_written_meanwhile(shapes_env, tmp_path):
    """A training run (or another page) writes a model: the Library table lists it when the tab is opened."""
    from motion_adapters.app.config import StudioConfig
    from motion_adapters.app.server import build_demo
    from motion_adapters.app.studio import Studio
    from motion_adapters.registry import model_path

    studio = Studio(StudioConfig(models_dirs=[tmp_path / "models"], output_dir=tmp_path / "out", device="cpu"))
    demo = build_demo(studio)
    deps = [d for d in demo.fns.values() if any(t[1] == "select" for t in d.targets)]
    tab = next(b for b in demo.blocks.values() if getattr(b, "id", None) == "library")
    refresh = next(d for d in deps if any(t[0] == tab._id for t in d.targets))
    assert "trained-zoom.safetensors" not in refresh.fn()
    trained = tmp_path / "models" / "trained" / "run"
    trained.mkdir(parents=True)
    shutil.copyfile(model_path("shapes-zoom-lora"), trained / "trained-zoom.safetensors")
    studio.library.scan()  # what the training runner does when a run ends
    assert "trained-zoom.safetensors" in refresh.fn()
    (table,) = [demo.blocks[o] if isinstance(o, int) else o for o in refresh.outputs]
    assert type(table).__name__ == "Markdown" and table.label == "Library"
