"""Training runs on the tiny models: every preset, frozen parameters, overfitting, produced adapters in the
generator, SIGKILL + resume, and two processes (gloo) against one."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from motion_adapters.io import read_state_dict
from motion_adapters.training.config import load_config
from tests.tiny_data import write_toy_dataset

REPO = Path(__file__).resolve().parent.parent
TASKS = ("motion", "motion_lora", "spatial_lora", "spatial_full", "joint", "motiondirector")
CALL = dict(num_frames=4, height=64, width=64, num_inference_steps=2, guidance_scale=7.5)


def values(tiny, data_path, out, task="motion_lora", **sections):
    v = {"task": task,
         "model": {"base": str(tiny.base_a), "motion_module": None if task == "motion" else str(tiny.mm_a_dir)},
         "data": {"path": str(data_path), "num_frames": 4, "stride": 2, "resolution": 64},
         "lora": {"rank": 4},
         "optim": {"lr": 1e-3},
         "run": {"output_dir": str(out), "max_steps": 2, "checkpoint_every": 100, "progress": False,
                 "tensorboard": False, "seed": 7}}
    for k, sub in sections.items():
        v[k] = {**v.get(k, {}), **sub}
    return v


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toyrun"), kinds=("mp4", "frames", "png"))


@pytest.fixture(scope="module")
def runs(tiny, toy, tmp_path_factory):
    """Each preset trained for 2 steps; UNet/VAE/text-encoder tensors before and after."""
    from motion_adapters.training.trainer import Trainer

    out = {}
    for task in TASKS:
        extra = {"data": {"images": "same", "images_per_sample": 1}} if task == "joint" else {}
        if task == "motiondirector":
            extra = {"loss": {"appearance_debias_weight": 1.0, "spatial_mask_prob": 0.0}}
        if task == "motion":  # validation GIFs every step and at the end, TensorBoard on
            extra = {"validation": {"every": 1, "prompts": ["a square"], "num_frames": 2, "height": 64,
                                    "width": 64, "steps": 1},
                     "run": {"tensorboard": True}}
        cfg = load_config(values=values(tiny, toy, tmp_path_factory.mktemp(task), task, **extra))
        tr = Trainer(cfg)
        before = {f"{c}.{k}": v.detach().clone() for c, m in (("unet", tr.tm.unet), ("vae", tr.tm.vae),
                  ("te", tr.tm.text_encoder)) for k, v in m.state_dict().items()}
        trained = {f"unet.{n}" for names in tr.tm.groups.values() for n in names}
        result = tr.run()
        after = {f"{c}.{k}": v.detach().clone() for c, m in (("unet", tr.tm.unet), ("vae", tr.tm.vae),
                 ("te", tr.tm.text_encoder)) for k, v in m.state_dict().items()}
        out[task] = dict(before=before, after=after, trained=trained, result=result, groups=dict(tr.tm.groups),
                         out=Path(cfg.run.output_dir))
    return out


@pytest.mark.parametrize("task", TASKS)
def test_preset_trains_and_everything_else_is_bitwise_frozen(runs, task):
    r = runs[task]
    assert len(r["result"]["losses"]) == 2 and all(torch.isfinite(torch.tensor(r["result"]["losses"])))
    assert r["trained"]
    changed = {k for k in r["before"] if not torch.equal(r["before"][k], r["after"][k])}
    assert changed, "nothing was trained"
    assert changed <= r["trained"], f"frozen tensors changed: {sorted(changed - r['trained'])[:3]}"
    # every trained tensor belongs to the task's group (by module type)
    if task in ("motion", "motion_lora"):
        assert set(r["groups"]) == {"temporal"}
        assert all("motion_modules" in k for k in r["trained"])
    if task in ("spatial_lora", "spatial_full"):
        assert set(r["groups"]) == {"spatial"} and not any("motion_modules" in k for k in r["trained"])
    if task in ("motion_lora", "spatial_lora", "motiondirector"):
        assert all(".lora_" in k for k in r["trained"])
    for path in r["result"]["outputs"].values():
        assert Path(path).exists()


def test_validation_gifs_logs_and_checkpoint_layout(runs):
    out = runs["motion"]["out"]
    gifs = sorted(p.name for p in (out / "validation").glob("*.gif"))
    assert gifs == ["step-000001-0.gif", "step-000002-0.gif"]  # every step + final (same step, rewritten)
    from PIL import Image

    with Image.open(out / "validation" / gifs[0]) as im:
        assert im.n_frames == 2
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [1, 2] and all(r["grad_norm"] is not None for r in logs)
    assert list((out / "logs").glob("events.out.tfevents.*"))


def test_adapter_metadata_records_config_and_data(runs):
    from motion_adapters.formats.ours import parse_metadata

    _, md = read_state_dict(runs["motion_lora"]["result"]["outputs"]["motion_lora"])
    meta = parse_metadata(md)
    assert meta["kind"] == "motion_lora"
    assert meta["training"]["config"]["task"] == "motion_lora" and meta["training"]["steps"] == 2
    assert meta["training"]["data"]["items"] == 3


def test_trained_adapters_load_in_the_generator_and_change_it(tiny, runs):
    from motion_adapters.inference import VideoGenerator

    outputs = {t: runs[t]["result"]["outputs"] for t in ("motion", "motion_lora", "spatial_lora")}
    gen = VideoGenerator(base=tiny.base_a, motion=tiny.mm_a_dir, device="cpu")
    ref = gen.generate("a red square moving right", seed=0, **CALL).frames
    for kind in ("motion_lora", "spatial_lora"):
        gen.set_loras({outputs[kind][kind]: 1.0})
        frames = gen.generate("a red square moving right", seed=0, **CALL).frames
        assert float(abs(frames - ref).max()) > 1e-4, kind
    gen.set_loras({})
    gen.load_motion(outputs["motion"]["motion_module"])
    frames = gen.generate("a red square moving right", seed=0, **CALL).frames
    assert float(abs(frames - ref).max()) > 1e-4
    base = runs["spatial_full"]["result"]["outputs"]["base"]
    gen.load_base(base)  # the finetuned spatial UNet is a regular diffusers folder
    assert float(abs(gen.generate("a red square moving right", seed=0, **CALL).frames - frames).max()) > 1e-4


@pytest.mark.parametrize("low_vram", (False,))  # bf16 autocast on CPU is ~10x slower: True runs in bench/ only
def test_tiny_model_overfits_one_clip(tiny, tmp_path, low_vram):
    """Full-UNet training on one clip: the loss on fixed (noise, timestep) draws falls at least 2x in 20 steps
    (also with ``low_vram``: bf16 autocast, bf16 VAE / text encoder, AdamW8bit, gradient checkpointing).

    ``low_vram`` runs at 64² (8² latents): at 32² the last downsampler sees a 1×1 input, and torch's CPU
    (oneDNN) bf16 conv backward returns garbage weight gradients for a 1×1 input with stride 2 (README)."""
    from motion_adapters.training.trainer import Trainer

    one = write_toy_dataset(tmp_path / "one", kinds=("mp4",))
    cfg = load_config(values=values(tiny, one, tmp_path / "run", "joint", run={"max_steps": 20, "low_vram": low_vram},
                                    data={"resolution": 64 if low_vram else 32}, optim={"lr": 2e-3}))
    tr = Trainer(cfg)
    probe = [tr.dataset[p] for p in range(1000, 1006)]

    def held_loss():
        with torch.no_grad():
            return sum(float(tr.task.video_loss([i])) for i in probe) / len(probe)

    before = held_loss()
    tr.run()
    after = held_loss()
    assert after < before / 2, (before, after)


def _cli(config_args: list[str], env_extra: dict | None = None) -> list[str]:
    return [sys.executable, "-m", "motion_adapters", "train", *config_args]


def _weights(path) -> dict[str, torch.Tensor]:
    return read_state_dict(path)[0]


@pytest.mark.parametrize("low_vram", (False,))  # low_vram resume: see the note on the overfit test
def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny, toy, tmp_path, low_vram):
    import yaml

    from motion_adapters.training.trainer import train

    steps = dict(run={"max_steps": 5, "checkpoint_every": 2, "keep_checkpoints": 1, "low_vram": low_vram})
    ref = train(load_config(values=values(tiny, toy, tmp_path / "ref", **steps)))
    killed_dir = tmp_path / "killed"
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(values(tiny, toy, killed_dir, **steps)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(_cli([str(cfg_file)]), cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("checkpoint saved:"):
                proc.send_signal(signal.SIGKILL)  # mid-run, right after the step-2 checkpoint is complete
                break
    finally:
        proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed_dir / "motion_lora.safetensors").exists()
    assert (killed_dir / "checkpoints" / "step-000002" / "trainer_state.json").exists()
    resumed = train(load_config(cfg_file), resume="latest")
    assert resumed["steps"] == 5 and resumed["losses"] == ref["losses"]
    logged = [json.loads(line) for line in (killed_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4, 5]  # each step once, though steps after 2 ran twice
    a = _weights(ref["outputs"]["motion_lora"])
    b = _weights(resumed["outputs"]["motion_lora"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_log_after_a_resume_has_each_step_once(tiny, toy, tmp_path):
    """A run killed at step 5 whose newest kept checkpoint is step 2 (and whose last log line was cut short)
    logs steps 3-5 again on resume: log.jsonl keeps each step once, and the numbers of the uninterrupted run."""
    from motion_adapters.training.trainer import train

    out = tmp_path / "run"
    cfg = load_config(values=values(tiny, toy, out, run={"max_steps": 5, "checkpoint_every": 2,
                                                         "keep_checkpoints": 0}))
    ref = train(cfg)
    log_file = out / "log.jsonl"
    first = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [r["step"] for r in first] == [1, 2, 3, 4, 5]
    with open(log_file, "a") as f:
        f.write('{"step": 6, "lo')  # the kill came in the middle of a write
    resumed = train(cfg, resume=str(out / "checkpoints" / "step-000002"))
    assert resumed["losses"] == ref["losses"]
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["loss"] for r in records] == [r["loss"] for r in first]


def _tiny_disk(monkeypatch, free=12_000_000):
    """``shutil.disk_usage`` reports a nearly full disk (12 MB free)."""
    from motion_adapters import files

    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12 - free, free))


def _fail(message):
    def writer(*args, **kwargs):
        raise RuntimeError(message)
    return writer


@pytest.mark.parametrize("where", ("checkpoint", "export", "log"))
def test_a_full_disk_ends_the_run_with_one_line_naming_the_path(tiny, toy, tmp_path, monkeypatch, capsys, where):
    """torch's and safetensors' messages for a full disk ("unexpected pos", "iostream error") become one
    line saying "disk full" with the path and the free space; no traceback, no partial checkpoint left."""
    import accelerate
    import yaml

    from motion_adapters import io
    from motion_adapters.cli import EXIT_OS_ERROR, main
    from motion_adapters.files import DiskFullError
    from motion_adapters.training import trainer as trainer_mod

    out = tmp_path / "run"
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(values(tiny, toy, out, run={"max_steps": 2, "checkpoint_every": 1})))
    _tiny_disk(monkeypatch)
    expect = {"checkpoint": out / "checkpoints" / "step-000001", "export": out / "motion_lora.safetensors",
              "log": out / "log.jsonl"}[where]
    if where == "checkpoint":
        monkeypatch.setattr(accelerate.Accelerator, "save_state",
                            _fail("[enforce fail at inline_container.cc:664] . unexpected pos 12345 vs 0"))
    elif where == "export":
        monkeypatch.setattr(io, "save_file", _fail("basic_ios::clear: iostream error"))
    else:
        def full(path, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        monkeypatch.setattr(trainer_mod, "open", full, raising=False)  # the log's plain open() in trainer.py
    with pytest.raises(DiskFullError) as err:
        trainer_mod.train(load_config(cfg_file))
    assert err.value.path == expect and err.value.free_bytes == 12_000_000
    capsys.readouterr()
    assert main(["train", str(cfg_file)]) == EXIT_OS_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: {expect}: disk full — could not write it (12.0 MB free on that disk); free some "
                     "space or write somewhere else"]
    assert not [p for p in (out / "checkpoints").glob(".*")] if (out / "checkpoints").exists() else True
    assert not list(out.glob(".*partial"))


def test_outputs_follow_the_umask(tiny, toy, tmp_path):
    """Checkpoints, exported files and folders, logs: 0644 files and 0755 folders under umask 022
    (safetensors and mkdtemp alone would give 0600 / 0700)."""
    from motion_adapters.training.trainer import train

    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        train(load_config(values=values(tiny, toy, out, "joint", data={"images": "same", "images_per_sample": 1},
                                        run={"max_steps": 2, "checkpoint_every": 1})))
    finally:
        os.umask(old)
    mode = {p: p.stat().st_mode & 0o777 for p in out.rglob("*")}
    assert mode[out / "motion_module.safetensors"] == 0o644 and mode[out / "base"] == 0o755
    assert mode[out / "base" / "unet"] == 0o755 and mode[out / "checkpoints" / "step-000001"] == 0o755
    assert mode[out / "checkpoints" / "step-000001" / "trainable.safetensors"] == 0o644
    assert mode[out / "log.jsonl"] == 0o644 and mode[out / "config.json"] == 0o644
    assert {m for p, m in mode.items() if p.is_file()} == {0o644}
    assert {m for p, m in mode.items() if p.is_dir()} == {0o755}


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not available")
def test_two_processes_match_one_process_with_the_same_global_batch(tiny, toy, tmp_path):
    """2 CPU processes (gloo DDP) × batch 1 == 1 process × batch 2: per tensor ‖a−b‖ ≤ 1e-5·‖a‖.

    Exact equality is not expected: each rank's forward runs on a batch of 1 instead of 2 (different
    reduction order in batched kernels), torchrun sets one thread per process, and gloo sums in its own order.
    Those ~1e-7 gradient differences are then amplified by Adam for elements whose gradient is near ``eps``
    (Adam's first steps are sign-like, update ≈ lr·g/(|g|+eps)): with the default eps 1e-8 the LoRA
    tensors agree only to ~1e-4 in norm. The test therefore uses eps = 1e-3, which makes the update a smooth
    function of the gradient, and checks a norm-relative tolerance per tensor.
    """
    import yaml

    from motion_adapters.training.trainer import train

    opt = {"lr": 1e-3, "eps": 1e-3}
    one = train(load_config(values=values(tiny, toy, tmp_path / "one", run={"batch_size": 2, "max_steps": 2},
                                          optim=opt)))
    cfg_file = tmp_path / "two.yaml"
    cfg_file.write_text(yaml.safe_dump(values(tiny, toy, tmp_path / "two", run={"batch_size": 1, "max_steps": 2},
                                              optim=opt)))
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29517", "-m", "motion_adapters",
                          "train", str(cfg_file)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    a = _weights(one["outputs"]["motion_lora"])
    b = _weights(tmp_path / "two" / "motion_lora.safetensors")
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).norm() / a[k].norm().clamp_min(1e-12)) for k in a)
    print(f"largest per-tensor relative difference: {worst:.2e}")
    assert worst <= 1e-5
    meta = read_state_dict(tmp_path / "two" / "motion_lora.safetensors")[1]
    assert '"num_processes": 2' in meta["motion_adapters.training"]


def _file_digests(folder: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("task", ("motion_lora", "spatial_full"))
def test_low_vram_keeps_frozen_weights_bf16_and_trains_fp32(tiny, toy, tmp_path, task):
    """``run.low_vram`` on CPU: bf16 autocast, AdamW8bit, checkpointing; frozen weights are the base's (and the
    starting motion module's) tensors cast to bf16 and stay bitwise so; trainable and saved weights are fp32;
    the base files are not modified and a written base folder carries the base's fp32 VAE / text encoder."""
    from motion_adapters.base import read_base
    from motion_adapters.loading import KIND_MOTION, load_adapter
    from motion_adapters.swap import live_tensors
    from motion_adapters.training.trainer import Trainer

    digests = _file_digests(tiny.base_a)
    cfg = load_config(values=values(tiny, toy, tmp_path / task, task, run={"low_vram": True}))
    tr = Trainer(cfg)
    assert tr.memory["gradient_checkpointing"] and tr.memory["adamw8bit"]
    assert tr.memory["mixed_precision"] == "bf16" and tr.memory["frozen_dtype"] == "bfloat16"
    base = read_base(tiny.base_a)
    mm = load_adapter(tiny.mm_a_dir, expect=KIND_MOTION)
    originals = {**{f"unet.{k}": v for k, v in {**base.unet, **mm.state_dict}.items()},
                 **{f"vae.{k}": v for k, v in base.vae.items()},
                 **{f"te.{k}": v for k, v in base.text_encoder.items()}}
    trainable = {n for names in tr.tm.groups.values() for n in names}
    params = dict(tr.tm.unet.named_parameters())
    assert trainable and all(params[n].dtype == torch.float32 for n in trainable)

    def frozen() -> dict[str, torch.Tensor]:
        unet_frozen = {id(p) for n, p in params.items() if n not in trainable}
        out = {f"unet.{k}": v.detach().clone() for k, v in live_tensors(tr.tm.unet).items()
               if id(v) in unet_frozen}
        for c, m in (("vae", tr.tm.vae), ("te", tr.tm.text_encoder)):
            out.update({f"{c}.{k}": p.detach().clone() for k, p in m.named_parameters()})
        return out

    before = frozen()
    assert len(before) > 50 and all(v.dtype == torch.bfloat16 for v in before.values())
    for k, v in before.items():  # the stored tensors, cast to bf16, bitwise
        assert torch.equal(v, originals[k].to(torch.bfloat16)), k
    trained_before = {n: params[n].detach().clone() for n in trainable}
    result = tr.run()
    assert len(result["losses"]) == 2 and all(torch.isfinite(torch.tensor(result["losses"])))
    after = frozen()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(trained_before[n], params[n]) for n in trainable), "nothing was trained"
    for kind, path in result["outputs"].items():
        if kind != "base":
            saved = _weights(path)
            assert saved and all(v.dtype == torch.float32 for v in saved.values()), kind
    if task == "spatial_full":
        folder = Path(result["outputs"]["base"])
        out = read_base(folder)
        assert all(v.dtype == torch.float32 for v in out.unet.values())
        for comp in ("vae", "text_encoder"):
            ours, ref = getattr(out, comp), getattr(base, comp)
            assert all(torch.equal(ours[k], ref[k]) for k in ref), comp
    assert _file_digests(tiny.base_a) == digests


