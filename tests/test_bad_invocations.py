"""A hostile user's command lines: each ends with its exit status and one ``error:`` line that names what was
wrong, never a traceback, and nothing the user owns is changed."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from motion_adapters import cli, files
from motion_adapters.registry import model_path

MOTION, LORA = "shapes-motion", "shapes-zoom-lora"
GEN = ["generate", "--prompt", "a red circle", "--steps", "1", "--frames", "2"]


@dataclass
class Probe:
    argv: list[str]                                      # "{tmp}" is the test's folder
    status: int
    message: str                                         # a part of the one error line
    setup: Callable[[Path, pytest.MonkeyPatch], None] = lambda tmp, mp: None
    after: Callable[[Path], None] = lambda tmp: None     # what must still hold afterwards
    extra: dict = field(default_factory=dict)


def user_folder(tmp: Path, mp) -> None:
    (tmp / "userdir").mkdir()
    (tmp / "userdir" / "precious.txt").write_text("mine")


def user_folder_kept(tmp: Path) -> None:
    assert (tmp / "userdir" / "precious.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp / "userdir").iterdir()) == ["precious.txt"]


def a_file(name: str, text: str = "mine") -> Callable:
    def setup(tmp: Path, mp) -> None:
        (tmp / name).write_text(text)
    return setup


def kept(name: str, text: str = "mine") -> Callable:
    def after(tmp: Path) -> None:
        assert (tmp / name).read_text() == text
    return after


def lora_copy(tmp: Path, mp) -> None:
    shutil.copyfile(model_path(LORA), tmp / "l.safetensors")


def a_png(name: str) -> Callable:
    def setup(tmp: Path, mp) -> None:
        from PIL import Image

        Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp / name)
    return setup


def png_folder(tmp: Path, mp) -> None:
    (tmp / "frames").mkdir()
    for i in range(4):
        (tmp / "frames" / f"{i:04d}.png").write_bytes(b"old frame")


def frames_kept(tmp: Path) -> None:
    assert sorted(p.name for p in (tmp / "frames").iterdir()) == [f"{i:04d}.png" for i in range(4)]


def disk_full(tmp: Path, mp) -> None:
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "out.safetensors"))

    mp.setattr("motion_adapters.io.save_file", full)
    mp.setattr(files.shutil, "disk_usage", lambda p: type("u", (), {"free": 3_000_000})())


def eight_gb(tmp: Path, mp) -> None:
    mp.setattr("motion_adapters.inference.generator.available_memory", lambda device: 8 * 10**9)


def read_only(tmp: Path, mp) -> None:
    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp / "ro" / "out.safetensors"))

    mp.setattr("motion_adapters.io.save_file", denied)


PROBES = {
    # data loss
    "convert onto a user's folder": Probe(["convert", MOTION, "{tmp}/userdir", "--to", "diffusers"], 2,
                                          "DST {tmp}/userdir: exists already; expected a new name, or --overwrite",
                                          user_folder, user_folder_kept),
    "convert --overwrite onto a user's folder": Probe(
        ["convert", MOTION, "{tmp}/userdir", "--to", "diffusers", "--overwrite"], 2,
        "found a folder with other files (precious.txt); it is left alone even with --overwrite",
        user_folder, user_folder_kept),
    "convert onto an existing file": Probe(["convert", LORA, "{tmp}/mine.safetensors", "--to", "ours"], 2,
                                           "exists already", a_file("mine.safetensors"), kept("mine.safetensors")),
    "convert onto its own input": Probe(
        ["convert", "{tmp}/l.safetensors", "{tmp}/l.safetensors", "--to", "ours", "--overwrite"], 2,
        "DST {tmp}/l.safetensors: expected a path other than the input's, found the input itself", lora_copy),
    "convert --to ours into a .bin name": Probe(["convert", LORA, "{tmp}/x.bin", "--to", "ours"], 2,
                                                "DST {tmp}/x.bin: expected a file name ending .safetensors, found '.bin'",
                                                after=lambda tmp: list(tmp.iterdir()) == [] or pytest.fail("wrote")),
    "convert --to diffusers onto a plain file": Probe(
        ["convert", MOTION, "{tmp}/plainfile", "--to", "diffusers", "--overwrite"], 2,
        "DST {tmp}/plainfile: expected a folder name, found a file", a_file("plainfile"), kept("plainfile")),
    "generate into a PNG folder": Probe([*GEN, "--out", "{tmp}/frames"], 2, "--out {tmp}/frames: exists already",
                                        png_folder, frames_kept),
    "generate onto an existing clip": Probe([*GEN, "--out", "{tmp}/a.gif"], 2, "--out {tmp}/a.gif: exists already",
                                            a_file("a.gif"), kept("a.gif")),
    # silent garbage
    "LoRA weight 1e309": Probe([*GEN, "--lora", f"{LORA}:1e309"], 2, "--lora 1 weight: expected a finite number"),
    "LoRA weight nan": Probe([*GEN, "--lora", f"{LORA}:nan"], 2, "--lora 1 weight: expected a finite number"),
    "LoRA weight abc": Probe([*GEN, "--lora", f"{LORA}:abc"], 2,
                             f"--lora {LORA}:abc: expected PATH[:WEIGHT] with a number as WEIGHT, found the weight 'abc'"),
    # runaway resources
    "100000 frames": Probe([*GEN[:-2], "--frames", "100000", "--out", "{tmp}/long.gif"], 2,
                           "--frames 100000 at 32x32: needs about", eight_gb,
                           lambda tmp: list(tmp.iterdir()) == [] or pytest.fail("wrote something")),
    "width 100000": Probe([*GEN, "--width", "100000"], 2, "--width: expected at most 4096 pixels"),
    "steps 10000000": Probe([*GEN[:-4], "--steps", "10000000"], 2, "--steps"),
    "training lr -1": Probe(["train", "motion_lora", "--set", "optim.lr=-1", "--print-config"], 2,
                            "optim.lr: expected a finite number > 0, found -1.0"),
    "training lr nan": Probe(["train", "motion_lora", "--set", "optim.lr=nan", "--print-config"], 2,
                             "optim.lr: expected a finite number > 0, found nan"),
    "training config of invalid YAML": Probe(["train", "{tmp}/c.yaml"], 2,
                                             "{tmp}/c.yaml: expected a YAML config, found invalid YAML (expected ',' or "
                                             "']', but got '<stream end>' at line 2, column 1)",
                                             a_file("c.yaml", "run: [a\n")),
    "training config with a python tag": Probe(["train", "{tmp}/c.yaml"], 2, "could not determine a constructor",
                                               a_file("c.yaml", '!!python/object/apply:os.system ["touch {tmp}/pwned"]'),
                                               lambda tmp: not (tmp / "pwned").exists() or pytest.fail("ran code")),
    "--from a broken recipe": Probe(["generate", "--from", "{tmp}/r.json"], 2,
                                    "--from {tmp}/r.json: expected a recipe (a JSON object), found invalid JSON",
                                    a_file("r.json", '{"prompt": "a cat",')),
    "--from a recipe that is a list": Probe(["generate", "--from", "{tmp}/r.json"], 2,
                                            "expected a recipe (a JSON object), found a list", a_file("r.json", "[1]")),
    # the studio
    "studio on the network without a password": Probe(["app", "--host", "0.0.0.0"], 2,
                                                       "--host 0.0.0.0: serving beyond this machine expected --auth"),
    "studio --auth without a colon": Probe(["app", "--auth", "admin"], 2,
                                           "expected USER:PASS (a user name, a colon, a password)"),
    # tracebacks before
    "prompt file missing": Probe(["generate", "--prompt-file", "{tmp}/none.yaml"], 2,
                                 "--prompt-file {tmp}/none.yaml: expected a YAML file, found nothing at that path"),
    "prompt file malformed": Probe(["generate", "--prompt-file", "{tmp}/p.yaml"], 2,
                                   "--prompt-file {tmp}/p.yaml: expected a YAML map of frame index to prompt, found "
                                   "invalid YAML", a_file("p.yaml", "0: [a red")),
    "prompt file with a python tag": Probe(["generate", "--prompt-file", "{tmp}/p.yaml"], 2,
                                           "could not determine a constructor for the tag",
                                           a_file("p.yaml", '!!python/object/apply:os.system ["touch {tmp}/pwned"]'),
                                           lambda tmp: not (tmp / "pwned").exists() or pytest.fail("ran code")),
    "prompt file of a list": Probe(["generate", "--prompt-file", "{tmp}/p.yaml"], 2,
                                   "expected a YAML map of frame index to prompt, found a list",
                                   a_file("p.yaml", "- a\n- b\n")),
    "--out a folder named .gif": Probe([*GEN, "--out", "{tmp}/dir.gif"], 2,
                                       "--out {tmp}/dir.gif: expected a file name, found a folder",
                                       lambda tmp, mp: (tmp / "dir.gif").mkdir()),
    "--base a text file, no --motion": Probe([*GEN, "--base", "{tmp}/passwd"], 2,
                                             "--base {tmp}/passwd: expected a .safetensors file or a torch",
                                             a_file("passwd", "root:x:0:0:root:/root:/bin/bash\n")),
    "--base a LoRA": Probe([*GEN, "--base", "{tmp}/l.safetensors"], 2,
                           "--base {tmp}/l.safetensors: expected an SD checkpoint, found a motion lora file", lora_copy),
    "inspect a missing file": Probe(["inspect", "{tmp}/nothing.safetensors"], 2,
                                    "{tmp}/nothing.safetensors: expected an existing file or folder, found nothing"),
    "convert onto a full disk": Probe(["convert", LORA, "{tmp}/out.safetensors", "--to", "ours"], 1,
                                      "{tmp}/out.safetensors: disk full — could not write it (3.0 MB free on that "
                                      "disk)", disk_full,
                                      lambda tmp: [p.name for p in tmp.iterdir()] == [] or pytest.fail("left a file")),
    # video to video and ControlNets: refused before any model loads
    "--video that does not decode": Probe([*GEN, "--video", "{tmp}/v.mp4"], 2,
                                          "--video {tmp}/v.mp4: expected frames that decode, found unreadable",
                                          a_file("v.mp4", "not a video")),
    "--video an empty folder": Probe([*GEN, "--video", "{tmp}/frames"], 2,
                                     "--video {tmp}/frames: expected frames that decode, found a frame folder without",
                                     lambda tmp, mp: (tmp / "frames").mkdir()),
    "--strength 1.5": Probe([*GEN, "--video", "{tmp}/a.png", "--strength", "1.5"], 2,
                            "--strength: expected a number from 0 to 1, found 1.5", a_png("a.png")),
    "--strength without --video": Probe([*GEN, "--strength", "0.5"], 2,
                                        "--strength: applies to video to video; expected --video (or --image without a "
                                        "SparseCtrl encoder) with it, found none"),
    "--control without --controlnet": Probe([*GEN, "--control", "canny"], 2,
                                            "--control: expected a --controlnet for it to steer, found none"),
    "--controlnet without maps": Probe([*GEN, "--controlnet", "{tmp}/a.png"], 2,
                                       "--controlnet: expected one --control-video or --control for each of the 1",
                                       a_png("a.png")),
    "--control canny without --video": Probe([*GEN, "--controlnet", "{tmp}/a.png", "--control", "canny"], 2,
                                             "--control canny: computes maps from --video; expected --video",
                                             a_png("a.png")),
    "--control depth": Probe([*GEN, "--video", "{tmp}/a.png", "--controlnet", "{tmp}/a.png", "--control", "depth"], 2,
                             "--control depth: expected a preprocessor that runs without a model (canny, silhouette), "
                             "found one that needs a depth estimator", a_png("a.png")),
    "--controlnet a motion module": Probe([*GEN, "--video", "{tmp}/a.png", "--controlnet", MOTION, "--control",
                                           "canny"], 2, f"--controlnet {MOTION}: expected a ControlNet, found the "
                                           "registered motion module", a_png("a.png")),
    "--controlnet missing": Probe([*GEN, "--controlnet", "{tmp}/cn.safetensors", "--control-video", "{tmp}/a.png"],
                                  2, "--controlnet {tmp}/cn.safetensors: expected a ControlNet path or registered name, "
                                  "found nothing", a_png("a.png")),
    "--controlnet a LoRA file": Probe([*GEN, "--controlnet", "{tmp}/l.safetensors", "--control-video",
                                       "{tmp}/a.png"], 2, "--controlnet {tmp}/l.safetensors: expected a ControlNet, "
                                       "found a motion lora file", lambda tmp, mp: (lora_copy(tmp, mp),
                                                                                    a_png("a.png")(tmp, mp))),
    "--control-video a LoRA file": Probe([*GEN, "--controlnet", "{tmp}/l.safetensors", "--control-video",
                                          "{tmp}/l.safetensors"], 2, "--control-video {tmp}/l.safetensors: expected a "
                                          "video", lora_copy),
    "--control-start twice for one": Probe([*GEN, "--controlnet", "{tmp}/a.png", "--control-video", "{tmp}/a.png",
                                            "--control-start", "0", "--control-start", "0.5", "--control-start", "0.2"],
                                           2, "--control-start: expected one value for all ControlNets or one for each "
                                           "of the 1, found 3", a_png("a.png")),
    "--image not an image": Probe([*GEN, "--image", "{tmp}/l.safetensors"], 2, "--image {tmp}/l.safetensors: "
                                  "expected an image (.png", lora_copy),
    "--keyframe without an index": Probe([*GEN, "--image", "{tmp}/a.png", "--keyframe", "{tmp}/a.png"], 2,
                                         "--keyframe {tmp}/a.png: expected INDEX:PATH", a_png("a.png")),
    "--keyframe outside the clip": Probe([*GEN, "--image", "{tmp}/a.png", "--keyframe", "5:{tmp}/a.png"], 2,
                                         "--keyframe 5: expected a frame of the 2-frame clip (0 to 1", a_png("a.png")),
    "--sparsectrl a picture": Probe([*GEN, "--image", "{tmp}/a.png", "--sparsectrl", "{tmp}/a.png"], 2,
                                    "--sparsectrl {tmp}/a.png: expected a .safetensors file or a torch .ckpt/.pt pickle, "
                                    "found unrecognised bytes", a_png("a.png")),
    "--sparsectrl a motion module": Probe([*GEN, "--image", "{tmp}/a.png", "--sparsectrl", MOTION], 2,
                                          f"--sparsectrl {MOTION}: expected a SparseCtrl encoder, found the registered "
                                          "motion module", a_png("a.png")),
    "--ip-image without --ip-adapter": Probe([*GEN, "--ip-image", "{tmp}/a.png"], 2, "--ip-image: an image prompt "
                                             "needs an IP-Adapter; expected --ip-adapter, found none", a_png("a.png")),
    "--ip-adapter a LoRA file": Probe([*GEN, "--ip-adapter", "{tmp}/l.safetensors", "--ip-image", "{tmp}/a.png"], 2,
                                      "--ip-adapter {tmp}/l.safetensors: expected an IP-Adapter, found a motion lora "
                                      "file", lambda tmp, mp: (lora_copy(tmp, mp), a_png("a.png")(tmp, mp))),
    "--ip-scale out of range": Probe([*GEN, "--ip-adapter", "{tmp}/a.png", "--ip-image", "{tmp}/a.png", "--ip-scale",
                                      "3"], 2, "--ip-scale: expected a number from 0 to 2, found 3.0", a_png("a.png")),
    "convert into a read-only folder": Probe(["convert", LORA, "{tmp}/ro/out.safetensors", "--to", "ours"], 1,
                                             "{tmp}/ro/out.safetensors: permission denied", read_only),
}


@pytest.mark.parametrize("name", list(PROBES))
def test_bad_invocation_gets_one_line(name, tmp_path, monkeypatch, capsys):
    probe = PROBES[name]
    probe.setup(tmp_path, monkeypatch)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in probe.argv]
    status = cli.main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == probe.status, err
    assert "Traceback" not in err, err
    assert len(errors) == 1, err
    assert probe.message.replace("{tmp}", str(tmp_path)) in errors[0], err
    monkeypatch.undo()
    probe.after(tmp_path)


def test_a_bug_shows_its_traceback_and_says_it_is_one(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "cmd_models", broken)
    assert cli.main(["models"]) == cli.EXIT_BUG
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err and "this is a bug in motion-adapters" in err
    with pytest.raises(ZeroDivisionError):
        cli.main(["models", "--debug"])


def test_debug_shows_the_traceback_of_a_user_error(tmp_path, capsys):
    with pytest.raises(Exception, match="nothing at that path"):
        cli.main(["--debug", "inspect", str(tmp_path / "none.safetensors")])


def test_a_closed_pipe_ends_the_command_quietly():
    """``motion-adapters inspect … | head -1``: the reader goes away; no BrokenPipeError."""
    lora = str(model_path(LORA))
    proc = subprocess.Popen([sys.executable, "-m", "motion_adapters", "inspect", *[lora] * 400],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == cli.EXIT_BROKEN_PIPE, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
