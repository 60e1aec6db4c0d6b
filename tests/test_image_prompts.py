"""Image prompts: SparseCtrl keyframes (a picture at frame 0, first + last, scribbles) and IP-Adapters give
diffusers' frames (also after swaps, with LoRAs, and stacked with other inputs), loads and removals never rebuild,
a lone picture is animated by video to video, and bad inputs are refused naming them with nothing changed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    AnimateDiffPipeline,
    AnimateDiffSparseControlNetPipeline,
    AnimateDiffVideoToVideoPipeline,
    SparseControlNetModel,
    UNet2DConditionModel,
)
from PIL import Image

from motion_adapters.errors import MotionAdapterError
from motion_adapters.inference import VideoGenerator
from motion_adapters.inference.controlnets import ControlInput
from motion_adapters.inference.run import to_pil
from motion_adapters.inference.sparsectrl import place_keyframes, read_keyframes
from motion_adapters.io import save_safetensors_atomic
from tests.test_hotswap import MOTION_TARGETS, _lora_state_dict
from tests.test_video_control import CALL, MAPS, PROMPT, VIDEO, live_controlnet, ordinary, ref_frames
from tests.tiny_models import TINY_UNET

RNG = np.random.default_rng(7)
FIRST = RNG.random((64, 64, 3)).astype(np.float32)
LAST = RNG.random((64, 64, 3)).astype(np.float32)


def live_sparsectrl(seed: int, kind: str = "rgb", **unet_overrides) -> SparseControlNetModel:
    """A tiny SparseCtrl encoder (of a seeded tiny UNet) with every weight perturbed (so its zero convolutions act)."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**{**TINY_UNET, "down_block_types": list(TINY_UNET["down_block_types"]),
                                   **unet_overrides})
    sc = SparseControlNetModel.from_unet(unet, conditioning_channels=4 if kind == "rgb" else 3)
    if kind == "scribble":
        config = {k: v for k, v in sc.config.items() if not k.startswith("_")}
        sc = SparseControlNetModel(**{**config, "use_simplified_condition_embedding": False})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sc.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return sc.eval()


def sparse_ref(pipe, keyframes: dict[int, np.ndarray], scale: float = 1.0, **kw) -> np.ndarray:
    """diffusers' SparseCtrl pipeline on ``keyframes``, with torch's global seed set as its VAE sampling needs."""
    torch.manual_seed(0)
    return ref_frames(pipe, num_frames=4, conditioning_frames=[to_pil(p) for p in keyframes.values()],
                      controlnet_frame_indices=list(keyframes), controlnet_conditioning_scale=scale, **kw)


@pytest.fixture(scope="module")
def gen(tiny) -> VideoGenerator:
    return VideoGenerator(base=tiny.base_a, motion=tiny.mm_a_dir, device="cpu")


@pytest.fixture(scope="module")
def encoders():
    return {"rgb": live_sparsectrl(1), "scribble": live_sparsectrl(2, "scribble")}


def test_sparsectrl_keyframes_equal_diffusers(gen, encoders):
    plain = gen.generate(PROMPT, num_frames=4, seed=0, **CALL).frames
    cases = [("first frame", dict(image=FIRST), {0: FIRST}, "rgb", 1.0),
             ("first + last", dict(image=FIRST, keyframes={-1: LAST}), {0: FIRST, 3: LAST}, "rgb", 0.8),
             ("scribbles", dict(keyframes={1: MAPS[0], 2: MAPS[1]}), {1: MAPS[0], 2: MAPS[1]}, "scribble", 1.0)]
    for name, kw, placed, kind, scale in cases:
        got = gen.generate(PROMPT, num_frames=4, seed=0, sparsectrl=encoders[kind], sparsectrl_scale=scale,
                           **kw, **CALL)
        ref = sparse_ref(ordinary(AnimateDiffSparseControlNetPipeline, controlnet=live_sparsectrl(*(
            (1,) if kind == "rgb" else (2, "scribble")))), placed, scale)
        assert got.frames.shape == (4, 64, 64, 3)
        assert np.abs(got.frames - ref).max() <= 1e-4, name
        assert np.abs(got.frames - plain).max() > 1e-3, name
        assert got.recipe["sparsectrl"]["control_kind"] == kind and got.recipe["sparsectrl"]["scale"] == scale
        assert [k["index"] for k in got.recipe["keyframes"]] == [i for i in placed if not (i == 0 and "image" in kw)]
        assert ("image" in got.recipe) == ("image" in kw)
    # the same seed gives the same clip; torch's global random state is left as it was
    state = torch.random.get_rng_state()
    again = gen.generate(PROMPT, num_frames=4, seed=0, image=FIRST, sparsectrl=encoders["rgb"], **CALL).frames
    assert torch.equal(torch.random.get_rng_state(), state)
    assert np.array_equal(again, gen.generate(PROMPT, num_frames=4, seed=0, image=FIRST, **CALL).frames)
    # unloaded: bitwise the plain clip, same pipeline, nothing rebuilt
    gen.set_sparsectrl(None)
    assert gen.sparsectrl is None
    assert np.array_equal(gen.generate(PROMPT, num_frames=4, seed=0, **CALL).frames, plain)
    assert type(gen.pipe).__name__ == "MotionAdaptersPipeline" and gen.builds == 1


