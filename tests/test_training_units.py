"""Training building blocks: configs, parameter groups by module type, data, losses, zero-init identity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from motion_adapters.clips.media import clip_indices
from motion_adapters.training.config import PRESET_DIR, ConfigError, load_config
from motion_adapters.training.data import DataError, VideoDataset
from motion_adapters.training.losses import (
    appearance_debiased,
    sample_noise,
    temporal_coherence,
    train_scheduler,
)
from tests.tiny_data import write_toy_dataset

PRESETS = ("motion", "motion_lora", "spatial_lora", "spatial_full", "joint", "motiondirector")


def base_values(tiny, data_path, **kw):
    v = dict(model=dict(base=str(tiny.base_a), motion_module=str(tiny.mm_a_dir)),
             data=dict(path=str(data_path), num_frames=4, stride=2, resolution=64))
    for k, sub in kw.items():
        v[k] = {**v.get(k, {}), **sub} if isinstance(sub, dict) else sub
    return v


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy"), kinds=("mp4", "gif", "frames", "png"))


def test_presets_validate_and_errors_name_the_key(tiny, toy):
    for name in PRESETS:
        assert (PRESET_DIR / f"{name}.yaml").exists()
        cfg = load_config(name, overrides=[f"model.base={tiny.base_a}", f"data.path={toy}",
                                           f"model.motion_module={tiny.mm_a_dir}"])
        assert cfg.task == name
    with pytest.raises(ConfigError, match=r"optim\.lrr: unknown key"):
        load_config(values=base_values(tiny, toy, optim={"lrr": 1}))
    with pytest.raises(ConfigError, match=r"run\.max_steps: expected an integer, found 'ten'"):
        load_config(values=base_values(tiny, toy), overrides=["run.max_steps=ten"])
    with pytest.raises(ConfigError, match=r"task: expected one of"):
        load_config(values=base_values(tiny, toy, task="dance"))
    with pytest.raises(ConfigError, match=r"loss\.zero_terminal_snr"):
        load_config(values=base_values(tiny, toy), overrides=["loss.zero_terminal_snr=true"])
    with pytest.raises(ConfigError, match=r"model\.motion_module"):
        load_config(values=base_values(tiny, toy, task="motion_lora"), overrides=["model.motion_module=null"])
    cfg = load_config(values=base_values(tiny, toy), overrides=["optim.lr=5e-5", "optim.betas=[0.9, 0.99]"])
    assert cfg.optim.lr == 5e-5 and cfg.optim.betas == (0.9, 0.99)


def test_controlnet_preset_and_its_errors_are_one_line_naming_the_key(tiny, toy):
    from motion_adapters.training.controlnet import embedding_channels

    cfg = load_config("controlnet", overrides=[f"model.base={tiny.base_a}", f"data.path={toy}"])
    assert cfg.task == "controlnet" and cfg.controlnet.preprocessor == "canny"
    cn = base_values(tiny, toy, task="controlnet", model={"motion_module": None})
    for override, message in (
        ("controlnet.preprocessor=depth", r"^controlnet\.preprocessor: expected one of canny, silhouette, found "
                                          r"'depth' \(it needs a depth estimator"),
        ("controlnet.preprocessor=blur", r"^controlnet\.preprocessor: expected one of canny, silhouette, found 'blur'$"),
        ("controlnet.conditioning_scale=-1", r"^controlnet\.conditioning_scale: expected a finite number >= 0"),
        ("controlnet.embedding_channels=[16, 0]", r"^controlnet\.embedding_channels\[1\]: expected an integer >= 1"),
        ("controlnet.scale=1", r"^controlnet\.scale: unknown key"),
        (f"model.motion_module={tiny.mm_a_dir}", r"^model\.motion_module: task controlnet trains on the 2-D base"),
    ):
        with pytest.raises(ConfigError, match=message) as e:
            load_config(values=cn, overrides=[override])
        assert "\n" not in str(e.value)
    assert load_config(values=cn, overrides=["data.sample=clip"]).data.sample == "clip"  # frames of clips
    assert embedding_channels(cfg, {"block_out_channels": [32, 64, 64]}) == (16, 32, 96)
    assert embedding_channels(cfg, {"block_out_channels": [1, 2, 3, 4]}) == (16, 32, 96, 256)
    bad = load_config(values=cn, overrides=["controlnet.embedding_channels=[8, 16]"])
    with pytest.raises(ConfigError, match=r"^controlnet\.embedding_channels: expected 3 entries \(the VAE "
                                          r"downsamples 4x\), found 2"):
        embedding_channels(bad, {"block_out_channels": [32, 64, 64]})


def test_every_number_of_the_config_has_a_range_and_the_defaults_are_in_it():
    from motion_adapters.training.config import INTERVALS, RANGES, TrainConfig, check_ranges, numeric_fields

    keys = [k for k, _ in numeric_fields()]
    assert sorted(keys) == sorted(RANGES), set(keys) ^ set(RANGES)
    check_ranges(TrainConfig())
    assert 0.5 in INTERVALS["data.empty_caption_prob"] and 1.0 not in INTERVALS["optim.betas"]


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lr=-1", r"^optim\.lr: expected a finite number > 0, found -1\.0$"),
    ("optim.lr=nan", r"^optim\.lr: expected a finite number > 0, found nan$"),
    ("optim.lr=.inf", r"^optim\.lr: expected a finite number > 0, found inf$"),
    ("optim.lr_spatial=0", r"^optim\.lr_spatial: expected a finite number > 0"),
    ("optim.betas=[0.9, 1.0]", r"^optim\.betas\[1\]: expected a finite number in \[0, 1\), found 1\.0$"),
    ("optim.eps=0", r"^optim\.eps: expected a finite number > 0"),
    ("optim.weight_decay=-0.1", r"^optim\.weight_decay: expected a finite number >= 0"),
    ("optim.max_grad_norm=nan", r"^optim\.max_grad_norm: "),
    ("optim.warmup_steps=-1", r"^optim\.warmup_steps: expected an integer >= 0, found -1$"),
    ("optim.ema_decay=1", r"^optim\.ema_decay: expected a finite number in \[0, 1\), found 1\.0$"),
    ("data.empty_caption_prob=1.5", r"^data\.empty_caption_prob: expected a finite number in \[0, 1\]"),
    ("data.max_failed_fraction=-0.1", r"^data\.max_failed_fraction: "),
    ("data.num_frames=0", r"^data\.num_frames: expected an integer >= 1, found 0$"),
    ("data.stride=0", r"^data\.stride: "),
    ("lora.rank=0", r"^lora\.rank: expected an integer >= 1"),
    ("lora.alpha=0", r"^lora\.alpha: expected a finite number > 0"),
    ("lora.dropout=1", r"^lora\.dropout: expected a finite number in \[0, 1\)"),
    ("loss.offset_noise=-0.1", r"^loss\.offset_noise: "),
    ("loss.beta_end=1.5", r"^loss\.beta_end: expected a finite number in \(0, 1\)"),
    ("loss.spatial_mask_prob=2", r"^loss\.spatial_mask_prob: "),
    ("run.max_steps=0", r"^run\.max_steps: expected an integer >= 1, found 0$"),
    ("run.batch_size=0", r"^run\.batch_size: "),
    ("run.seed=-1", r"^run\.seed: expected an integer in \[0, 4294967295\], found -1$"),
    ("validation.guidance_scale=nan", r"^validation\.guidance_scale: "),
    ("validation.steps=0", r"^validation\.steps: "),
    ("validation.height=60", r"^validation\.height: expected a multiple of 8"),
    ("vae.kl_weight=-1", r"^vae\.kl_weight: "),
])
def test_numbers_out_of_range_are_refused_at_load_naming_the_key(tiny, toy, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(values=base_values(tiny, toy), overrides=[override])


def test_print_config_refuses_a_bad_number_with_one_line(capsys):
    from motion_adapters.cli import main

    assert main(["train", "motion_lora", "--set", "optim.lr=nan", "--print-config"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "error: optim.lr: expected a finite number > 0, found nan\n"


@pytest.mark.parametrize(("override", "value"), [
    ("run.mixed_precision=no", "no"), ("run.mixed_precision=false", "no"), ("run.mixed_precision=No", "no"), ("run.mixed_precision=off", "no"),
    ("run.mixed_precision=bf16", "bf16")])
def test_yaml_1_1_booleans_do_not_bite_string_keys(tiny, toy, tmp_path, override, value):
    cfg = load_config(values=base_values(tiny, toy), overrides=[override])
    assert cfg.run.mixed_precision == value
    f = tmp_path / "c.yaml"  # the same in a YAML file, and through values parsed elsewhere (as False)
    f.write_text(f"model: {{base: {tiny.base_a}, motion_module: {tiny.mm_a_dir}}}\ndata: {{path: {toy}}}\n"
                 f"run: {{mixed_precision: {override.split('=')[1]}}}\n")
    assert load_config(f).run.mixed_precision == value
    assert load_config(values=base_values(tiny, toy, run={"mixed_precision": False})).run.mixed_precision == "no"
    for word, flag in (("yes", True), ("on", True), ("no", False), ("off", False), ("true", True)):
        assert load_config(values=base_values(tiny, toy), overrides=[f"data.hflip={word}"]).data.hflip is flag
    assert load_config(values=base_values(tiny, toy), overrides=["data.caption_column=no"]).data.caption_column == "no"


def test_parameter_groups_are_decided_by_module_type(tiny):
    from diffusers import UNetMotionModel
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    from motion_adapters.base import read_base
    from motion_adapters.loading import load_adapter
    from motion_adapters.swap import build_motion_unet
    from motion_adapters.training.params import lora_targets, split_parameters

    base = read_base(tiny.base_a)
    unet: UNetMotionModel = build_motion_unet(base.configs["unet"], base.unet, load_adapter(tiny.mm_a_dir), "t")
    spatial, temporal = split_parameters(unet)
    unet.freeze_unet2d_params()  # diffusers' name-based rule agrees on this standard layout
    assert set(temporal) == {n for n, p in unet.named_parameters() if p.requires_grad}
    assert len(spatial) + len(temporal) == len(list(unet.parameters()))
    owners = {n for n, m in unet.named_modules() if isinstance(m, AnimateDiffTransformer3D)}
    t_attn = lora_targets(unet, "temporal", "attn")
    assert t_attn and all(any(t.startswith(o + ".") for o in owners) for t in t_attn)
    assert all(t.split(".")[-1] in ("to_q", "to_k", "to_v", "0") for t in t_attn)
    s_md = lora_targets(unet, "spatial", "attn1_ff")
    assert s_md and not any(".attn2." in t for t in s_md) and any(".ff." in t for t in s_md)
    assert not any(any(t.startswith(o + ".") for o in owners) for t in s_md)


def test_new_motion_module_is_identity_at_step_zero(tiny):
    """Zeroed proj_out: UNetMotionModel output equals the plain UNet2D output for every frame."""
    from diffusers import UNet2DConditionModel

    from motion_adapters.base import read_base
    from motion_adapters.swap import build_motion_unet
    from motion_adapters.training.model import new_motion_module

    cfg = load_config(values=base_values(tiny, tiny.root, task="motion", model={"motion_module": None}))
    base = read_base(tiny.base_a)
    mm = new_motion_module(base.configs["unet"], cfg, seed=0)
    proj = [k for k in mm.state_dict if ".proj_out." in k and ".transformer_blocks." not in k]
    assert proj and all(not mm.state_dict[k].any() for k in proj)
    assert any(mm.state_dict[k].abs().sum() > 0 for k in mm.state_dict if ".proj_in." in k)  # normal init
    unet = build_motion_unet(base.configs["unet"], base.unet, mm, "t")
    u2d = UNet2DConditionModel.from_pretrained(tiny.base_a, subfolder="unet").eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 3, 8, 8, generator=g)
    emb = torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        video = unet(x, 500, encoder_hidden_states=emb.repeat_interleave(3, 0)).sample
        frames = u2d(x[0].permute(1, 0, 2, 3), 500, encoder_hidden_states=emb.repeat(3, 1, 1)).sample
    torch.testing.assert_close(video[0].permute(1, 0, 2, 3), frames, atol=1e-5, rtol=1e-5)


def test_temporal_bypass_gives_the_spatial_unet(tiny):
    from diffusers import UNet2DConditionModel

    from motion_adapters.base import read_base
    from motion_adapters.loading import load_adapter
    from motion_adapters.swap import build_motion_unet
    from motion_adapters.training.params import temporal_bypass

    base = read_base(tiny.base_a)
    unet = build_motion_unet(base.configs["unet"], base.unet, load_adapter(tiny.mm_a_dir), "t")
    u2d = UNet2DConditionModel.from_pretrained(tiny.base_a, subfolder="unet").eval()
    x, emb = torch.randn(2, 4, 1, 8, 8), torch.randn(2, 77, 32)
    with torch.no_grad():
        plain = unet(x, 10, encoder_hidden_states=emb).sample
        with temporal_bypass(unet):
            bypass = unet(x, 10, encoder_hidden_states=emb).sample
        ref = u2d(x[:, :, 0], 10, encoder_hidden_states=emb).sample
    torch.testing.assert_close(bypass[:, :, 0], ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(plain, bypass, atol=1e-4)  # a motion module on one frame is NOT the identity


def test_dataset_reads_every_media_kind_deterministically(tiny, toy):
    cfg = load_config(values=base_values(tiny, toy)).data
    ds = VideoDataset(cfg, seed=1)
    assert ds.summary()["videos"] == 3 and ds.summary()["images"] == 1
    kinds = {}
    for p in range(8):
        it = ds[p]
        kinds[it["file"]] = it["kind"]
        assert it["pixels"].shape == ((4 if it["kind"] == "video" else 1), 3, 64, 64)
        assert -1.0 <= float(it["pixels"].min()) and float(it["pixels"].max()) <= 1.0
    assert kinds == {"clip0.mp4": "video", "clip1.gif": "video", "clip2": "video", "image3.png": "image"}
    a, b = VideoDataset(cfg, seed=1)[5], VideoDataset(cfg, seed=1)[5]
    assert a["seed"] == b["seed"] and torch.equal(a["pixels"], b["pixels"])
    # AnimateDiff sampling: span (F-1)*stride+1 frames, shorter videos densely
    assert clip_indices(100, 16, 4, 0.0) == list(range(0, 61, 4))
    assert clip_indices(8, 4, 4, None) == [0, 2, 4, 7]


def test_hflip_only_when_asked_and_empty_captions(tiny, toy):
    values = base_values(tiny, toy, data={"random_start": False})
    plain = VideoDataset(load_config(values=values).data, seed=3)
    flipped = VideoDataset(load_config(values=values, overrides=["data.hflip=true",
                                                                 "data.empty_caption_prob=1.0"]).data, seed=3)
    seen_flip = False
    for p in range(6):
        a, b = plain[p], flipped[p]
        assert b["text"] == "" and a["text"]
        seen_flip |= torch.equal(a["pixels"].flip(-1), b["pixels"]) and not torch.equal(a["pixels"], b["pixels"])
        assert torch.equal(a["pixels"], b["pixels"]) or torch.equal(a["pixels"].flip(-1), b["pixels"])
    assert seen_flip


def test_webvid_columns_broken_files_and_failure_limit(tiny, tmp_path):
    from motion_adapters.training.data import FailureCounter
    from tests.tiny_data import moving_square, write_video

    root = tmp_path / "webvid"
    write_video(root / "00001" / "123.mp4", moving_square(10))
    write_video(root / "456.mp4", moving_square(10))
    (root / "789.mp4").write_bytes(b"garbage" * 20)
    (root / "metadata.csv").write_text("videoid,name,page_dir\n123,a clip,00001\n456,another,00002\n"
                                       "789,broken,00003\n999,missing,00004\n")
    cfg = load_config(values=base_values(tiny, root, data={"max_failed_fraction": 0.5})).data
    ds = VideoDataset(cfg, seed=0)
    assert sorted(e.rel for e in ds.entries) == ["00001/123.mp4", "456.mp4", "789.mp4"]
    assert ds.refused == [("999.mp4", "missing")]
    items = [ds[p] for p in range(6)]
    assert all(it["file"] in ("00001/123.mp4", "456.mp4") for it in items)
    counter = FailureCounter(0.5, root, min_files=1)
    counter.add(items)
    assert list(counter.failed) == ["789.mp4"]
    strict = FailureCounter(0.01, root, min_files=1)
    with pytest.raises(DataError, match=r"data\.max_failed_fraction=1%.*789\.mp4"):
        strict.add(items)
    with pytest.raises(DataError, match=r"more than data\.max_failed_fraction"):
        VideoDataset(load_config(values=base_values(tiny, root, data={"max_failed_fraction": 0.1})).data, 0)
    (root / "metadata.csv").write_text("path,caption\nx.mp4,hi\n")
    with pytest.raises(DataError, match=r"expected a column 'file_name'.*found columns \['caption', 'path'\]"):
        VideoDataset(cfg, seed=0)


def test_failure_limit_counts_distinct_files_not_load_attempts(tiny, tmp_path):
    """Two epochs over 3 files with one broken: 2 failed loads of ~8 attempts, but 1 of 3 files."""
    from motion_adapters.training.data import FailureCounter
    from tests.tiny_data import moving_square, write_video

    root = tmp_path / "d"
    for name in ("a", "b"):
        write_video(root / f"{name}.mp4", moving_square(10))
    (root / "c.mp4").write_bytes(b"garbage" * 20)
    (root / "metadata.csv").write_text("file_name,text\na.mp4,x\nb.mp4,y\nc.mp4,z\n")
    ds = VideoDataset(load_config(values=base_values(tiny, root, data={"max_failed_fraction": 0.5})).data, seed=0)
    items = [ds[p] for p in range(6)]
    assert sum(len(it["failures"]) for it in items) == 2
    counter = FailureCounter(0.5, root, min_files=1)
    counter.add(items[:3])
    counter.add(items[3:])
    assert counter.tried == {"a.mp4", "b.mp4", "c.mp4"} and list(counter.failed) == ["c.mp4"]
    assert counter.attempts == 8
    resumed = FailureCounter(0.5, root, min_files=1)
    resumed.load_state(json.loads(json.dumps(counter.state())))
    assert (resumed.tried, resumed.failed, resumed.attempts) == (counter.tried, counter.failed, counter.attempts)
    with pytest.raises(DataError, match=r": 1 of 3 files tried so far failed \(33%\), more than "
                                        r"data\.max_failed_fraction=30%\. First failures: c\.mp4: "):
        FailureCounter(0.3, root, min_files=1).add(items)


def test_losses():
    from motion_adapters.training.config import LossConfig

    pred = torch.randn(2, 4, 5, 3, 3)
    assert float(temporal_coherence(pred, pred)) == 0.0
    shifted = pred + 1.0  # a constant offset has identical frame differences
    assert float(temporal_coherence(pred, shifted)) < 1e-10
    # appearance-debiased: a per-sample offset shared by all frames is partly removed (beta=1: sqrt2*x - x_k)
    offset = torch.randn(2, 4, 1, 3, 3)
    ad = appearance_debiased(pred + offset, pred, [0, 2], beta=1.0)
    plain = torch.nn.functional.mse_loss(pred + offset, pred)
    assert float(ad) < float(plain)
    lc = LossConfig(offset_noise=0.1)
    lat = torch.zeros(2, 4, 3, 8, 8)
    n1, t1 = sample_noise(lat, [1, 2], lc, 1000)
    n2, t2 = sample_noise(lat, [1, 2], lc, 1000)
    assert torch.equal(n1, n2) and torch.equal(t1, t2) and t1.shape == (2,)
    zsnr = train_scheduler(LossConfig(prediction_type="v_prediction", zero_terminal_snr=True))
    assert float(zsnr.alphas_cumprod[-1]) < 1e-6
    assert float(train_scheduler(LossConfig()).alphas_cumprod[-1]) > 1e-3


def test_latent_cache_reuses_encodings(tiny, toy, tmp_path):
    from motion_adapters.training.trainer import Trainer

    values = base_values(tiny, toy, task="motion_lora", data={"latent_cache": str(tmp_path / "cache")},
                         run={"output_dir": str(tmp_path / "run"), "progress": False, "tensorboard": False},
                         lora={"rank": 2})
    tr = Trainer(load_config(values=values))
    first = tr.dataset[0]
    assert "pixels" in first and "cache_path" in first
    lat1 = tr.task.encode_latents([first])
    second = tr.dataset[0]
    assert "latent_mean" in second and "pixels" not in second
    torch.testing.assert_close(tr.task.encode_latents([second]), lat1, atol=1e-5, rtol=1e-5)
    nocache = VideoDataset(load_config(values=base_values(tiny, toy)).data, seed=tr.cfg.run.seed)[0]
    torch.testing.assert_close(tr.task.encode_latents([nocache]), lat1, atol=1e-4, rtol=1e-4)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    json.dumps(tr.dataset.summary())
    np.testing.assert_equal(True, True)


def test_lr_schedules_warm_up_then_hold_or_decay():
    from motion_adapters.training.config import OptimConfig
    from motion_adapters.training.optim import build_lr_scheduler

    def lrs(schedule: str, processes: int = 1) -> list[float]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = build_lr_scheduler(opt, OptimConfig(lr=1.0, warmup_steps=2, lr_schedule=schedule), 10, processes)
        out = []
        for _ in range(10):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            for _ in range(processes):   # accelerate steps a prepared scheduler once per process
                sched.step()
        return out

    const = lrs("constant")
    assert const[:3] == [0.0, 0.5, 1.0] and const[-1] == 1.0
    cos = lrs("cosine")
    assert cos[:3] == [0.0, 0.5, 1.0]
    assert all(a > b for a, b in zip(cos[2:], cos[3:], strict=False)) and cos[-1] < 0.05
    assert lrs("cosine", processes=2) == cos
