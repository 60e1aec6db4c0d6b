"""Resource limits before work starts: the memory estimate, the refusal of clips that cannot fit (before any
denoising step, naming what they need, what the machine has and what would help), and the hard caps."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import torch

from motion_adapters.cli import main as cli
from motion_adapters.errors import MotionAdapterError
from motion_adapters.inference import VideoGenerator
from motion_adapters.inference import generator as generator_module
from motion_adapters.inference.cli import LABELS
from motion_adapters.inference.memory import (
    FRAGMENTATION,
    OVERHEAD,
    available_memory,
    check_fits,
    estimate_generation,
)
from motion_adapters.inference.options import MAX_SIDE, GenerateOptions

GB = 10**9
# SD1.5's UNet and VAE layouts (only the keys the estimate reads)
SD15_UNET = dict(block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, in_channels=4,
                 cross_attention_dim=768, sample_size=64)
SD15_VAE = dict(block_out_channels=[128, 256, 512, 512], sample_size=512)


def opts(**kw) -> GenerateOptions:
    base = dict(prompt="a cat", num_frames=16, num_inference_steps=2, guidance_scale=7.5, seed=0, height=512,
                width=512)
    return GenerateOptions.validate(**{**base, **kw}, max_seq=32, sample_size=512)


def estimate(o: GenerateOptions, *, device="cpu", dtype=torch.float32, low_vram=False, **kw):
    return estimate_generation(o, SD15_UNET, SD15_VAE, dtype=dtype, device=device, low_vram=low_vram, **kw)


def test_the_estimate_grows_with_frames_size_and_decode_chunk():
    e16, e64 = estimate(opts(num_frames=16)), estimate(opts(num_frames=64))
    assert e64.needed > e16.needed and e64.parts["unet_activations"] == 4 * e16.parts["unet_activations"]
    small, big = estimate(opts(height=256, width=256)), estimate(opts())
    assert big.needed > small.needed
    assert big.parts["unet_activations"] == 4 * small.parts["unet_activations"]
    assert big.parts["decoded_frames"] == 4 * small.parts["decoded_frames"]
    c4, c16 = estimate(opts(decode_chunk_size=4)), estimate(opts(decode_chunk_size=16))
    assert c16.parts["vae_decode_chunk"] == 4 * c4.parts["vae_decode_chunk"]
    assert c16.parts["unet_activations"] == c4.parts["unet_activations"]
    no_cfg = estimate(opts(guidance_scale=1.0))  # no classifier-free guidance: half the UNet batch
    assert 2 * no_cfg.parts["unet_activations"] == big.parts["unet_activations"]
    fp16 = estimate(opts(), dtype=torch.float16)
    assert fp16.parts["unet_activations"] * 2 == big.parts["unet_activations"]
    assert fp16.parts["decoded_float32"] == big.parts["decoded_float32"]  # the video is float32 either way
    assert big.needed > max(big.phases.values()) == big.phases[big.peak_phase]  # plus a margin


def test_controlnets_and_video_input_add_what_they_run():
    plain = estimate(opts())
    one, two = estimate(opts(), controlnets=1), estimate(opts(), controlnets=2)
    assert plain.parts["controlnet_activations"] == 0
    assert two.parts["controlnet_activations"] == 2 * one.parts["controlnet_activations"] > 0
    assert two.phases["denoise"] > one.phases["denoise"] > plain.phases["denoise"]
    v2v = estimate(opts(), video=True)
    assert "encode" in v2v.phases and "encode" not in plain.phases
    assert v2v.parts["input_video"] == 3 * 16 * 3 * 512 * 512 * 4


def test_windows_do_not_shrink_the_spatial_layers_and_low_vram_decodes_one_tile():
    """diffusers' FreeNoise windows only the motion modules' attention: the spatial layers still see every
    frame at once, so windows leave the UNet part as it is. ``low_vram`` decodes one frame (one 512 px tile)
    at a time; on CUDA it also brings the offloaded UNet onto the GPU for the denoising phase."""
    whole = estimate(opts(num_frames=32))
    windowed_opts = opts(num_frames=32, context_length=16)
    assert windowed_opts.context_length == 16
    windowed = estimate(windowed_opts)
    assert windowed.parts["unet_activations"] == whole.parts["unet_activations"]
    big = opts(num_frames=16, height=1024, width=1024)
    low = estimate(big, low_vram=True)
    assert low.parts["vae_decode_chunk"] < estimate(big).parts["vae_decode_chunk"] / 8
    weights = {"unet": 2 * GB, "vae": GB // 4, "text_encoder": GB // 4}
    cuda = estimate(opts(), device="cuda", dtype=torch.float16, weights=weights)
    offload = estimate(opts(), device="cuda", dtype=torch.float16, weights=weights, low_vram=True)
    assert offload.phases["denoise"] == cuda.phases["denoise"] + 2 * GB
    assert cuda.host_needed > 0 and estimate(opts()).host_needed == 0


def test_the_refusal_names_what_it_needs_what_there_is_and_only_what_helps():
    o = opts(num_frames=16)  # SD1.5, 512x512, fp32: decoding 16 frames at once is the peak

    def alternative(changed, low):
        return estimate(changed, low_vram=low)

    est = estimate(o)
    assert est.peak_phase == "decode"
    check_fits(est, est.needed, o)  # exactly enough: no refusal
    check_fits(est, None, o)  # unknown: no check
    have = int(max(est.phases["denoise"], est.phases["output"]) * FRAGMENTATION + OVERHEAD["cpu"]) + 10**6
    with pytest.raises(MotionAdapterError) as err:
        check_fits(est, have, o, labels=LABELS, alternative=alternative)
    msg = str(err.value)
    assert msg.startswith(f"--frames 16 at 512x512: needs about {est.needed / GB:.1f} GB of memory, this machine "
                          f"has {have / GB:.1f} GB available; at most ")
    assert msg.endswith(" or --low-vram would help (or --skip-memory-check to try anyway)"), msg
    assert " frames, a smaller size (" in msg and "--decode-chunk-size " in msg, msg
    # the denoising phase alone does not fit: a decode chunk or low_vram would not help, fewer frames would
    with pytest.raises(MotionAdapterError) as err:
        check_fits(est, est.phases["denoise"] // 2, o, alternative=alternative)
    msg = str(err.value)
    assert msg.startswith("num_frames 16 at 512x512") and "decode_chunk_size" not in msg, msg
    assert "low_vram=True" not in msg and msg.endswith("(or check_memory=False to try anyway)"), msg


def test_available_memory_on_cpu():
    have = available_memory("cpu")
    total = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    assert 0 < have <= total


@pytest.fixture(scope="module")
def shapes_gen(shapes_env):
    return VideoGenerator(device="cpu")


def test_100000_frames_are_refused_before_any_step(shapes_gen, monkeypatch):
    monkeypatch.setattr(generator_module, "available_memory", lambda device: 8 * GB)
    steps = []
    hook = shapes_gen.pipe.unet.register_forward_pre_hook(lambda *a: steps.append(1))
    try:
        t0 = time.perf_counter()
        with pytest.raises(MotionAdapterError) as err:
            shapes_gen.generate("a red circle", num_frames=100_000, num_inference_steps=1)
        took = time.perf_counter() - t0
    finally:
        hook.remove()
    msg = str(err.value)
    assert msg.startswith("num_frames 100000 at 32x32: needs about ") and "GB of memory" in msg, msg
    assert "this machine has 8.0 GB available" in msg and "at most " in msg, msg
    assert "decode_chunk_size" not in msg and "low_vram" not in msg, msg  # neither would make it fit
    assert not steps and took < 2.0


def test_the_cli_refuses_with_flag_names_and_skip_memory_check_skips(shapes_gen, shapes_env, monkeypatch,
                                                                     capsys, tmp_path):
    monkeypatch.setattr(generator_module, "available_memory", lambda device: 1)
    assert cli(["generate", "--prompt", "a red circle", "--frames", "2", "--steps", "1",
                "--out", str(tmp_path / "a.gif")]) == 2
    err = capsys.readouterr().err
    assert "--frames 2 at 32x32: needs about " in err and "--skip-memory-check to try anyway" in err, err
    assert not (tmp_path / "a.gif").exists()
    assert cli(["generate", "--prompt", "a red circle", "--frames", "2", "--steps", "1", "--seed", "1",
                "--skip-memory-check", "--out", str(tmp_path / "a.gif")]) == 0
    assert (tmp_path / "a.gif").exists()
    with pytest.raises(MotionAdapterError, match="needs about"):
        shapes_gen.generate("a red circle", num_frames=2, num_inference_steps=1)
    clip = shapes_gen.generate("a red circle", num_frames=2, num_inference_steps=1, check_memory=False)
    assert clip.frames.shape == (2, 32, 32, 3)


def test_hard_caps_need_no_model(capsys, tmp_path):
    kw = dict(prompt="a cat", num_frames=8, num_inference_steps=2, guidance_scale=7.5)
    with pytest.raises(MotionAdapterError, match=r"Steps: expected at most 1000 \(the sampler's training timesteps\), "
                                                 "found 10000000"):
        GenerateOptions.check(**{**kw, "num_inference_steps": 10_000_000}, labels={"num_inference_steps": "Steps"})
    assert GenerateOptions.check(**{**kw, "num_inference_steps": 1000}).num_inference_steps == 1000
    with pytest.raises(MotionAdapterError, match="width: expected at most 4096 pixels"):
        GenerateOptions.check(**kw, width=100_000, height=64)
    with pytest.raises(MotionAdapterError, match="found 4096x2048 = 8,388,608"):
        GenerateOptions.check(**kw, width=4096, height=2048)
    assert GenerateOptions.check(**kw, width=MAX_SIDE, height=1024).width == MAX_SIDE
    with pytest.raises(MotionAdapterError, match="height: expected at most 4096"):  # the model's size is capped too
        replace(GenerateOptions.check(**kw), height=None).fit(max_seq=32, sample_size=8192)
    nowhere = str(tmp_path / "nope")  # refused before any model is looked for
    assert cli(["generate", "--base", nowhere, "--motion", nowhere, "--prompt", "a cat", "--width", "100000"]) == 2
    err = capsys.readouterr().err
    assert "--width: expected at most 4096 pixels" in err and "nope" not in err