def test_sparsectrl_equals_diffusers_after_swaps_and_with_loras(tiny, encoders, tmp_path):
    gen = VideoGenerator(base=tiny.base_a, motion=tiny.mm_a_dir, device="cpu")
    unet = gen.pipe.unet
    gen.load_base(tiny.base_b_ldm)
    gen.load_motion(tiny.mm_b_ckpt)
    motion = _lora_state_dict(ordinary(AnimateDiffPipeline, 10, 1).unet, MOTION_TARGETS, seed=1)
    save_safetensors_atomic(motion, tmp_path / "motion_lora.safetensors")
    gen.set_loras({tmp_path / "motion_lora.safetensors": 0.8})
    got = gen.generate(PROMPT, num_frames=4, seed=0, image=FIRST, keyframes={3: LAST}, sparsectrl=encoders["rgb"],
                       **CALL).frames
    ref = sparse_ref(ordinary(AnimateDiffSparseControlNetPipeline, 10, 1, loras=[(motion, 0.8)],
                              controlnet=live_sparsectrl(1)), {0: FIRST, 3: LAST})
    assert np.abs(got - ref).max() <= 1e-4
    assert gen.pipe.unet is unet and gen.builds == 1


def test_a_lone_picture_without_an_encoder_is_still_video_to_video(gen):
    gen.set_sparsectrl(None)
    got = gen.generate(PROMPT, num_frames=4, seed=0, image=FIRST, strength=0.7, **CALL)
    ref = ref_frames(ordinary(AnimateDiffVideoToVideoPipeline), video=[FIRST] * 4, strength=0.7)
    assert np.abs(got.frames - ref).max() <= 1e-4
    assert got.recipe["image"]["animated_by"] == "video to video" and got.recipe["strength"] == 0.7
    assert got.recipe["video"] is None and "sparsectrl" not in got.recipe
    assert gen.generate(PROMPT, num_frames=4, seed=0, image=FIRST, **CALL).recipe["strength"] == 0.8


def test_keyframe_placement():
    pics = read_keyframes(FIRST, {-1: LAST, 2: FIRST}, {})
    assert list(place_keyframes(pics, 8, {})) == [0, 2, 7]
    with pytest.raises(MotionAdapterError, match=r"keyframes 8: expected a frame of the 8-frame clip \(0 to 7"):
        place_keyframes(read_keyframes(None, {8: LAST}, {}), 8, {})
    with pytest.raises(MotionAdapterError, match="keyframes -1: frame 3 already has a picture"):
        place_keyframes(read_keyframes(None, {3: LAST, -1: FIRST}, {}), 4, {})
    with pytest.raises(MotionAdapterError, match="keyframes 0: frame 0 is already the image"):
        read_keyframes(FIRST, {0: LAST}, {})
    with pytest.raises(MotionAdapterError, match="expected whole frame indices, found '1'"):
        read_keyframes(None, {"1": LAST}, {})


