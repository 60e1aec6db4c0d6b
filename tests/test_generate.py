"""Generation features and the `generate` CLI on the tiny models: frames, long clips, prompt travel, motion
strength, long prompts, samplers, FreeInit, recipes embedded in every output format, --from, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import AnimateDiffPipeline, StableDiffusionPipeline

from motion_adapters.cli import main as cli
from motion_adapters.clips.export import read_embedded, read_frames, read_recipe, to_uint8
from motion_adapters.errors import MotionAdapterError
from motion_adapters.inference import VideoGenerator
from motion_adapters.inference.options import (
    GenerateOptions,
    OptionLimits,
    check_fps,
    check_loras,
    parse_lora,
)
from motion_adapters.inference.prompts import parse_prompts
from motion_adapters.schedulers import make_scheduler
from motion_adapters.tokenizer import clip_tokenizer
from tests.tiny_models import tiny_motion_adapter, tiny_sd_components

FAST = dict(height=64, width=64, num_inference_steps=2, guidance_scale=7.5, seed=0)
PROMPT = "a red circle moving left"


@pytest.fixture(scope="module")
def mm8(tiny):
    """A motion module with an 8-frame cap, to exercise context windows cheaply."""
    path = tiny.root / "mm_len8"
    if not path.exists():
        tiny_motion_adapter(7, motion_max_seq_length=8).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def gen(tiny):
    return VideoGenerator(base=tiny.base_a, motion=tiny.mm_a_dir, device="cpu")


def ordinary(adapter) -> AnimateDiffPipeline:
    c = tiny_sd_components(0)
    pipe = AnimateDiffPipeline(vae=c.vae, text_encoder=c.text_encoder, tokenizer=clip_tokenizer(), unet=c.unet,
                               motion_adapter=adapter, scheduler=make_scheduler("ddim"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_frame_counts_and_sizes(gen):
    for frames in (1, 3):
        assert gen.generate(PROMPT, num_frames=frames, **FAST).frames.shape == (frames, 64, 64, 3)
    clip = gen.generate(PROMPT, num_frames=2, **{**FAST, "height": 32, "width": 48})
    assert clip.frames.shape == (2, 32, 48, 3)
    assert clip.frames.dtype == np.float32 and 0 <= clip.frames.min() and clip.frames.max() <= 1
    assert gen.generate(PROMPT, num_frames=2, seed=0, num_inference_steps=1).frames.shape[1:3] == (64, 64)


def test_long_clip_uses_context_windows_equal_to_diffusers_freenoise(tiny, mm8):
    gen = VideoGenerator(base=tiny.base_a, motion=mm8, device="cpu")
    ours = gen.generate(PROMPT, num_frames=10, context_length=8, context_overlap=2, **FAST).frames
    assert ours.shape == (10, 64, 64, 3)
    pipe = ordinary(tiny_motion_adapter(7, motion_max_seq_length=8))
    pipe.enable_free_noise(context_length=8, context_stride=6)
    ref = pipe(PROMPT, num_frames=10, height=64, width=64, num_inference_steps=2, guidance_scale=7.5,
               generator=torch.Generator("cpu").manual_seed(0), output_type="np").frames[0]
    assert np.abs(ours - ref).max() <= 1e-4
    # beyond the cap without flags: windows switch on by themselves; afterwards the blocks are plain again
    auto = gen.generate(PROMPT, num_frames=10, **FAST)
    assert auto.frames.shape[0] == 10 and auto.recipe["context_length"] == 8
    assert type(gen.pipe.unet.down_blocks[0].motion_modules[0].transformer_blocks[0]).__name__ == "BasicTransformerBlock"
    short = gen.generate(PROMPT, num_frames=4, **FAST).frames
    ref = ordinary(tiny_motion_adapter(7, motion_max_seq_length=8))(
        PROMPT, num_frames=4, height=64, width=64, num_inference_steps=2, guidance_scale=7.5,
        generator=torch.Generator("cpu").manual_seed(0), output_type="np").frames[0]
    assert np.abs(short - ref).max() <= 1e-4
    with pytest.raises(MotionAdapterError, match="context_length: expected at most 8"):
        gen.generate(PROMPT, num_frames=12, context_length=9, **FAST)
    with pytest.raises(MotionAdapterError, match="context_overlap"):
        gen.generate(PROMPT, num_frames=12, context_length=8, context_overlap=8, **FAST)


def test_prompt_travel_changes_content_across_the_clip(gen):
    a, b = "a red circle on a white background", "a blue square, dark night sky"
    travel = gen.generate({0: a, 5: b}, num_frames=6, **FAST).frames
    only_a = gen.generate(a, num_frames=6, context_length=6, **FAST).frames
    only_b = gen.generate(b, num_frames=6, context_length=6, **FAST).frames
    d_a = np.abs(travel - only_a).mean(axis=(1, 2, 3))
    d_b = np.abs(travel - only_b).mean(axis=(1, 2, 3))
    # the clip starts close to prompt A's clip and ends close to prompt B's (the motion module mixes frames,
    # so keyframes are not exact copies)
    assert d_a[-1] > 3 * d_a[0] and d_b[0] > 3 * d_b[-1]
    assert np.abs(travel[0] - travel[-1]).mean() > np.abs(only_a[0] - only_a[-1]).mean()
    same = gen.generate(["0: " + a, "5: " + b], num_frames=6, **FAST).frames
    assert np.array_equal(same, travel)
    with pytest.raises(MotionAdapterError, match="frame indices below num_frames"):
        gen.generate({0: a, 6: b}, num_frames=6, **FAST)


def test_motion_strength(gen, tiny):
    s1 = gen.generate(PROMPT, num_frames=4, motion_strength=1.0, **FAST).frames
    s0 = gen.generate(PROMPT, num_frames=4, motion_strength=0.0, **FAST).frames
    s2 = gen.generate(PROMPT, num_frames=4, motion_strength=2.0, **FAST).frames
    assert np.abs(s1 - s0).max() > 1e-2 and np.abs(s2 - s1).max() > 1e-2
    # strength 0 = no temporal mixing: each frame is the plain SD image from that frame's noise
    c = tiny_sd_components(0)
    sd = StableDiffusionPipeline(vae=c.vae, text_encoder=c.text_encoder, tokenizer=clip_tokenizer(), unet=c.unet,
                                 scheduler=make_scheduler("ddim"), safety_checker=None, feature_extractor=None,
                                 requires_safety_checker=False)
    sd.set_progress_bar_config(disable=True)
    noise = torch.randn((1, 4, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(0))
    for f in (0, 3):
        img = sd(PROMPT, latents=noise[:, :, f], height=64, width=64, num_inference_steps=2, guidance_scale=7.5,
                 output_type="np").images[0]
        assert np.abs(img - s0[f]).max() <= 1e-4
    # and equals a module whose proj_out is zero (AnimateDiff's identity initialisation)
    ident = tiny_motion_adapter(0)
    with torch.no_grad():
        for name, p in ident.named_parameters():
            if name.endswith(("proj_out.weight", "proj_out.bias")) and "transformer_blocks" not in name:
                p.zero_()
    ref = ordinary(ident)(PROMPT, num_frames=4, height=64, width=64, num_inference_steps=2, guidance_scale=7.5,
                          generator=torch.Generator("cpu").manual_seed(0), output_type="np").frames[0]
    assert np.abs(ref - s0).max() <= 1e-4
    assert np.array_equal(gen.generate(PROMPT, num_frames=4, **FAST).frames, s1)  # strength resets after a call


def test_long_prompts_are_chunked(gen):
    words = "a red circle moving left on a plain light background with soft shadows and " * 8
    tok = gen.pipe.tokenizer
    assert len(tok(words, add_special_tokens=False).input_ids) > 100
    truncated = tok.decode(tok(words, add_special_tokens=False).input_ids[:75])
    long_clip = gen.generate(words, num_frames=2, **FAST).frames
    assert gen.generate(words, num_frames=2, **FAST).frames.shape == (2, 64, 64, 3)
    assert np.abs(long_clip - gen.generate(truncated, num_frames=2, **FAST).frames).max() > 1e-3
    from motion_adapters.inference.prompts import encode_long

    emb = encode_long(gen.pipe, [words, ""], "cpu")
    assert emb.shape[:2] == (2, 77 * 2)  # negative padded to the same number of chunks
    # long prompts also work with prompt travel and a long negative prompt
    assert gen.generate({0: words, 1: "a blue square"}, negative_prompt=words, num_frames=2, **FAST).frames.shape[0] == 2


@pytest.mark.parametrize("name", ["ddim", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "lcm"])
def test_schedulers(gen, name):
    clip = gen.generate(PROMPT, num_frames=2, scheduler=name, **FAST)
    assert np.isfinite(clip.frames).all() and clip.recipe["scheduler"] == name


def test_free_init_is_deterministic_and_changes_output(gen):
    a = gen.generate(PROMPT, num_frames=2, free_init_iters=2, **FAST).frames
    b = gen.generate(PROMPT, num_frames=2, free_init_iters=2, **FAST).frames
    plain = gen.generate(PROMPT, num_frames=2, **FAST).frames
    assert np.array_equal(a, b) and np.abs(a - plain).max() > 1e-3
    assert not gen.pipe.free_init_enabled


def _cli_args(tiny, out, *extra):
    return ["generate", "--base", str(tiny.base_a), "--motion", str(tiny.mm_a_dir), "--prompt", PROMPT,
            "--frames", "3", "--height", "64", "--width", "64", "--steps", "2", "--seed", "7", "--device", "cpu",
            "--out", str(out), *extra]


@pytest.mark.parametrize("suffix", [".gif", ".mp4", ".webm", ".webp", ""])
def test_outputs_carry_their_recipe(tiny, tmp_path, suffix, capsys):
    out = tmp_path / f"clip{suffix}" if suffix else tmp_path / "frames"
    assert cli(_cli_args(tiny, out, "--fps", "6", "--negative-prompt", "blurry")) == 0
    assert "wrote" in capsys.readouterr().out
    embedded = json.loads(read_embedded(out))
    for key, value in [("prompt", PROMPT), ("negative_prompt", "blurry"), ("seed", 7), ("num_inference_steps", 2),
                       ("scheduler", "ddim"), ("guidance_scale", 7.5), ("num_frames", 3), ("height", 64),
                       ("fps", 6.0)]:
        assert embedded[key] == value, key
    assert embedded["base"]["sha256"] and embedded["motion"]["sha256"] and embedded["toolkit"].startswith("motion")
    assert read_recipe(out) == embedded  # sidecar JSON says the same
    frames = read_frames(out)
    assert frames.shape == (3, 64, 64, 3)


def test_from_reproduces_frames(tiny, tmp_path, gen):
    first = tmp_path / "first"
    assert cli(_cli_args(tiny, first, "--lora", f"{tiny.root}/none.safetensors:0.5")) == 2  # missing LoRA: error
    assert cli(_cli_args(tiny, first, "--motion-strength", "1.5", "--scheduler", "euler")) == 0
    again = tmp_path / "again"
    assert cli(["generate", "--from", str(first / "0000.png"), "--out", str(again)]) in (0, 2)
    assert cli(["generate", "--from", str(first), "--out", str(again)]) == 0
    assert np.array_equal(read_frames(first), read_frames(again))
    # the Python API gives the same pixels for the same recipe
    clip = gen.generate(PROMPT, num_frames=3, height=64, width=64, num_inference_steps=2, seed=7,
                        motion_strength=1.5, scheduler="euler")
    assert np.array_equal(to_uint8(clip.frames), read_frames(first))
    gif = tmp_path / "a.gif"
    assert cli(_cli_args(tiny, gif)) == 0
    gif.with_name("a.gif.json").unlink()  # recipe from the GIF comment alone
    assert cli(["generate", "--from", str(gif), "--out", str(tmp_path / "b.gif")]) == 0
    assert np.array_equal(read_frames(gif), read_frames(tmp_path / "b.gif"))


@pytest.mark.parametrize("extra, message", [
    (["--height", "65"], "--height: expected a multiple of 8"),
    (["--frames", "0"], "--frames: expected at least 1"),
    (["--steps", "0"], "--steps: expected at least 1"),
    (["--steps", "10000000"], "--steps: expected at most 1000 (the sampler's training timesteps)"),
    (["--width", "100000"], "--width: expected at most 4096 pixels"),
    (["--guidance", "-1"], "--guidance"),
    (["--motion-strength", "-0.5"], "--motion-strength"),
    (["--fps", "0"], "--fps: expected a positive number"),
    (["--prompt", "3: later"], "FRAME: text"),
    (["--context-length", "40"], "--context-length: expected at most 32"),
])
def test_cli_validation_errors(tiny, tmp_path, capsys, extra, message):
    args = _cli_args(tiny, tmp_path / "x.gif")
    if extra[0] == "--prompt":
        args += extra  # a second prompt without a frame index next to a plain one
    else:
        i = args.index(extra[0]) if extra[0] in args else None
        if i is not None:
            args[i + 1] = extra[1]
        else:
            args += extra
    assert cli(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.gif").exists()


def test_cli_bad_output_and_missing_models(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MOTION_ADAPTERS_TOY_DIR", str(tmp_path / "no-models"))  # no embedded default either
    assert cli(_cli_args(tiny, tmp_path / "clip.avi")) == 2
    assert "expected a .gif, .mp4, .webm or .webp" in capsys.readouterr().err
    assert cli(["generate", "--prompt", PROMPT, "--motion", str(tiny.mm_a_dir)]) == 2
    assert "--base: expected a model path" in capsys.readouterr().err
    assert cli(["generate", "--prompt", PROMPT, "--base", str(tmp_path / "nope"), "--motion", str(tiny.mm_a_dir)]) == 2
    assert "nope" in capsys.readouterr().err


def test_parse_lora():
    assert parse_lora("zoom.ckpt:0.8") == ("zoom.ckpt", 0.8)
    assert parse_lora("zoom.ckpt") == ("zoom.ckpt", 1.0)
    assert parse_lora("C:\\models\\zoom.ckpt") == ("C:\\models\\zoom.ckpt", 1.0)
    assert parse_lora("C:\\models\\zoom.ckpt:-0.5") == ("C:\\models\\zoom.ckpt", -0.5)


def test_cli_checks_every_option_before_loading_models(tmp_path, capsys):
    nowhere = str(tmp_path / "nope")
    for extra, message in [(["--height", "65"], "--height: expected a multiple of 8"),
                           (["--scheduler", "heun"], "--scheduler: expected one of ddim, euler"),
                           (["--lora", "a.safetensors", "--lora", "a.safetensors:0.5"], "--lora: expected each LoRA once"),
                           (["--fps", "-1"], "--fps: expected a positive number, found -1")]:
        assert cli(["generate", "--base", nowhere, "--motion", nowhere, "--prompt", PROMPT, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "nope" not in err, err


@pytest.mark.parametrize("value, parsed", [
    ("a cat", "a cat"),
    (" a cat\n  on the beach ", "a cat on the beach"),
    (["a cat"], "a cat"),
    ("0: a bud", {0: "a bud"}),
    ("0: a bud\n\n16: a rose", {0: "a bud", 16: "a rose"}),
    (["16: a rose", "0:a bud"], {0: "a bud", 16: "a rose"}),
    ({"16": " a rose", 0: "a bud"}, {0: "a bud", 16: "a rose"}),
])
def test_one_prompt_parser(value, parsed):
    assert parse_prompts(value) == parsed


@pytest.mark.parametrize("value, message", [
    ([], "Prompt: expected at least one prompt, found none"),
    (["0: a bud", "a rose"], "Prompt: with several prompts each must be 'FRAME: text'"),
    ("0: a bud\na rose", "Prompt: with several prompts each must be 'FRAME: text'"),
    ({4: "a rose"}, "Prompt: expected a prompt-travel prompt for frame 0, found frames \\[4\\]"),
    ({"x": "a rose"}, "Prompt: expected prompt-travel frame indices"),
    (7, "Prompt: expected text, 'FRAME: text' items or a frame→text map, found int"),
])
def test_prompt_parser_errors_name_the_parameter(value, message):
    with pytest.raises(MotionAdapterError, match=message):
        parse_prompts(value, "Prompt")


def test_generation_options_are_checked_in_one_place():
    kw = dict(prompt="a cat", num_frames=8, num_inference_steps=2, guidance_scale=7.5)
    opts = GenerateOptions.check(**kw, seed=None, negative_prompt="  ")
    assert opts.height is None and opts.context_length is None and opts.negative_prompt is None
    assert 0 <= opts.seed < 2**31 and opts.scheduler == "ddim" and opts.free_init_iters == 0
    fitted = opts.fit(max_seq=4, sample_size=64)  # longer than the cap: windows of 4 overlapping by 1
    assert (fitted.height, fitted.width, fitted.context_length, fitted.context_overlap) == (64, 64, 4, 1)
    assert GenerateOptions.validate(**fitted.as_kwargs(), max_seq=4, sample_size=64) == fitted  # idempotent
    short = GenerateOptions.validate(**{**kw, "num_frames": 4}, seed=1, context_overlap=2, max_seq=8, sample_size=32)
    assert (short.context_length, short.context_overlap, short.height) == (None, None, 32)
    assert GenerateOptions.check(**kw, scheduler="DPM++ 2M").scheduler == "dpmpp_2m"
    limits = OptionLimits(max_steps=10, max_size=64)
    for extra, labels, message in [
        ({"num_frames": 0}, {"num_frames": "Frames"}, "Frames: expected at least 1, found 0"),
        ({"num_frames": 2.5}, {}, "num_frames: expected an integer, found 2.5"),
        ({"num_inference_steps": 11}, {"num_inference_steps": "Steps"}, "Steps: expected an integer from 1 to 10"),
        ({"height": 72}, {}, "height: expected an integer from 8 to 64, found 72"),
        ({"guidance_scale": float("inf")}, {}, "guidance_scale: expected a number ≥ 0, found inf"),
        ({"scheduler": "heun"}, {}, "scheduler: expected one of ddim"),
        ({"context_length": 4, "context_overlap": 4}, {}, "context_overlap: expected less than context_length 4"),
        ({"prompt": "0: a\n8: b"}, {}, "prompt: expected prompt-travel frame indices below num_frames 8, found 8"),
    ]:
        with pytest.raises(MotionAdapterError, match=message):
            GenerateOptions.check(**{**kw, **extra}, labels=labels, limits=limits)
    with pytest.raises(MotionAdapterError, match="context_length: expected at most 4 \\(the motion module's"):
        GenerateOptions.validate(**kw, context_length=6, max_seq=4, sample_size=64)


def test_lora_and_fps_checks():
    assert check_loras([("a", 1), ("", 2), (None, 1), ("b", "-0.5")]) == [("a", 1.0), ("b", -0.5)]
    with pytest.raises(MotionAdapterError, match="LoRA 3 weight: expected a number from -2 to 2, found 3"):
        check_loras([("a", 1), ("", 1), ("b", 3)], labels={"lora": "LoRA"}, limits=OptionLimits(max_lora_weight=2))
    with pytest.raises(MotionAdapterError, match="lora 1 weight: expected a finite number, found nan"):
        check_loras([("a", float("nan"))])
    assert check_fps("12") == 12.0
    with pytest.raises(MotionAdapterError, match="fps: expected a positive number, found 0"):
        check_fps(0)
    with pytest.raises(MotionAdapterError, match="FPS: expected a number from 1 to 60, found 0.5"):
        check_fps(0.5, labels={"fps": "FPS"}, limits=OptionLimits(min_fps=1, max_fps=60))


def test_low_vram_generates_the_same_frames(tiny, gen):
    """``low_vram`` (VAE slicing + tiling, 2 frames decoded at a time; CUDA adds model offload) changes memory,
    not the clip. Regression: it called ``pipe.enable_vae_slicing``, which diffusers 0.42 pipelines lack."""
    low = VideoGenerator(base=tiny.base_a, motion=tiny.mm_a_dir, device="cpu", low_vram=True)
    assert low.pipe.vae.use_slicing and low.pipe.vae.use_tiling
    a = gen.generate(PROMPT, num_frames=4, **FAST).frames
    b = low.generate(PROMPT, num_frames=4, **FAST).frames
    np.testing.assert_allclose(a, b, atol=1e-5)
