"""VideoGenerator: equal to diffusers' ordinary AnimateDiffPipeline, no random init, in-place and atomic swaps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AnimateDiffPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from torch.utils._python_dispatch import TorchDispatchMode

from motion_adapters.errors import AdapterFormatError
from motion_adapters.inference import VideoGenerator
from motion_adapters.io import read_state_dict, save_safetensors_atomic
from motion_adapters.schedulers import make_scheduler
from motion_adapters.tokenizer import clip_tokenizer
from tests.tiny_models import tiny_motion_adapter, tiny_sd_components

PROMPT = "a red circle moving left"
CALL = dict(num_frames=4, height=64, width=64, num_inference_steps=2, guidance_scale=7.5)
MOTION_TARGETS = r".*motion_modules\.\d+\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"
SPATIAL_TARGETS = r".*attentions\.\d+\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"


def ordinary(base_seed: int, adapter) -> AnimateDiffPipeline:
    """The pipeline a diffusers user builds: UNet2D + MotionAdapter → from_unet2d inside the constructor."""
    c = tiny_sd_components(base_seed)
    pipe = AnimateDiffPipeline(vae=c.vae, text_encoder=c.text_encoder, tokenizer=clip_tokenizer(), unet=c.unet,
                               motion_adapter=adapter, scheduler=make_scheduler("ddim"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, seed=0) -> np.ndarray:
    out = pipe(PROMPT, generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **CALL)
    return np.asarray(out.frames[0], dtype=np.float32)


def gen_frames(gen: VideoGenerator, seed=0) -> np.ndarray:
    return gen.generate(PROMPT, seed=seed, **CALL).frames


class RandomInitCounter(TorchDispatchMode):
    """Counts elements written by random-number ops on real (non-meta) tensors."""

    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__
        if any(s in name for s in ("uniform", "normal", "rand", "bernoulli")):
            t = out if isinstance(out, torch.Tensor) else args[0]
            if isinstance(t, torch.Tensor) and not t.is_meta:
                self.elements += t.numel()
        return out


@pytest.fixture(scope="module")
def gen(tiny) -> VideoGenerator:
    return VideoGenerator(base=tiny.base_a, motion=tiny.mm_a_orig, device="cpu")


def test_first_build_does_not_random_initialise(tiny):
    with RandomInitCounter() as ours:
        VideoGenerator(base=tiny.base_a, motion=tiny.mm_a_dir, device="cpu")
    assert ours.elements == 0
    adapter = tiny_motion_adapter(0)
    c = tiny_sd_components(0)
    with RandomInitCounter() as theirs:  # the counter does see diffusers' from_unet2d random init
        AnimateDiffPipeline(vae=c.vae, text_encoder=c.text_encoder, tokenizer=clip_tokenizer(), unet=c.unet,
                            motion_adapter=adapter, scheduler=make_scheduler("ddim"))
    assert theirs.elements > 1_000_000


def test_generate_equals_ordinary_pipeline_through_swaps(tiny):
    gen = VideoGenerator(base=tiny.base_a, motion=tiny.mm_a_orig, device="cpu")
    unet = gen.pipe.unet
    steps = [
        (None, None, 0, tiny_motion_adapter(0)),
        ("motion", tiny.mm_b_ckpt, 0, tiny_motion_adapter(1)),
        ("base", tiny.base_b_ldm, 10, tiny_motion_adapter(1)),
        ("base", tiny.base_a, 0, tiny_motion_adapter(1)),
        ("motion", tiny.mm_a_dir, 0, tiny_motion_adapter(0)),
    ]
    for what, src, base_seed, adapter in steps:
        if what == "motion":
            gen.load_motion(src)
        elif what == "base":
            gen.load_base(src)
        ours = gen_frames(gen)
        ref = run(ordinary(base_seed, adapter))
        assert ours.shape == (4, 64, 64, 3)
        assert np.abs(ours - ref).max() <= 1e-4, (what, src)
    assert gen.pipe.unet is unet and gen.builds == 1  # same architecture: swapped in place, never rebuilt


def test_motion_swap_copies_into_existing_tensors(tiny):
    gen = VideoGenerator(base=tiny.base_a, motion=tiny.mm_a_dir, device="cpu")
    name = "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.weight"
    param = dict(gen.pipe.unet.named_parameters())[name]
    ptr = param.data_ptr()
    spatial = dict(gen.pipe.unet.named_parameters())["down_blocks.0.attentions.0.proj_in.weight"].clone()
    gen.load_motion(tiny.mm_b_ckpt)
    assert param.data_ptr() == ptr
    assert torch.equal(param, tiny_motion_adapter(1).state_dict()[name])
    assert torch.equal(dict(gen.pipe.unet.named_parameters())["down_blocks.0.attentions.0.proj_in.weight"], spatial)
    # the pipeline's motion_adapter component shares the UNet's modules: no second copy of the weights
    assert gen.pipe.motion_adapter.down_blocks[0].motion_modules is gen.pipe.unet.down_blocks[0].motion_modules


def test_structural_motion_swap_v3_to_v2_and_v1(tiny):
    gen = VideoGenerator(base=tiny.base_a, motion=tiny.mm_a_orig, device="cpu")
    spatial_ptr = dict(gen.pipe.unet.named_parameters())["conv_in.weight"].data_ptr()
    gen.load_motion(tiny.mm_v2_ckpt)  # adds a motion mid block
    assert np.abs(gen_frames(gen) - run(ordinary(0, tiny_motion_adapter(2, use_motion_mid_block=True)))).max() <= 1e-4
    assert dict(gen.pipe.unet.named_parameters())["conv_in.weight"].data_ptr() == spatial_ptr  # spatial reused
    gen.load_motion(tiny.mm_v1)  # L = 24
    assert gen.motion_config["motion_max_seq_length"] == 24
    ref = run(ordinary(0, tiny_motion_adapter(3, motion_max_seq_length=24)))
    assert np.abs(gen_frames(gen) - ref).max() <= 1e-4


def _bad_files(tiny, tmp):
    raw, _ = read_state_dict(tiny.mm_a_orig)
    data = tiny.mm_a_orig.read_bytes()
    files = {
        "empty.safetensors": b"",
        "random.safetensors": bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)),
        "truncated.safetensors": data[: len(data) // 3],
    }
    out = {}
    for name, content in files.items():
        (tmp / name).write_bytes(content)
        out[name] = tmp / name
    partial = dict(list(raw.items())[:-7])
    save_safetensors_atomic(partial, tmp / "partial_mm.safetensors")
    out["partial_mm.safetensors"] = tmp / "partial_mm.safetensors"
    return out


@pytest.mark.parametrize("bad", ["empty.safetensors", "random.safetensors", "truncated.safetensors",
                                 "partial_mm.safetensors", "mm_sdxl", "base_b_ldm"])
def test_failed_motion_swap_leaves_generator_unchanged(gen, tiny, tmp_path, bad):
    files = _bad_files(tiny, tmp_path)
    path = files.get(bad) or getattr(tiny, bad)
    before = gen.state_fingerprint()
    with pytest.raises(AdapterFormatError) as e:
        gen.load_motion(path)
    assert path.name in str(e.value)
    assert gen.state_fingerprint() == before
    if bad == "mm_sdxl":
        assert "SDXL motion module" in str(e.value) and "SD1.5 base" in str(e.value)


@pytest.mark.parametrize("bad", ["empty.safetensors", "random.safetensors", "truncated.safetensors",
                                 "mm_a_orig", "other_arch"])
def test_failed_base_swap_leaves_generator_unchanged(gen, tiny, tmp_path, bad):
    files = _bad_files(tiny, tmp_path)
    if bad == "other_arch":
        from diffusers import UNet2DConditionModel

        from motion_adapters.formats.ldm import save_ldm_checkpoint
        from tests.tiny_models import TINY_UNET

        c = tiny_sd_components(5)
        wide = UNet2DConditionModel(**{**TINY_UNET, "block_out_channels": (32, 64, 64, 64)})
        files[bad] = save_ldm_checkpoint(tmp_path / "other_arch.safetensors", wide, c.vae, c.text_encoder,
                                         unet_config=dict(wide.config))
    path = files.get(bad) or getattr(tiny, bad)
    before = gen.state_fingerprint()
    with pytest.raises(AdapterFormatError) as e:
        gen.load_base(path)
    assert path.name in str(e.value)
    assert gen.state_fingerprint() == before


# ---------------------------------------------------------------- LoRAs
def _lora_state_dict(pipe_unet, targets, seed, rank=4, text_encoder=None):
    torch.manual_seed(seed)
    cfg = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False)
    pipe_unet.add_adapter(cfg, adapter_name="tmp")
    sd = {f"unet.{k}": v.clone() * 5 for k, v in get_peft_model_state_dict(pipe_unet, adapter_name="tmp").items()}
    pipe_unet.delete_adapters("tmp")
    if text_encoder is not None:
        from peft import inject_adapter_in_model

        te_cfg = LoraConfig(r=rank, lora_alpha=rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        inject_adapter_in_model(te_cfg, text_encoder, adapter_name="tmp")
        te_sd = get_peft_model_state_dict(text_encoder, adapter_name="tmp")
        sd.update({f"text_encoder.{k}": v.clone() * 5 for k, v in te_sd.items()})
    return sd


@pytest.fixture(scope="module")
def lora_files(tiny, tmp_path_factory):
    from motion_adapters.formats.lora import to_canonical, to_kohya, to_original

    d = tmp_path_factory.mktemp("loras")
    pipe = ordinary(0, tiny_motion_adapter(0))
    motion = _lora_state_dict(pipe.unet, MOTION_TARGETS, seed=1)
    te = tiny_sd_components(0).text_encoder
    spatial = _lora_state_dict(pipe.unet, SPATIAL_TARGETS, seed=2, text_encoder=te)
    save_safetensors_atomic(motion, d / "motion_peft.safetensors")
    save_safetensors_atomic(to_original(to_canonical(motion)), d / "motion_orig.safetensors")
    save_safetensors_atomic(spatial, d / "spatial_peft.safetensors")
    save_safetensors_atomic(to_kohya(to_canonical(spatial)), d / "spatial_kohya.safetensors")
    bad = dict(motion)
    k = next(k for k in bad if k.endswith("lora_B.weight"))
    bad[k] = torch.zeros(bad[k].shape[0], 8)
    save_safetensors_atomic(bad, d / "rank_mismatch.safetensors")
    other = {k: torch.zeros(v.shape[0] * 2 if k.endswith("lora_B.weight") else v.shape[0],
                            v.shape[1] if k.endswith("lora_B.weight") else v.shape[1] * 2)
             for k, v in motion.items()}
    save_safetensors_atomic(other, d / "other_base_lora.safetensors")
    return {"motion": motion, "spatial": spatial, "dir": d}


def _ordinary_with_loras(tiny, loras):
    pipe = ordinary(0, tiny_motion_adapter(0))
    for i, (sd, _) in enumerate(loras):
        pipe.load_lora_weights(dict(sd), adapter_name=f"l{i}")
    pipe.set_adapters([f"l{i}" for i in range(len(loras))], [w for _, w in loras])
    return pipe


def test_loras_stack_and_match_diffusers(tiny, lora_files, monkeypatch):
    gen = VideoGenerator(base=tiny.base_a, motion=tiny.mm_a_orig, device="cpu")
    plain = gen_frames(gen)
    d = lora_files["dir"]
    gen.set_loras({d / "motion_orig.safetensors": 1.0})
    with_motion = gen_frames(gen)
    assert np.abs(with_motion - plain).max() > 1e-3
    ref = run(_ordinary_with_loras(tiny, [(lora_files["motion"], 1.0)]))
    assert np.abs(with_motion - ref).max() <= 1e-4
    gen.set_loras({d / "motion_orig.safetensors": 1.0, d / "spatial_kohya.safetensors": 0.7})
    stacked = gen_frames(gen)
    ref = run(_ordinary_with_loras(tiny, [(lora_files["motion"], 1.0), (lora_files["spatial"], 0.7)]))
    assert np.abs(stacked - ref).max() <= 1e-4
    # a weight change reads no file
    import motion_adapters.loading as loading

    calls = []
    monkeypatch.setattr(loading, "read_state_dict", lambda *a, **k: calls.append(a) or read_state_dict(*a, **k))
    gen.set_loras({d / "motion_orig.safetensors": 0.5, d / "spatial_kohya.safetensors": 0.2})
    assert calls == []
    ref = run(_ordinary_with_loras(tiny, [(lora_files["motion"], 0.5), (lora_files["spatial"], 0.2)]))
    assert np.abs(gen_frames(gen) - ref).max() <= 1e-4
    # weight 0 and removal give back the plain output
    gen.set_loras({d / "motion_orig.safetensors": 0.0, d / "spatial_kohya.safetensors": 0.0})
    assert np.abs(gen_frames(gen) - plain).max() <= 1e-6
    gen.set_loras({})
    assert np.abs(gen_frames(gen) - plain).max() == 0
    # LoRAs survive a base swap and a motion swap (written under the PEFT wrappers)
    gen.set_loras({d / "motion_peft.safetensors": 1.0})
    gen.load_base(tiny.base_b_ldm)
    gen.load_base(tiny.base_a)
    gen.load_motion(tiny.mm_b_ckpt)
    gen.load_motion(tiny.mm_a_dir)
    ref = run(_ordinary_with_loras(tiny, [(lora_files["motion"], 1.0)]))
    assert np.abs(gen_frames(gen) - ref).max() <= 1e-4


@pytest.mark.parametrize("bad", ["rank_mismatch.safetensors", "other_base_lora.safetensors"])
def test_failed_lora_load_leaves_generator_unchanged(tiny, lora_files, bad):
    gen = VideoGenerator(base=tiny.base_a, motion=tiny.mm_a_orig, device="cpu")
    d = lora_files["dir"]
    gen.set_loras({d / "spatial_peft.safetensors": 0.5})
    before = gen.state_fingerprint()
    with pytest.raises(AdapterFormatError) as e:
        gen.set_loras({d / "spatial_peft.safetensors": 0.5, d / bad: 1.0})
    assert bad in str(e.value)
    assert gen.state_fingerprint() == before
    assert list(gen.loras.values()) == [0.5]