def test_bad_image_inputs_change_nothing(gen, encoders, tmp_path):
    gen.set_sparsectrl(encoders["rgb"])
    before = gen.state_fingerprint()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    video_file = tmp_path / "clip.mp4"
    video_file.write_bytes(b"")
    cases = [
        (dict(image=broken), f"image {broken}: expected frames that decode"),
        (dict(image=tmp_path / "missing.png"), "expected an image file, found nothing at that path"),
        (dict(image=video_file), r"expected an image \(\.png"),
        (dict(image=np.zeros((2, 8, 8, 3), np.float32)), r"expected a picture shaped \(H, W, 3\)"),
        (dict(image=FIRST, keyframes={4: LAST}), "keyframes 4: expected a frame of the 4-frame clip"),
        (dict(ip_image=FIRST), "ip_image: an image prompt needs an IP-Adapter; expected one"),
        (dict(ip_adapter=tmp_path / "ip.bin"), "ip_adapter .*ip.bin: expected an image prompt"),
        (dict(image=FIRST, video=VIDEO), "image: a clip starts from a picture or restyles a video"),
        (dict(image=FIRST, controlnets=[ControlInput(live_controlnet(1), MAPS)]),
         "controlnets: diffusers' SparseCtrl pipeline takes no ControlNet"),
        (dict(image=FIRST, strength=0.5), "strength: applies to video to video only.*found keyframes"),
        (dict(sparsectrl=encoders["rgb"]), "sparsectrl: conditions keyframes; expected image or keyframes"),
        (dict(image=FIRST, context_length=2, context_overlap=1), "no context windows or prompt travel"),
        (dict(image=FIRST, sparsectrl_scale=11), "sparsectrl scale: expected a number from 0 to 10"),
    ]
    for kw, message in cases:
        kw = {"num_frames": 4, **kw}
        with pytest.raises(MotionAdapterError, match=message):
            gen.generate(PROMPT, seed=0, **CALL, **kw)
        assert gen.state_fingerprint() == before, message
    gen.set_sparsectrl(None)
    with pytest.raises(MotionAdapterError, match="keyframes: pinning frames other than the first needs a SparseCtrl"):
        gen.generate(PROMPT, num_frames=4, seed=0, image=FIRST, keyframes={3: LAST}, **CALL)


def test_pictures_from_files_are_fitted_and_hashed(gen, encoders, tmp_path):
    path = tmp_path / "first.png"
    Image.fromarray((FIRST[:32, :48] * 255).astype(np.uint8)).save(path)
    got = gen.generate(PROMPT, num_frames=4, seed=0, image=path, sparsectrl=encoders["rgb"], **CALL)
    assert got.recipe["image"]["path"] == str(path) and len(got.recipe["image"]["sha256"]) == 64
    gen.set_sparsectrl(None)


def ip_ordinary(folder_file, scale: float, cls=AnimateDiffPipeline, **build):
    """diffusers' pipeline with an IP-Adapter loaded the ordinary way (h94's folder layout)."""
    pipe = ordinary(cls, **build)
    pipe.load_ip_adapter(str(folder_file.parent.parent), subfolder=folder_file.parent.name,
                         weight_name=folder_file.name, image_encoder_folder="image_encoder")
    pipe.set_ip_adapter_scale(scale)
    return pipe


IP_PICTURE = Image.fromarray((RNG.random((40, 48, 3)) * 255).astype(np.uint8))


def test_sparsectrl_files_load_once_and_equal_diffusers(tiny, monkeypatch):
    import motion_adapters.inference.controlnets as controlnets

    gen = VideoGenerator(base=tiny.base_a, motion=tiny.mm_a_dir, device="cpu")
    ref_rgb = SparseControlNetModel.from_pretrained(str(tiny.sc_rgb_dir))
    ref_scribble = SparseControlNetModel.from_pretrained(str(tiny.sc_scribble_dir))
    for src, ref_model, kind in [(tiny.sc_rgb_ckpt, ref_rgb, "rgb"), (tiny.sc_rgb_dir, ref_rgb, "rgb"),
                                 (tiny.sc_scribble_ckpt, ref_scribble, "scribble")]:
        got = gen.generate(PROMPT, num_frames=4, seed=0, image=FIRST, keyframes={3: LAST}, sparsectrl=src, **CALL)
        ref = sparse_ref(ordinary(AnimateDiffSparseControlNetPipeline, controlnet=ref_model), {0: FIRST, 3: LAST})
        assert np.abs(got.frames - ref).max() <= 1e-4, src
        assert got.recipe["sparsectrl"]["path"] == str(src) and got.recipe["sparsectrl"]["control_kind"] == kind
        assert gen.sparsectrl == str(src)
    monkeypatch.setattr(controlnets, "load_adapter", lambda *a, **k: pytest.fail("read again"))
    gen.generate(PROMPT, num_frames=4, seed=0, image=FIRST, **CALL)  # the loaded encoder, not read again
    assert gen.builds == 1


