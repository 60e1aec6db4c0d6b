"""Task sparsectrl on the tiny models: config errors name the key, keyframe masks, the encoder starts from the
base UNet and the motion module, a few steps leave base and motion module bitwise frozen, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from motion_adapters.io import read_state_dict
from motion_adapters.training.config import ConfigError, load_config
from tests.tiny_data import write_toy_dataset


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("scclips"), kinds=("frames", "mp4"))


def sc_values(tiny, data_path, out, **sections):
    """Task sparsectrl on the tiny base + motion module: 4-frame clips, 2 steps."""
    v = {"task": "sparsectrl", "model": {"base": str(tiny.base_a), "motion_module": str(tiny.mm_a_dir)},
         "sparsectrl": {"kind": "rgb"},
         "data": {"path": str(data_path), "num_frames": 4, "stride": 2, "resolution": 64},
         "optim": {"lr": 1e-3},
         "run": {"output_dir": str(out), "max_steps": 2, "batch_size": 2, "checkpoint_every": 100,
                 "progress": False, "tensorboard": False, "seed": 7}}
    for k, sub in sections.items():
        v[k] = {**v.get(k, {}), **sub}
    return v


def test_preset_and_errors_are_one_line_naming_the_key(tiny, clips, tmp_path):
    cfg = load_config("sparsectrl", overrides=[f"model.base={tiny.base_a}", f"data.path={clips}",
                                               f"model.motion_module={tiny.mm_a_dir}"])
    assert cfg.task == "sparsectrl" and cfg.sparsectrl.kind == "rgb"
    good = sc_values(tiny, clips, tmp_path)
    for override, message in (
        ("sparsectrl.kind=depth", r"^sparsectrl\.kind: expected one of \['rgb', 'scribble'\], found 'depth'$"),
        ("sparsectrl.first_prob=1.5", r"^sparsectrl\.first_prob: expected a finite number in \[0, 1\]"),
        ("sparsectrl.max_keyframes=0", r"^sparsectrl\.max_keyframes: expected an integer >= 1"),
        ("sparsectrl.max_keyframes=9", r"^sparsectrl\.max_keyframes: expected at most data\.num_frames \(4\)"),
        ("sparsectrl.uncond_prob=0.6", r"^sparsectrl\.uncond_prob: sparsectrl\.first_prob \+ first_last_prob"),
        ("sparsectrl.scale=1", r"^sparsectrl\.scale: unknown key"),
        ("model.motion_module=null", r"^model\.motion_module: task sparsectrl trains on top of"),
        ("data.sample=frame", r"^data\.sample: task sparsectrl conditions keyframes of clips"),
        ("sparsectrl.embedding_channels=[4, 8]", r"^sparsectrl\.embedding_channels: an rgb encoder takes latents"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(values=good, overrides=[override])
    with pytest.raises(ConfigError, match=r"^sparsectrl\.preprocessor: expected one of canny, silhouette"):
        load_config(values=good, overrides=["sparsectrl.kind=scribble", "sparsectrl.preprocessor=blur"])
    load_config(values=good, overrides=["sparsectrl.kind=rgb", "sparsectrl.preprocessor=blur"])  # unused by rgb


def test_keyframe_masks_follow_the_probabilities(tiny, clips, tmp_path):
    from motion_adapters.training.sparsectrl import condition, keyframes

    cfg = load_config(values=sc_values(tiny, clips, tmp_path, data={"num_frames": 8},
                                       sparsectrl={"first_prob": 0.4, "first_last_prob": 0.3, "uncond_prob": 0.1,
                                                   "max_keyframes": 3}))
    draws = [keyframes(s, 8, cfg) for s in range(4000)]
    assert draws == [keyframes(s, 8, cfg) for s in range(4000)]          # from the clip's seed alone
    share = {k: np.mean([d == v for d in draws]) for k, v in (("first", [0]), ("first_last", [0, 7]),
                                                              ("none", []))}
    assert abs(share["first"] - 0.4 - 0.2 / 3 / 8) < 0.03      # random single keyframes land on 0 sometimes
    assert abs(share["first_last"] - 0.3) < 0.03 and abs(share["none"] - 0.1) < 0.02
    assert all(1 <= len(d) <= 3 and d == sorted(set(d)) for d in draws if d not in ([0], [0, 7], []))
    z = torch.randn(2, 4, 8, 2, 2)
    cond, mask = condition(z, None, [[0, 7], []])
    assert torch.equal(cond[0, :, [0, 7]], z[0, :, [0, 7]]) and cond[0, :, 1:7].abs().sum() == 0
    assert cond[1].abs().sum() == 0 and mask.shape == (2, 1, 8, 2, 2)
    assert mask[0, 0, :, 0, 0].tolist() == [1, 0, 0, 0, 0, 0, 0, 1] and mask[1].sum() == 0


def test_encoder_starts_from_the_base_unet_and_the_motion_module(tiny, clips, tmp_path):
    from motion_adapters.loading import KIND_MOTION, load_adapter
    from motion_adapters.training.sparsectrl import build_sparsectrl_models

    cfg = load_config(values=sc_values(tiny, clips, tmp_path))
    tm, enc, report = build_sparsectrl_models(cfg, "cpu", None)
    motion = load_adapter(str(tiny.mm_a_dir), expect=KIND_MOTION)
    assert enc.config.motion_max_seq_length == motion.config["motion_max_seq_length"]
    assert enc.config.use_simplified_condition_embedding and enc.config.conditioning_channels == 4
    own = enc.state_dict()
    assert report["copied"] and not report["not_from_module"]
    assert all(torch.equal(own[k], motion.state_dict[k]) for k in report["copied"])
    assert all(".attn2." in k or ".norm2." in k or k.startswith(("up_blocks.", "mid_block."))
               for k in report["not_in_encoder"])
    unet = tm.unet.state_dict()
    spatial = [k for k in own if k.startswith("down_blocks.") and ".motion_modules." not in k]
    assert spatial and all(torch.equal(own[k], unet[k]) for k in spatial)
    zero = [k for k in own if k.startswith(("controlnet_down_blocks.", "controlnet_mid_block.",
                                            "controlnet_cond_embedding."))]
    assert zero and all(own[k].abs().sum() == 0 for k in zero)        # step 0: the plain text-to-video model


@pytest.mark.parametrize("kind", ("rgb", "scribble"))
def test_run_writes_our_file_and_leaves_base_and_motion_module_bitwise_frozen(tiny, clips, tmp_path, kind):
    from diffusers import SparseControlNetModel
    from safetensors import safe_open

    from motion_adapters.training.trainer import Trainer

    extra = {"sparsectrl": {"kind": kind, "embedding_channels": [4, 8, 8, 16]} if kind == "scribble" else {}}
    if kind == "rgb":
        extra["validation"] = {"prompts": ["a red square"], "steps": 1, "num_frames": 4}
    cfg = load_config(values=sc_values(tiny, clips, tmp_path / "run", **extra))
    tr = Trainer(cfg)
    frozen = {f"{c}.{k}": v.detach().clone() for c, m in (("unet", tr.tm.unet), ("vae", tr.tm.vae),
              ("te", tr.tm.text_encoder)) for k, v in m.state_dict().items()}
    start = {k: v.detach().clone() for k, v in tr.task.encoder.state_dict().items()}
    result = tr.run()
    assert len(result["losses"]) == 2 and all(torch.isfinite(torch.tensor(result["losses"])))
    after = {f"{c}.{k}": v for c, m in (("unet", tr.tm.unet), ("vae", tr.tm.vae), ("te", tr.tm.text_encoder))
             for k, v in m.state_dict().items()}
    assert any(".motion_modules." in k for k in frozen)
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)      # base and motion module untouched
    assert any(not torch.equal(start[k], v) for k, v in tr.task.encoder.state_dict().items())
    if kind == "rgb":
        assert (tmp_path / "run" / "validation" / "step-000002-0.png").exists()
    path = Path(result["outputs"]["sparsectrl"])
    assert path.name == "sparsectrl.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    assert meta["motion_adapters.kind"] == "sparsectrl" and meta["motion_adapters.control_kind"] == kind
    config = json.loads(meta["motion_adapters.config"])
    assert config["use_simplified_condition_embedding"] is (kind == "rgb")
    training = json.loads(meta["motion_adapters.training"])
    assert training["task"] == "sparsectrl" and training["steps"] == 2 and training["control_kind"] == kind
    model = SparseControlNetModel.from_config(config)
    assert set(model.state_dict()) == set(tensors)
    model.load_state_dict(tensors)


def test_resume_after_an_interruption_gives_the_same_weights(tiny, clips, tmp_path, monkeypatch):
    """Stopped right after step 3 (checkpoint at step 2), resumed: bitwise where an uninterrupted run ends,
    with 8-bit AdamW and gradient checkpointing on (the shared engine's memory savers)."""
    from motion_adapters.training import trainer as trainer_mod
    from motion_adapters.training.trainer import train

    steps = {"max_steps": 4, "checkpoint_every": 2, "keep_checkpoints": 1, "gradient_checkpointing": True}
    optim = {"optimizer": "adamw8bit"}
    ref = train(load_config(values=sc_values(tiny, clips, tmp_path / "ref", run=steps, optim=optim)))
    assert ref["memory"]["gradient_checkpointing"] and ref["memory"]["adamw8bit"]
    cfg = load_config(values=sc_values(tiny, clips, tmp_path / "killed", run=steps, optim=optim))
    log_step = trainer_mod.Trainer._log

    def stop_at_3(self, loss, seconds, bar):
        log_step(self, loss, seconds, bar)
        if self.step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod.Trainer, "_log", stop_at_3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.undo()
    assert not (tmp_path / "killed" / "sparsectrl.safetensors").exists()
    resumed = train(cfg, resume="latest")
    assert resumed["steps"] == 4 and resumed["losses"] == ref["losses"]
    a, b = read_state_dict(ref["outputs"]["sparsectrl"])[0], read_state_dict(resumed["outputs"]["sparsectrl"])[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
