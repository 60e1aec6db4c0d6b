"""Engine features for the shapes world: task vae, task t2i (from scratch and DreamBooth-style), EMA, fp16 and
LDM export, the model registry and ``motion=None`` (tiny sizes, a few steps each)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from motion_adapters.training.config import ConfigError, load_config

VAE = dict(block_out_channels=[16, 32], down_block_types=["DownEncoderBlock2D"] * 2,
           up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, layers_per_block=1, norm_num_groups=4,
           sample_size=32)
UNET = dict(sample_size=16, block_out_channels=[16, 32], layers_per_block=1,
            down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
            cross_attention_dim=32, attention_head_dim=4, norm_num_groups=4)
TE = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=1, projection_dim=32)
RUN = dict(progress=False, tensorboard=False, device="cpu", checkpoint_every=1000, seed=3)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from motion_adapters.shapes.data import write_dataset

    folder = tmp_path_factory.mktemp("toyimg")
    write_dataset(folder, "images", n=4, seed=1, looks=("light", "navy"))
    return folder


def vae_values(images, out, **run) -> dict:
    return dict(task="vae", model=dict(vae_config=VAE), data=dict(path=str(images), sample="frame", resolution=32),
                optim=dict(lr=2e-3, weight_decay=0.0, ema_decay=0.9),
                run={**RUN, "output_dir": str(out), "max_steps": 12, "batch_size": 4, **run})


@pytest.fixture(scope="module")
def vae_run(images, tmp_path_factory):
    from motion_adapters.training.trainer import train

    out = tmp_path_factory.mktemp("vae")
    return out, train(load_config(values=vae_values(images, out)))


def test_vae_overfits_and_exports(vae_run):
    from diffusers import AutoencoderKL

    out, res = vae_run
    assert np.mean(res["losses"][-3:]) < 0.7 * np.mean(res["losses"][:3])
    vae = AutoencoderKL.from_pretrained(str(out / "vae"))
    assert vae.config.scaling_factor != 0.18215 and vae.config.scaling_factor > 0  # 1 / latent std
    assert vae.encode(torch.zeros(1, 3, 32, 32)).latent_dist.mean.shape == (1, 4, 16, 16)


def test_vae_killed_after_a_checkpoint_then_resumed_matches_an_uninterrupted_run(vae_run, images, tmp_path):
    """SIGKILL right after the step-4 checkpoint, ``--resume latest``: same losses, same exported weights (EMA
    and latent scale included) as the uninterrupted ``vae_run`` (checkpointing does not change the numbers)."""
    import yaml
    from safetensors.torch import load_file

    from motion_adapters.training.trainer import train

    values = vae_values(images, tmp_path / "killed", checkpoint_every=4)
    cfg_file = tmp_path / "vae.yaml"
    cfg_file.write_text(yaml.safe_dump(values))
    # the child sets torch's thread count as this process did (tests/fixtures.py): an explicit
    # set_num_threads changes CPU conv numerics even at the default count, and the runs must match bitwise
    child = ("import sys, torch; torch.set_num_threads(int(sys.argv[1])); from motion_adapters.cli import main; "
             "sys.exit(main(sys.argv[2:]))")
    proc = subprocess.Popen([sys.executable, "-c", child, str(torch.get_num_threads()), "train", str(cfg_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("checkpoint saved:"):
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "vae").exists()
    resumed = train(load_config(cfg_file), resume="latest")
    ref_out, ref = vae_run
    assert resumed["steps"] == 12 and resumed["losses"] == ref["losses"]
    name = "vae/diffusion_pytorch_model.safetensors"
    a, b = load_file(str(ref_out / name)), load_file(str(tmp_path / "killed" / name))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    scale = [json.loads((o / "vae" / "config.json").read_text())["scaling_factor"] for o in (ref_out, tmp_path / "killed")]
    assert scale[0] == scale[1]
    logs = [json.loads(line) for line in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs][-8:] == list(range(5, 13))  # the resumed run logs steps 5..12


@pytest.fixture(scope="module")
def base_run(vae_run, images, tmp_path_factory):
    from motion_adapters.shapes.tokenizer import write_shapes_tokenizer
    from motion_adapters.training.trainer import Trainer

    out = tmp_path_factory.mktemp("t2i")
    tokenizer = write_shapes_tokenizer(out / "tokenizer")
    cfg = load_config(values=dict(
        task="t2i", model=dict(unet_config=UNET, text_encoder_config=TE, vae=str(vae_run[0] / "vae"),
                               tokenizer=str(tokenizer), train_text_encoder=True),
        data=dict(path=str(images), sample="frame", resolution=32),
        optim=dict(lr=2e-3, weight_decay=0.0, ema_decay=0.5),
        run=dict(RUN, output_dir=str(out), max_steps=10, batch_size=4, export_ldm=True, export_dtype="fp16")))
    tr = Trainer(cfg)
    vae0 = {k: v.clone() for k, v in tr.tm.vae.state_dict().items()}
    te0 = {k: v.clone() for k, v in tr.tm.text_encoder.state_dict().items()}
    res = tr.run()
    return out, res, tr, vae0, te0


def test_t2i_from_scratch_trains_unet_and_text_encoder(base_run):
    out, res, tr, vae0, te0 = base_run
    assert np.mean(res["losses"][-3:]) < np.mean(res["losses"][:3])
    assert all(torch.equal(v, tr.tm.vae.state_dict()[k]) for k, v in vae0.items())  # frozen: bitwise
    te1 = tr.tm.text_encoder.state_dict()
    assert any(not torch.equal(v, te1[k]) for k, v in te0.items() if v.is_floating_point())
    assert tr.ema is not None and tr.ema.updates == 10
    base = out / "base"
    assert (base / "model_index.json").exists() and (out / "model.safetensors").exists()
    from safetensors import safe_open

    with safe_open(str(base / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16
    # the export is the EMA, not the live weights
    from motion_adapters.base import read_base

    bw = read_base(base)
    live = dict(tr.tm.unet.named_parameters())
    name = "conv_in.weight"
    assert torch.allclose(bw.unet[name].float(), tr.ema.shadow[f"unet.{name}"].half().float())
    assert not torch.allclose(bw.unet[name].float(), live[name].detach().half().float())


def test_t2i_resume_keeps_ema_and_text_encoder(base_run, tmp_path):
    from motion_adapters.training.checkpoint import TRAINABLE_FILE
    from motion_adapters.training.trainer import Trainer

    out, _res, tr, *_ = base_run
    cfg = tr.cfg
    cfg.run.checkpoint_every = 2
    cfg.run.output_dir = str(tmp_path)
    cfg.run.max_steps = 3
    Trainer(cfg).run()  # checkpoint at step 2 (the final step is exported, not checkpointed)
    ckpt = tmp_path / "checkpoints"
    cfg.run.max_steps = 4
    t2 = Trainer(cfg, resume="latest")
    assert t2.step == 2 and t2.ema.updates == 2
    from safetensors.torch import load_file

    saved = load_file(str(next(ckpt.iterdir()) / TRAINABLE_FILE))
    assert any(k.startswith("text_encoder.") for k in saved) and any(k.startswith("ema::") for k in saved)


def test_dreambooth_finetune_exports_folder_and_ldm(base_run, images, tmp_path):
    from motion_adapters.inference import VideoGenerator
    from motion_adapters.training.trainer import Trainer

    base = base_run[0] / "base"
    cfg = load_config(values=dict(task="t2i", model=dict(base=str(base)),
                                  data=dict(path=str(images), sample="frame", resolution=32),
                                  optim=dict(lr=1e-3), run=dict(RUN, output_dir=str(tmp_path), max_steps=2,
                                                                batch_size=2, export_ldm=True)))
    tr = Trainer(cfg)
    te0 = {k: v.clone() for k, v in tr.tm.text_encoder.state_dict().items()}
    unet0 = {k: v.clone() for k, v in tr.tm.unet.state_dict().items()}
    tr.run()
    assert all(torch.equal(v, tr.tm.text_encoder.state_dict()[k]) for k, v in te0.items())
    assert any(not torch.equal(v, tr.tm.unet.state_dict()[k]) for k, v in unet0.items())
    # the single-file LDM export loads as a community checkpoint (architecture + tokenizer from the folder)
    gen = VideoGenerator(base=str(tmp_path / "model.safetensors"), motion=None, base_config=str(base))
    assert gen.pipe.tokenizer.model_max_length == 16
    frames = gen.generate("a red circle moving left", num_frames=2, num_inference_steps=1).frames
    assert frames.shape == (2, 32, 32, 3)
    gen.load_base(str(tmp_path / "base"))


def test_config_errors_name_the_key(images):
    with pytest.raises(ConfigError, match="model.vae_config"):
        load_config(values=dict(task="vae", data=dict(path=str(images), sample="frame")))
    with pytest.raises(ConfigError, match="model.tokenizer"):
        load_config(values=dict(task="t2i", model=dict(unet_config=UNET, vae="x"),
                                data=dict(path=str(images), sample="frame")))
    with pytest.raises(ConfigError, match="train_text_encoder"):
        load_config(values=dict(task="motion", model=dict(base="b", train_text_encoder=True),
                                data=dict(path=str(images))))
    with pytest.raises(ConfigError, match="data.sample"):
        load_config(values=dict(task="t2i", model=dict(base="b"), data=dict(path=str(images))))


def test_ema_math():
    from motion_adapters.training.ema import EMA

    p = torch.nn.Parameter(torch.zeros(2))
    ema = EMA({"p": p}, decay=0.9)
    with torch.no_grad():
        p.fill_(1.0)
    ema.update()  # warm-up decay min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.shadow["p"], torch.full((2,), 0.9))
    with ema.applied():
        assert torch.allclose(p, torch.full((2,), 0.9))
    assert torch.equal(p.detach(), torch.ones(2))


def test_motion_none_is_per_frame_sd(tiny):
    """motion=None (an all-zero identity module) equals motion strength 0 with a real module."""
    from motion_adapters.inference import VideoGenerator

    fast = dict(num_frames=3, height=64, width=64, num_inference_steps=2, seed=0)
    a = VideoGenerator(tiny.base_a, tiny.mm_a_dir).generate("a red circle", motion_strength=0.0, **fast).frames
    gen = VideoGenerator(tiny.base_a, None)
    b = gen.generate("a red circle", **fast)
    assert np.abs(a - b.frames).max() <= 1e-4
    assert b.recipe["motion"]["name"] == "none"
    gen.load_motion(tiny.mm_a_dir)
    gen.load_motion("none")
    assert gen.motion_source == "none"


def test_registry_names_and_missing_weights(tmp_path, monkeypatch):
    from motion_adapters.errors import MotionAdapterError
    from motion_adapters.hub import resolve_source
    from motion_adapters.registry import list_models
    from motion_adapters.shapes.models import ENV_DIR

    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    with pytest.raises(MotionAdapterError, match="motion-adapters toy build"):
        resolve_source("shapes-base")
    rows = list_models()
    assert {r["name"] for r in rows} >= {"shapes-base", "shapes-navy", "shapes-paper", "shapes-hq",
                                         "shapes-motion", "shapes-zoom-lora"}
    assert not any(r["present"] for r in rows)
    from motion_adapters.cli import main

    assert main(["models", "--json"]) == 0
    (tmp_path / "shapes-motion.safetensors").write_bytes(b"x")
    assert resolve_source("shapes-motion") == tmp_path / "shapes-motion.safetensors"
    assert json.loads(json.dumps(list_models()))[4]["present"]