def test_failed_sparsectrl_and_ip_adapter_loads_change_nothing(tiny, tmp_path):
    gen = VideoGenerator(base=tiny.base_a, motion=tiny.mm_a_dir, device="cpu")
    gen.set_sparsectrl(tiny.sc_rgb_ckpt)
    gen.set_ip_adapter(tiny.ip_bin)
    before = gen.state_fingerprint()
    for call, message in [
        (lambda: gen.set_sparsectrl(tiny.cn_dir), "expected an SD1.5 SparseCtrl encoder, found a controlnet"),
        (lambda: gen.set_sparsectrl(tmp_path / "missing.ckpt"), "missing.ckpt"),
        (lambda: gen.set_sparsectrl(live_sparsectrl(3, cross_attention_dim=48)), "cross_attention_dim"),
        (lambda: gen.set_ip_adapter(tiny.ip_sdxl), "ip-adapter_sdxl.safetensors"),
        (lambda: gen.set_ip_adapter(tiny.ip_plus_st, tiny.image_encoder_bad), "encoder_bad"),
        (lambda: gen.set_ip_adapter(tiny.cn_dir), "expected an SD1.5 IP-Adapter|expected an IP-Adapter"),
        (lambda: gen.generate(PROMPT, num_frames=4, seed=0, ip_adapter=tiny.ip_sdxl, ip_image=IP_PICTURE, **CALL),
         "SDXL"),
        # a bad keyframe refuses the call before the new IP-Adapter is read
        (lambda: gen.generate(PROMPT, num_frames=4, seed=0, image=FIRST, keyframes={7: LAST}, ip_adapter=tiny.ip_plus_st,
                              ip_image=IP_PICTURE, **CALL), "keyframes 7: expected a frame of the 4-frame clip"),
    ]:
        with pytest.raises(MotionAdapterError, match=message):
            call()
        assert gen.state_fingerprint() == before, message
    assert gen.ip_adapter == str(tiny.ip_bin) and gen.sparsectrl == str(tiny.sc_rgb_ckpt)


def test_ip_adapters_equal_diffusers_and_leave_the_unet_plain(tiny):
    gen = VideoGenerator(base=tiny.base_a, motion=tiny.mm_a_dir, device="cpu")
    plain = gen.generate(PROMPT, num_frames=4, seed=0, **CALL).frames
    processors = {k: type(v) for k, v in gen.pipe.unet.attn_processors.items()}
    for path, scale in [(tiny.ip_bin, 0.6), (tiny.ip_plus_st, 1.0), (tiny.ip_full_face, 0.5)]:
        got = gen.generate(PROMPT, num_frames=4, seed=0, ip_adapter=path, ip_image=IP_PICTURE, ip_scale=scale, **CALL)
        ref = ref_frames(ip_ordinary(path, scale), num_frames=4, ip_adapter_image=IP_PICTURE)
        assert np.abs(got.frames - ref).max() <= 1e-4, path
        assert np.abs(got.frames - plain).max() > 1e-3, path
        entry = got.recipe["ip_adapter"]
        assert entry["path"] == str(path) and entry["scale"] == scale and len(entry["image"]["sha256"]) == 64
        # between calls the UNet is plain: its processors and projection as they were
        assert {k: type(v) for k, v in gen.pipe.unet.attn_processors.items()} == processors
        assert gen.pipe.unet.encoder_hid_proj is None and gen.pipe.image_encoder is None
    assert np.array_equal(gen.generate(PROMPT, num_frames=4, seed=0, **CALL).frames, plain)
    gen.set_ip_adapter(None)
    assert gen.ip_adapter is None and gen.builds == 1


