"""Video to video and ControlNets: frames equal to diffusers' pipelines of each mode (also after swaps and with
LoRAs), mode switches without rebuilds, atomic ControlNet loads, fitted inputs and their errors, recipes."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from diffusers import (
    AnimateDiffControlNetPipeline,
    AnimateDiffPipeline,
    AnimateDiffVideoToVideoControlNetPipeline,
    AnimateDiffVideoToVideoPipeline,
    ControlNetModel,
)

from motion_adapters.errors import AdapterFormatError, MotionAdapterError
from motion_adapters.inference import VideoGenerator
from motion_adapters.inference.controlnets import ControlInput, control_inputs
from motion_adapters.inference.inputs import fit_frames, frame_indices, read_frame_input
from motion_adapters.io import save_safetensors_atomic
from motion_adapters.schedulers import make_scheduler
from motion_adapters.tokenizer import clip_tokenizer
from tests.test_hotswap import MOTION_TARGETS, _lora_state_dict
from tests.tiny_models import TINY_UNET, tiny_motion_adapter, tiny_sd_components

PROMPT = "a red circle moving left"
CALL = dict(height=64, width=64, num_inference_steps=3, guidance_scale=7.5)
RNG = np.random.default_rng(0)
VIDEO = RNG.random((4, 64, 64, 3)).astype(np.float32)
MAPS = RNG.random((4, 64, 64, 3)).astype(np.float32)
MAPS2 = RNG.random((4, 64, 64, 3)).astype(np.float32)


def live_controlnet(seed: int, **unet_overrides) -> ControlNetModel:
    """A tiny ControlNet of the tiny base (``ControlNetModel.from_unet``) with every weight perturbed, so the
    zero convolutions have an effect."""
    unet = tiny_sd_components(0).unet if not unet_overrides else type(tiny_sd_components(0).unet)(
        **{**TINY_UNET, **unet_overrides})
    cn = ControlNetModel.from_unet(unet)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in cn.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return cn.eval()


def ordinary(cls, base_seed: int = 0, adapter_seed: int = 0, loras=(), **extra):
    """The pipeline of a mode as a diffusers user builds it, from the same weights."""
    c = tiny_sd_components(base_seed)
    pipe = cls(vae=c.vae, text_encoder=c.text_encoder, tokenizer=clip_tokenizer(), unet=c.unet,
               motion_adapter=tiny_motion_adapter(adapter_seed), scheduler=make_scheduler("ddim"), **extra)
    for i, (sd, _) in enumerate(loras):
        pipe.load_lora_weights(dict(sd), adapter_name=f"l{i}")
    if loras:
        pipe.set_adapters([f"l{i}" for i in range(len(loras))], [w for _, w in loras])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def ref_frames(pipe, **kw) -> np.ndarray:
    out = pipe(prompt=PROMPT, generator=torch.Generator("cpu").manual_seed(0), output_type="np", **CALL, **kw)
    return np.asarray(out.frames[0], dtype=np.float32)


@pytest.fixture(scope="module")
def gen(tiny) -> VideoGenerator:
    return VideoGenerator(base=tiny.base_a, motion=tiny.mm_a_dir, device="cpu")


@pytest.fixture(scope="module")
def nets():
    return live_controlnet(1), live_controlnet(2)


def modes(nets):
    """(name, our generate() arguments, the diffusers pipeline class and its arguments) for every mode."""
    c1, c2 = nets
    return [
        ("v2v", dict(video=VIDEO, strength=0.6), AnimateDiffVideoToVideoPipeline, {},
         dict(video=list(VIDEO), strength=0.6)),
        ("one controlnet", dict(num_frames=4, controlnets=[ControlInput(c1, MAPS, 0.8)]),
         AnimateDiffControlNetPipeline, dict(controlnet=live_controlnet(1)),
         dict(num_frames=4, conditioning_frames=list(MAPS), controlnet_conditioning_scale=0.8)),
        ("two controlnets", dict(num_frames=4, controlnets=[ControlInput(c1, MAPS, 0.8),
                                                            ControlInput(c2, MAPS2, 0.5, 0.2, 0.9)]),
         AnimateDiffControlNetPipeline, dict(controlnet=[live_controlnet(1), live_controlnet(2)]),
         dict(num_frames=4, conditioning_frames=[list(MAPS), list(MAPS2)], controlnet_conditioning_scale=[0.8, 0.5],
              control_guidance_start=[0.0, 0.2], control_guidance_end=[1.0, 0.9])),
        ("v2v + controlnet", dict(video=VIDEO, strength=0.7, controlnets=[ControlInput(c1, MAPS, 0.8)]),
         AnimateDiffVideoToVideoControlNetPipeline, dict(controlnet=live_controlnet(1)),
         dict(video=list(VIDEO), strength=0.7, conditioning_frames=list(MAPS), controlnet_conditioning_scale=0.8)),
    ]


def test_each_mode_equals_diffusers(gen, nets):
    plain = gen.generate(PROMPT, num_frames=4, seed=0, **CALL).frames
    for name, ours_kw, cls, build_kw, call_kw in modes(nets):
        ours = gen.generate(PROMPT, seed=0, **CALL, **ours_kw).frames
        ref = ref_frames(ordinary(cls, **build_kw), **call_kw)
        assert ours.shape == (4, 64, 64, 3)
        assert np.abs(ours - ref).max() <= 1e-4, name
        assert np.abs(ours - plain).max() > 1e-3, name  # the input does steer
    # all ControlNets removed: bitwise the plain output, and the plain pipeline never changed class
    gen.set_controlnets([])
    assert gen.controlnets == []
    assert np.array_equal(gen.generate(PROMPT, num_frames=4, seed=0, **CALL).frames, plain)
    assert type(gen.pipe).__name__ == "MotionAdaptersPipeline"


def test_modes_equal_diffusers_after_swaps_and_with_loras(tiny, nets, tmp_path):
    gen = VideoGenerator(base=tiny.base_a, motion=tiny.mm_a_dir, device="cpu")
    unet = gen.pipe.unet
    gen.load_base(tiny.base_b_ldm)
    gen.load_motion(tiny.mm_b_ckpt)
    ref_unet = ordinary(AnimateDiffPipeline, 10, 1).unet
    motion = _lora_state_dict(ref_unet, MOTION_TARGETS, seed=1)
    save_safetensors_atomic(motion, tmp_path / "motion_lora.safetensors")
    gen.set_loras({tmp_path / "motion_lora.safetensors": 0.8})
    for name, ours_kw, cls, build_kw, call_kw in modes(nets):
        ours = gen.generate(PROMPT, seed=0, **CALL, **ours_kw).frames
        ref = ref_frames(ordinary(cls, 10, 1, loras=[(motion, 0.8)], **build_kw), **call_kw)
        assert np.abs(ours - ref).max() <= 1e-4, name
    assert gen.pipe.unet is unet and gen.builds == 1


def test_switching_modes_reads_and_rebuilds_nothing(tiny, gen, nets, monkeypatch):
    import motion_adapters.inference.build as build
    import motion_adapters.inference.swaps as swaps
    import motion_adapters.loading as loading

    def fail(*_a, **_k):
        raise AssertionError("a model file was read")

    for mod, name in [(loading, "read_state_dict"), (loading, "read_base"), (swaps, "read_base"),
                      (build, "load_adapter"), (swaps, "load_adapter")]:
        monkeypatch.setattr(mod, name, fail)
    ids = {k: id(getattr(gen.pipe, k)) for k in ("unet", "vae", "text_encoder")}
    for _, ours_kw, *_ in modes(nets):
        gen.generate(PROMPT, seed=0, **CALL, **ours_kw)
        gen.generate(PROMPT, num_frames=4, seed=0, **CALL)
    assert {k: id(getattr(gen.pipe, k)) for k in ids} == ids and gen.builds == 1


def test_failed_controlnet_load_leaves_generator_unchanged(gen, nets, tmp_path):
    gen.set_controlnets([nets[0]])
    before = gen.state_fingerprint()
    wrong = live_controlnet(3, cross_attention_dim=48)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    for bad in ([nets[1], wrong], [nets[1], tmp_path / "missing.safetensors"], [nets[1], junk]):
        with pytest.raises((AdapterFormatError, MotionAdapterError)):
            gen.set_controlnets(bad)
        assert gen.state_fingerprint() == before and len(gen.controlnets) == 1
    with pytest.raises(MotionAdapterError):
        gen.generate(PROMPT, num_frames=4, seed=0, controlnets=[ControlInput(wrong, MAPS)], **CALL)
    assert gen.state_fingerprint() == before
    gen.set_controlnets([])


def test_strength_zero_is_the_input_through_the_vae(gen):
    pipe = ordinary(AnimateDiffVideoToVideoPipeline)
    pixels = pipe.video_processor.preprocess_video(VIDEO[None], height=64, width=64).permute(0, 2, 1, 3, 4)[0]
    with torch.no_grad():
        lat = pipe.encode_video(pixels, torch.Generator("cpu").manual_seed(0), 16) * pipe.vae.config.scaling_factor
        dec = pipe.decode_latents(lat[None].permute(0, 2, 1, 3, 4), 16)
    expected = pipe.video_processor.postprocess_video(dec, output_type="np")[0]
    for strength in (0.0, 0.2):  # 0.2 x 3 steps rounds down to no step, as diffusers counts them
        got = gen.generate(PROMPT, video=VIDEO, strength=strength, seed=0, **CALL)
        assert np.abs(got.frames - expected).max() <= 1e-5
        assert got.recipe["strength"] == strength
    full = gen.generate(PROMPT, video=VIDEO, strength=1.0, seed=0, **CALL).frames
    assert np.abs(full - expected).max() > 1e-2


def test_video_input_default_length_and_fitting(gen, caplog):
    clip = gen.generate(PROMPT, video=VIDEO[:3], seed=0, **CALL)
    assert clip.frames.shape == (3, 64, 64, 3) and clip.recipe["num_frames"] == 3
    assert clip.recipe["strength"] == 0.8 and clip.recipe["video"]["frames"] == 3 and clip.recipe["video"]["path"] is None
    with caplog.at_level(logging.WARNING):
        clip = gen.generate(PROMPT, video=VIDEO[:2], num_frames=4, height=64, width=96, seed=0,
                            num_inference_steps=2, guidance_scale=7.5)
    assert clip.frames.shape == (4, 64, 96, 3)
    assert "2 frames resampled to 4" in caplog.text and "stretched to 96x64" in caplog.text


def test_fit_frames_and_indices():
    assert frame_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert frame_indices(2, 4).tolist() == [0, 0, 1, 1]
    assert frame_indices(1, 3).tolist() == [0, 0, 0]
    f = np.linspace(0, 1, 8 * 16 * 16 * 3, dtype=np.float32).reshape(8, 16, 16, 3)
    out = fit_frames(f, 4, 8, 8, "video")
    assert out.shape == (4, 8, 8, 3) and out.dtype == np.float32
    assert np.array_equal(fit_frames(f, 8, 16, 16, "video"), f)


@pytest.mark.parametrize("value, message", [
    (np.zeros((0, 8, 8, 3), np.float32), "expected at least one frame, found 0"),
    (np.zeros((2, 8, 8, 5), np.float32), r"expected frames shaped \(F, H, W, 3\), found shape \(2, 8, 8, 5\)"),
    (np.full((2, 8, 8, 3), 2.0, np.float32), r"expected values in \[0, 1\]"),
    (np.full((2, 8, 8, 3), np.nan, np.float32), r"expected values in \[0, 1\]"),
])
def test_bad_frame_arrays(value, message):
    with pytest.raises(MotionAdapterError, match=f"^video: {message}"):
        read_frame_input(value, "video")


def test_bad_video_files(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    with pytest.raises(MotionAdapterError, match=f"--video {broken}: expected frames that decode, found"):
        read_frame_input(broken, "--video")
    empty = tmp_path / "frames"
    empty.mkdir()
    with pytest.raises(MotionAdapterError, match="--video .*frames: expected frames that decode, found a frame folder "
                                                 "without images"):
        read_frame_input(empty, "--video")
    with pytest.raises(MotionAdapterError, match="found nothing at that path"):
        read_frame_input(tmp_path / "missing.mp4", "--video")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(MotionAdapterError, match="found a .txt file"):
        read_frame_input(tmp_path / "notes.txt", "--video")


@pytest.mark.parametrize("kw, message", [
    (dict(strength=1.5), r"strength: expected a number from 0 to 1, found 1.5"),
    (dict(strength=-0.1), r"strength: expected a number from 0 to 1, found -0.1"),
])
def test_bad_strength_changes_nothing(gen, kw, message):
    before = gen.state_fingerprint()
    with pytest.raises(MotionAdapterError, match=message):
        gen.generate(PROMPT, video=VIDEO, seed=0, **CALL, **kw)
    assert gen.state_fingerprint() == before


def test_strength_without_video_and_bad_control_requests(gen, nets):
    with pytest.raises(MotionAdapterError, match="strength: applies to video to video only"):
        gen.generate(PROMPT, num_frames=4, strength=0.5, seed=0, **CALL)
    with pytest.raises(MotionAdapterError, match="controlnets 1: expected control maps, or a video to compute them"):
        gen.generate(PROMPT, num_frames=4, seed=0, controlnets=[ControlInput(nets[0], preprocessor="canny")], **CALL)
    for req, message in [
        ([ControlInput(nets[0], MAPS, scale=11)], "controlnets 1 scale: expected a number from 0 to 10"),
        ([ControlInput(nets[0], MAPS, start=0.5, end=0.5)], "controlnets 1 start/end: expected start < end"),
        ([ControlInput(nets[0])], "controlnets 1: expected control maps"),
        ([ControlInput(nets[0], MAPS), ControlInput(nets[0], MAPS)], "expected each ControlNet once"),
        ([42], "controlnets 1: expected a ControlInput"),
        ([{"model": nets[0], "frame": MAPS}], "controlnets 1: expected the fields of ControlInput"),
    ]:
        with pytest.raises(MotionAdapterError, match=message):
            control_inputs(req)
    assert control_inputs([(nets[0], MAPS, 0.5)])[0].scale == 0.5


def test_fewer_control_frames_are_resampled_with_a_note(gen, nets, caplog):
    with caplog.at_level(logging.WARNING):
        clip = gen.generate(PROMPT, num_frames=4, seed=0, controlnets=[ControlInput(nets[0], MAPS[:2])], **CALL)
    assert "controlnets 1 frames: 2 frames resampled to 4" in caplog.text
    assert len(clip.control_maps) == 1 and clip.control_maps[0].shape == (4, 64, 64, 3)
    assert np.array_equal(clip.control_maps[0][1], MAPS[0]) and np.array_equal(clip.control_maps[0][2], MAPS[1])
    gen.set_controlnets([])


def test_preprocessor_maps_from_the_video(gen, nets):
    clip = gen.generate(PROMPT, video=VIDEO, strength=0.6, seed=0, **CALL,
                        controlnets=[ControlInput(nets[0], preprocessor="canny")])
    maps = clip.control_maps[0]
    assert set(np.unique(maps)) <= {0.0, 1.0} and maps.shape == VIDEO.shape
    assert clip.recipe["controlnets"][0]["control"] == {"preprocessor": "canny"}
    with pytest.raises(MotionAdapterError, match="needs a depth estimator"):
        gen.generate(PROMPT, video=VIDEO, seed=0, **CALL, controlnets=[ControlInput(nets[0], preprocessor="depth")])
    gen.set_controlnets([])


def test_cli_video_recipe_round_trip(tiny, tmp_path, capsys):
    from motion_adapters.cli import main as cli
    from motion_adapters.clips.export import read_frames, read_recipe, write_clip

    write_clip(VIDEO, tmp_path / "in")  # a folder of PNG frames: lossless input
    args = ["generate", "--base", str(tiny.base_a), "--motion", str(tiny.mm_a_dir), "--prompt", PROMPT, "--steps", "2",
            "--height", "64", "--width", "64", "--seed", "3"]
    assert cli([*args, "--video", str(tmp_path / "in"), "--strength", "0.6", "--out", str(tmp_path / "a")]) == 0
    recipe = read_recipe(tmp_path / "a")
    assert recipe["video"]["path"] == str(tmp_path / "in") and len(recipe["video"]["sha256"]) == 64
    assert recipe["strength"] == 0.6 and recipe["num_frames"] == 4 and recipe["controlnets"] == []
    assert cli(["generate", "--from", str(tmp_path / "a"), "--out", str(tmp_path / "b")]) == 0
    assert np.array_equal(read_frames(tmp_path / "a"), read_frames(tmp_path / "b"))
    (tmp_path / "in").rename(tmp_path / "moved")
    assert cli(["generate", "--from", str(tmp_path / "a"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert f"the recipe's video {tmp_path / 'in'}: expected an existing file, found nothing at that path" in err
    assert not (tmp_path / "c").exists()


def test_controlnet_files_swap_in_and_equal_diffusers(tiny, tmp_path):
    gen = VideoGenerator(base=tiny.base_a, motion=tiny.mm_a_dir, device="cpu")
    plain = gen.generate(PROMPT, num_frames=4, seed=0, **CALL).frames
    ref_one = ref_frames(ordinary(AnimateDiffControlNetPipeline,
                                  controlnet=ControlNetModel.from_pretrained(str(tiny.cn_dir))),
                         num_frames=4, conditioning_frames=list(MAPS), controlnet_conditioning_scale=0.8)
    for layout in (tiny.cn_dir, tiny.cn_ldm, tiny.cn_ldm_prefixed):  # the same tensors in three layouts
        ours = gen.generate(PROMPT, num_frames=4, seed=0, **CALL, controlnets=[ControlInput(layout, MAPS, 0.8)])
        assert np.abs(ours.frames - ref_one).max() <= 1e-4, layout
        assert gen.controlnets == [str(layout)]
        assert ours.recipe["controlnets"][0]["sha256"] and ours.recipe["controlnets"][0]["control_kind"]
    # replace by another, then two at once, then none: no rebuild, bitwise plain at the end
    ref_two = ref_frames(ordinary(AnimateDiffControlNetPipeline,
                                  controlnet=[ControlNetModel.from_pretrained(str(tiny.cn_dir)),
                                              ControlNetModel.from_pretrained(str(tiny.cn2_dir))]),
                         num_frames=4, conditioning_frames=[list(MAPS), list(MAPS2)],
                         controlnet_conditioning_scale=[0.8, 0.5])
    two = gen.generate(PROMPT, num_frames=4, seed=0, **CALL, controlnets=[ControlInput(tiny.cn_dir, MAPS, 0.8),
                                                                          ControlInput(tiny.cn2_dir, MAPS2, 0.5)])
    assert np.abs(two.frames - ref_two).max() <= 1e-4
    before = gen.state_fingerprint()
    for bad, message in [(tiny.cn_sdxl, "SDXL"), (tiny.t2i_adapter, "T2I-Adapter"), (tiny.cn_truncated, "truncated|complete|unreadable|incomplete"),
                         (tiny.mm_a_orig, "ControlNet")]:
        with pytest.raises((AdapterFormatError, MotionAdapterError), match=message) as info:
            gen.generate(PROMPT, num_frames=4, seed=0, **CALL, controlnets=[ControlInput(tiny.cn_dir, MAPS),
                                                                            ControlInput(bad, MAPS)])
        assert str(bad) in str(info.value)
        assert gen.state_fingerprint() == before and len(gen.controlnets) == 2
    gen.set_controlnets([])
    assert np.array_equal(gen.generate(PROMPT, num_frames=4, seed=0, **CALL).frames, plain)
    assert gen.builds == 1


def test_cli_controlnet_with_saved_maps_and_recipe(tiny, tmp_path):
    from motion_adapters.cli import main as cli
    from motion_adapters.clips.export import read_frames, read_recipe, write_clip

    write_clip(VIDEO, tmp_path / "in")
    write_clip(MAPS, tmp_path / "maps")
    args = ["generate", "--base", str(tiny.base_a), "--motion", str(tiny.mm_a_dir), "--prompt", PROMPT, "--steps", "2",
            "--height", "64", "--width", "64", "--seed", "3", "--video", str(tmp_path / "in"), "--strength", "0.9",
            "--controlnet", f"{tiny.cn_ldm}:0.7", "--control", "canny", "--controlnet", str(tiny.cn2_dir),
            "--control-video", str(tmp_path / "maps"), "--control-end", "1", "--control-end", "0.5", "--save-maps"]
    assert cli([*args, "--out", str(tmp_path / "a.gif")]) == 0
    recipe = read_recipe(tmp_path / "a.gif")
    first, second = recipe["controlnets"]
    assert first["path"] == str(tiny.cn_ldm) and first["scale"] == 0.7 and first["control"] == {"preprocessor": "canny"}
    assert second["control"]["path"] == str(tmp_path / "maps") and second["end"] == 0.5
    assert first["control_kind"] == "depth" and second["control_kind"] == "openpose"
    maps = read_frames(tmp_path / "a.control1.gif")
    assert maps.shape == (4, 64, 64, 3) and set(np.unique(maps)) <= {0, 255}  # canny edges
    assert read_recipe(tmp_path / "a.control2.gif") == {"control_maps_of": str(tmp_path / "a.gif"),
                                                        "controlnet": second}
    assert cli(["generate", "--from", str(tmp_path / "a.gif"), "--out", str(tmp_path / "b.gif")]) == 0
    assert np.array_equal(read_frames(tmp_path / "a.gif"), read_frames(tmp_path / "b.gif"))