# ------------------------------------------------------------------------------------------------ controlnet
def controlnet_values(tiny, data_path, out, **sections):
    """Task controlnet on the tiny base: silhouettes of the toy clips, 2 steps."""
    v = {"task": "controlnet", "model": {"base": str(tiny.base_a)},
         "controlnet": {"preprocessor": "silhouette", "embedding_channels": [4, 8, 8, 16]},
         "data": {"path": str(data_path), "sample": "frame", "resolution": 64},
         "optim": {"lr": 1e-3},
         "run": {"output_dir": str(out), "max_steps": 2, "batch_size": 2, "checkpoint_every": 100,
                 "progress": False, "tensorboard": False, "seed": 7}}
    for k, sub in sections.items():
        v[k] = {**v.get(k, {}), **sub}
    return v


def test_controlnet_run_writes_our_file_and_leaves_the_base_bitwise_frozen(tiny, toy, tmp_path):
    """Clips as independent frames (data.sample: clip), a validation image with its map, then the file:
    diffusers ControlNetModel keys and config, kind controlnet, control kind silhouette."""
    from diffusers import ControlNetModel
    from safetensors import safe_open

    from motion_adapters.training.trainer import Trainer

    cfg = load_config(values=controlnet_values(
        tiny, toy, tmp_path / "run", data={"sample": "clip", "num_frames": 2, "stride": 2},
        validation={"prompts": ["a red square"], "steps": 1}))
    tr = Trainer(cfg)
    frozen = {f"{c}.{k}": v.detach().clone() for c, m in (("unet", tr.tm.unet), ("vae", tr.tm.vae),
              ("te", tr.tm.text_encoder)) for k, v in m.state_dict().items()}
    start = {k: v.detach().clone() for k, v in tr.task.controlnet.state_dict().items()}
    result = tr.run()
    assert len(result["losses"]) == 2 and all(torch.isfinite(torch.tensor(result["losses"])))
    after = {f"{c}.{k}": v for c, m in (("unet", tr.tm.unet), ("vae", tr.tm.vae), ("te", tr.tm.text_encoder))
             for k, v in m.state_dict().items()}
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)
    assert any(not torch.equal(start[k], v) for k, v in tr.task.controlnet.state_dict().items())
    assert (tmp_path / "run" / "validation" / "step-000002-0.png").exists()
    path = Path(result["outputs"]["controlnet"])
    assert path.name == "controlnet.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    assert meta["motion_adapters.kind"] == "controlnet" and meta["motion_adapters.control_kind"] == "silhouette"
    assert meta["motion_adapters.base_family"] == "sd15"
    config = json.loads(meta["motion_adapters.config"])
    assert not any(k.startswith("_") for k in config)
    assert config["conditioning_embedding_out_channels"] == [4, 8, 8, 16]
    training = json.loads(meta["motion_adapters.training"])
    assert training["task"] == "controlnet" and training["steps"] == 2 and training["preprocessor"] == "silhouette"
    model = ControlNetModel.from_config(config)
    assert set(model.state_dict()) == set(tensors)
    model.load_state_dict(tensors)
    assert all(torch.equal(tensors[k], v) for k, v in tr.task.controlnet.state_dict().items())


def test_controlnet_resume_after_an_interruption_gives_the_same_weights(tiny, toy, tmp_path, monkeypatch):
    """A run stopped right after step 3 (checkpoint at step 2) and resumed from it ends bitwise where an
    uninterrupted run ends (the SIGKILL variant of this test runs the motion_lora task)."""
    from motion_adapters.training import trainer as trainer_mod
    from motion_adapters.training.trainer import train

    steps = {"max_steps": 4, "checkpoint_every": 2, "keep_checkpoints": 1}
    ref = train(load_config(values=controlnet_values(tiny, toy, tmp_path / "ref", run=steps)))
    cfg = load_config(values=controlnet_values(tiny, toy, tmp_path / "killed", run=steps))
    log_step = trainer_mod.Trainer._log

    def stop_at_3(self, loss, seconds, bar):
        log_step(self, loss, seconds, bar)
        if self.step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod.Trainer, "_log", stop_at_3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.undo()
    assert not (tmp_path / "killed" / "controlnet.safetensors").exists()
    resumed = train(cfg, resume="latest")
    assert resumed["steps"] == 4 and resumed["losses"] == ref["losses"]
    a = _weights(ref["outputs"]["controlnet"])
    b = _weights(resumed["outputs"]["controlnet"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