def test_ip_adapter_stacks_with_video_controlnets_and_loras(tiny, tmp_path):
    from diffusers import AnimateDiffVideoToVideoControlNetPipeline

    gen = VideoGenerator(base=tiny.base_a, motion=tiny.mm_a_dir, device="cpu")
    motion = _lora_state_dict(ordinary(AnimateDiffPipeline).unet, MOTION_TARGETS, seed=1)
    save_safetensors_atomic(motion, tmp_path / "motion_lora.safetensors")
    gen.set_loras({tmp_path / "motion_lora.safetensors": 0.8})
    got = gen.generate(PROMPT, seed=0, video=VIDEO, strength=0.7, controlnets=[ControlInput(live_controlnet(1), MAPS)],
                       ip_adapter=tiny.ip_bin, ip_image=IP_PICTURE, **CALL).frames
    ref = ref_frames(ip_ordinary(tiny.ip_bin, 0.6, AnimateDiffVideoToVideoControlNetPipeline, loras=[(motion, 0.8)],
                                 controlnet=live_controlnet(1)),
                     video=list(VIDEO), strength=0.7, conditioning_frames=list(MAPS), ip_adapter_image=IP_PICTURE)
    assert np.abs(got - ref).max() <= 1e-4
    # and with SparseCtrl keyframes (the same live encoder on both sides: this strong random LoRA magnifies the
    # last-bit differences of two separately built copies of one encoder, ~3e-7 per forward, past 1e-4)
    encoder = SparseControlNetModel.from_pretrained(str(tiny.sc_rgb_dir))
    got = gen.generate(PROMPT, num_frames=4, seed=0, image=FIRST, sparsectrl=encoder, ip_adapter=tiny.ip_bin,
                       ip_image=IP_PICTURE, ip_scale=0.6, **CALL).frames
    pipe = ip_ordinary(tiny.ip_bin, 0.6, AnimateDiffSparseControlNetPipeline, loras=[(motion, 0.8)],
                       controlnet=encoder)
    assert np.abs(got - sparse_ref(pipe, {0: FIRST}, ip_adapter_image=IP_PICTURE)).max() <= 1e-4


def test_cli_image_prompt_recipe_round_trip(tiny, tmp_path, capsys):
    from motion_adapters.cli import main as cli
    from motion_adapters.clips.export import read_frames, read_recipe

    first, last, style = tmp_path / "first.png", tmp_path / "last.png", tmp_path / "style.png"
    for path, pic in [(first, FIRST), (last, LAST)]:
        Image.fromarray((pic * 255).astype(np.uint8)).save(path)
    IP_PICTURE.save(style)
    args = ["generate", "--base", str(tiny.base_a), "--motion", str(tiny.mm_a_dir), "--prompt", PROMPT, "--steps", "2",
            "--height", "64", "--width", "64", "--frames", "4", "--seed", "3"]
    assert cli([*args, "--image", str(first), "--keyframe", f"last:{last}", "--sparsectrl", f"{tiny.sc_rgb_ckpt}:0.9",
                "--ip-adapter", str(tiny.ip_bin), "--ip-image", str(style), "--ip-scale", "0.5",
                "--out", str(tmp_path / "a")]) == 0
    recipe = read_recipe(tmp_path / "a")
    assert recipe["image"]["path"] == str(first) and recipe["keyframes"][0]["index"] == 3
    assert recipe["sparsectrl"]["scale"] == 0.9 and recipe["ip_adapter"]["scale"] == 0.5
    assert recipe["ip_adapter"]["image"]["path"] == str(style)
    assert cli(["generate", "--from", str(tmp_path / "a"), "--out", str(tmp_path / "b")]) == 0
    assert np.array_equal(read_frames(tmp_path / "a"), read_frames(tmp_path / "b"))
    # a lone picture without an encoder: video to video of the still, strength recorded and re-run
    assert cli([*args, "--image", str(first), "--strength", "0.5", "--out", str(tmp_path / "c")]) == 0
    assert read_recipe(tmp_path / "c")["strength"] == 0.5
    assert cli(["generate", "--from", str(tmp_path / "c"), "--out", str(tmp_path / "d")]) == 0
    assert np.array_equal(read_frames(tmp_path / "c"), read_frames(tmp_path / "d"))
    capsys.readouterr()
    for extra, message in [
        (["--ip-image", str(style)], "--ip-image: an image prompt needs an IP-Adapter; expected --ip-adapter"),
        (["--ip-adapter", str(tiny.ip_bin)], "expected an image prompt (--ip-image) for it"),
        (["--image", str(first), "--keyframe", "9"], "--keyframe 9: expected INDEX:PATH"),
        (["--image", str(first), "--keyframe", f"9:{last}", "--sparsectrl", str(tiny.sc_rgb_ckpt)],
         "--keyframe 9: expected a frame of the 4-frame clip"),
        (["--image", str(tmp_path / "none.png")], "--image " + str(tmp_path / "none.png")),
        (["--image", str(first), "--sparsectrl", str(tiny.cn_dir)], "--sparsectrl"),
        (["--ip-adapter", str(tiny.sc_rgb_ckpt), "--ip-image", str(style)], "expected an IP-Adapter"),
    ]:
        assert cli([*args, *extra, "--out", str(tmp_path / "x.gif")]) == 2
        assert message in capsys.readouterr().err, extra
        assert not (tmp_path / "x.gif").exists()
