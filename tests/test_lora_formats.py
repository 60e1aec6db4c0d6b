"""LoRA layouts (see docs/formats.md#lora-layouts): real PEFT injections on tiny models, exported and read
back in every layout.

Each round trip is checked against the video the PEFT-injected model makes, through diffusers' own loaders
(``load_lora_weights``, ``lora_state_dict``) and through AnimateDiff's own merge rule reimplemented here.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import AnimateDiffPipeline, StableDiffusionPipeline
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict

from motion_adapters.errors import AdapterFormatError
from motion_adapters.formats.lora import (
    LoraWeights,
    detect_lora_format,
    to_canonical,
    to_kohya,
    to_original,
    to_peft_file_dict,
)
from motion_adapters.io import read_state_dict, save_safetensors_atomic
from motion_adapters.schedulers import make_scheduler
from motion_adapters.tokenizer import clip_tokenizer
from tests.tiny_models import tiny_motion_adapter, tiny_sd_components

MOTION_TARGETS = r".*motion_modules\.\d+\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"
SPATIAL_TARGETS = r".*attentions\.\d+\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
ORIGINAL_KEY = re.compile(
    r"^(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.motion_modules\.\d+\.temporal_transformer\."
    r"transformer_blocks\.0\.attention_blocks\.[01]\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$"
)
TOL = 1e-5


def make_pipe() -> AnimateDiffPipeline:
    c = tiny_sd_components(0)
    pipe = AnimateDiffPipeline(
        vae=c.vae,
        text_encoder=c.text_encoder,
        tokenizer=clip_tokenizer(),
        unet=c.unet,
        motion_adapter=tiny_motion_adapter(0),
        scheduler=make_scheduler("ddim"),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe: AnimateDiffPipeline) -> np.ndarray:
    return pipe(
        "a corgi running on the beach",
        num_frames=4,
        height=64,
        width=64,
        num_inference_steps=2,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).frames


def lora_layers(model: torch.nn.Module) -> dict[str, BaseTunerLayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)}


def effective_deltas(model: torch.nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """``scaling * B @ A`` of every injected layer, by module path: what the adapter adds to each weight."""
    out = {}
    for name, m in lora_layers(model).items():
        if adapter in m.lora_A:
            a, b = m.lora_A[adapter].weight, m.lora_B[adapter].weight
            out[name] = (b @ a) * m.scaling[adapter]
    return out


def canonical_deltas(lw: LoraWeights, component: str) -> dict[str, torch.Tensor]:
    sd = lw.component(component)
    return {
        k[: -len(".lora_A.weight")]: sd[k.replace("lora_A", "lora_B")] @ v
        for k, v in sd.items()
        if ".lora_A." in k
    }


def assert_same_deltas(got: dict, want: dict) -> None:
    assert set(got) == set(want) and got
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)


def assert_same_lora(a: LoraWeights, b: LoraWeights) -> None:
    assert set(a.state_dict) == set(b.state_dict)
    for k, v in a.state_dict.items():
        torch.testing.assert_close(b.state_dict[k], v, rtol=1e-6, atol=1e-7, msg=k)


def assert_modules_exist(pipe: AnimateDiffPipeline, lw: LoraWeights) -> None:
    """Every canonical module path names a Linear in diffusers' UNetMotionModel / transformers' CLIPTextModel."""
    for mod in lw.modules:
        comp, path = mod.split(".", 1)
        assert isinstance(getattr(pipe, comp).get_submodule(path), torch.nn.Linear), mod


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def motion(tmp_path_factory):
    """A motion LoRA (r=4, alpha=8 → scale 2) injected by PEFT, saved by diffusers' own pipeline saver."""
    pipe = make_pipe()
    base = generate(pipe)
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=MOTION_TARGETS, init_lora_weights=False)
    pipe.unet.add_adapter(config)
    ref = generate(pipe)
    peft_sd = {k: v.detach().clone() for k, v in get_peft_model_state_dict(pipe.unet).items()}
    out_dir = tmp_path_factory.mktemp("motion_lora")
    AnimateDiffPipeline.save_lora_weights(
        out_dir, unet_lora_layers=peft_sd, unet_lora_adapter_metadata=config.to_dict()
    )
    path = out_dir / "pytorch_lora_weights.safetensors"
    tensors, metadata = read_state_dict(path)
    lw = to_canonical(tensors, path, metadata)
    return SimpleNamespace(
        base=base,
        ref=ref,
        peft_sd=peft_sd,
        config=config,
        lw=lw,
        n_layers=len(lora_layers(pipe.unet)),
        tmp=out_dir,
    )


@pytest.fixture(scope="module")
def spatial(tmp_path_factory):
    """A spatial LoRA: UNet attn1/attn2 (r=4, alpha=8) + text encoder q/k/v/out (r=2, alpha=3 → scale 1.5)."""
    pipe = make_pipe()
    torch.manual_seed(2)
    unet_cfg = LoraConfig(r=4, lora_alpha=8, target_modules=SPATIAL_TARGETS, init_lora_weights=False)
    pipe.unet.add_adapter(unet_cfg)
    te_cfg = LoraConfig(r=2, lora_alpha=3, target_modules=TE_TARGETS, init_lora_weights=False)
    # transformers 5.24's own add_adapter() demands peft>=0.22, which does not exist yet: inject with peft itself.
    inject_adapter_in_model(te_cfg, pipe.text_encoder, adapter_name="default")
    ref = generate(pipe)
    unet_sd = {k: v.detach().clone() for k, v in get_peft_model_state_dict(pipe.unet).items()}
    te_sd = {
        k: v.detach().clone()
        for k, v in get_peft_model_state_dict(pipe.text_encoder, adapter_name="default").items()
    }
    out_dir = tmp_path_factory.mktemp("spatial_lora")
    AnimateDiffPipeline.save_lora_weights(
        out_dir,
        unet_lora_layers=unet_sd,
        text_encoder_lora_layers=te_sd,
        unet_lora_adapter_metadata=unet_cfg.to_dict(),
        text_encoder_lora_adapter_metadata=te_cfg.to_dict(),
    )
    path = out_dir / "pytorch_lora_weights.safetensors"
    tensors, metadata = read_state_dict(path)
    lw = to_canonical(tensors, path, metadata)
    return SimpleNamespace(ref=ref, unet_sd=unet_sd, te_sd=te_sd, lw=lw)


# ------------------------------------------------------------------------------------------- canonical form


def test_peft_file_is_read_with_scale_folded(motion):
    lw = motion.lw
    assert lw.kind == "motion_lora"
    assert lw.source_format == "peft"
    assert lw.rank == 4
    assert len(lw.modules) == motion.n_layers > 0
    assert lw.num_params == sum(v.numel() for v in motion.peft_sd.values())
    for k, v in motion.peft_sd.items():
        want = v * 2.0 if ".lora_B." in k else v  # lora_alpha / r = 8 / 4
        torch.testing.assert_close(lw.state_dict["unet." + k], want)
    # The same file without the metadata header, but with per-module .alpha keys, or the config passed
    # un-prefixed (as save_lora_adapter writes it), reads the same.
    with_alpha = dict(motion.peft_sd)
    with_alpha.update(
        {k.replace(".lora_A.weight", ".alpha"): torch.tensor(8.0) for k in motion.peft_sd if ".lora_A." in k}
    )
    assert_same_lora(lw, to_canonical(with_alpha))
    named = {
        k.replace(".weight", ".default.weight"): v for k, v in with_alpha.items()
    }  # raw PEFT module keys
    assert_same_lora(lw, to_canonical(named))
    plain_meta = {"lora_adapter_metadata": json.dumps(motion.config.to_dict(), default=list)}
    assert_same_lora(lw, to_canonical(motion.peft_sd, metadata=plain_meta))
    # No alpha anywhere: diffusers' convention lora_alpha = r, i.e. scale 1.
    unscaled = to_canonical({"unet." + k: v for k, v in motion.peft_sd.items()})
    for k, v in motion.peft_sd.items():
        assert torch.equal(unscaled.state_dict["unet." + k], v)
    assert to_peft_file_dict(lw).keys() == lw.state_dict.keys()


def test_spatial_keys_and_text_encoder_paths(spatial):
    lw = spatial.lw
    assert lw.kind == "spatial_lora" and lw.source_format == "peft" and lw.rank == 4
    te = lw.component("text_encoder")
    # transformers 5.x CLIPTextModel is flattened: no "text_model." segment.
    assert "encoder.layers.0.self_attn.q_proj.lora_A.weight" in te
    assert not any(k.startswith("text_model.") for k in te)
    assert_modules_exist(make_pipe(), lw)
    for k, v in spatial.te_sd.items():
        torch.testing.assert_close(te[k], v * 1.5 if ".lora_B." in k else v)
    for k, v in spatial.unet_sd.items():
        torch.testing.assert_close(lw.state_dict["unet." + k], v * 2.0 if ".lora_B." in k else v)


def test_canonical_spatial_loads_with_diffusers(spatial):
    pipe = make_pipe()
    pipe.load_lora_weights(to_peft_file_dict(spatial.lw), adapter_name="spatial")
    assert len(lora_layers(pipe.unet)) + len(lora_layers(pipe.text_encoder)) == len(spatial.lw.modules)
    assert max_diff(generate(pipe), spatial.ref) < TOL


# ----------------------------------------------------------------------------------- 1. original MotionLoRA


@pytest.fixture(scope="module")
def original(motion):
    orig = to_original(motion.lw)
    # Written like guoyww's v2_lora_*.ckpt: a plain pickle that also carries a non-tensor animatediff_config.
    path = motion.tmp / "v2_lora_test.ckpt"
    torch.save({**orig, "animatediff_config": "{'motion_module_type': 'Vanilla'}"}, path)
    return SimpleNamespace(sd=orig, path=path)


def test_original_motion_lora_round_trip(motion, original):
    orig = original.sd
    assert orig and all(ORIGINAL_KEY.match(k) for k in orig), [k for k in orig if not ORIGINAL_KEY.match(k)][
        :3
    ]
    assert (
        "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.processor.to_out_lora.up.weight"
        in orig
    )
    assert detect_lora_format(orig) == "original-motion-lora"
    tensors, metadata = read_state_dict(original.path)
    assert "animatediff_config" not in tensors
    lw = to_canonical(tensors, original.path, metadata)
    assert (lw.kind, lw.source_format, lw.rank) == ("motion_lora", "original-motion-lora", 4)
    assert_same_lora(motion.lw, lw)

    pipe = make_pipe()
    assert_modules_exist(pipe, lw)
    pipe.load_lora_weights(lw.state_dict, adapter_name="motion")
    injected = len(lora_layers(pipe.unet))
    assert injected > 0 and injected == motion.n_layers
    out = generate(pipe)
    assert max_diff(motion.ref, motion.base) > 1e-2  # the LoRA really changes the video
    assert max_diff(out, motion.ref) < TOL


# ------------------------------------------------------------------------- 2. AnimateDiff's own merge rule


def official_merge(unet: torch.nn.Module, state_dict: dict[str, torch.Tensor], alpha: float = 1.0) -> int:
    """guoyww/AnimateDiff ``convert_lora_safetensor_to_diffusers.py::load_diffusers_lora``, on diffusers names.

    The official rule walks the original UNet3D; the only step added here maps the original motion-module
    names onto diffusers' UNetMotionModel (drop ``temporal_transformer``, ``attention_blocks.N`` →
    ``attnN+1``).
    """
    merged = 0
    for key in state_dict:
        if "up." in key:
            continue
        up_key = key.replace(".down.", ".up.")
        model_key = key.replace("processor.", "").replace("_lora", "").replace("down.", "").replace("up.", "")
        model_key = model_key.replace("to_out.", "to_out.0.")
        # original → diffusers motion names, applied to module paths only
        model_key = model_key.replace(".temporal_transformer", "")
        model_key = model_key.replace(".attention_blocks.0", ".attn1").replace(
            ".attention_blocks.1", ".attn2"
        )
        layer = unet.get_submodule(model_key.rsplit(".", 1)[0])
        layer.weight.data += alpha * torch.mm(state_dict[up_key], state_dict[key])
        merged += 1
    return merged


def test_original_export_matches_animatediff_merge(motion, original):
    pipe = make_pipe()
    with torch.no_grad():
        n = official_merge(pipe.unet, original.sd)
    assert n == motion.n_layers
    assert max_diff(generate(pipe), motion.ref) < TOL


# ------------------------------------------------------------------------------------------------- 3. kohya


def test_kohya_export_loads_in_diffusers(spatial):
    kohya = to_kohya(spatial.lw)
    assert all(k.startswith(("lora_unet_", "lora_te_")) for k in kohya)
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in kohya
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0.lora_up.weight" in kohya
    alphas = {k: v for k, v in kohya.items() if k.endswith(".alpha")}
    assert len(alphas) == len(spatial.lw.modules)
    for k, a in alphas.items():
        assert a.item() == kohya[k.replace(".alpha", ".lora_down.weight")].shape[0]
    assert detect_lora_format(kohya) == "kohya"

    # diffusers' own kohya reader sees every module, with alpha == rank
    sd, network_alphas = StableDiffusionPipeline.lora_state_dict(dict(kohya))
    assert len(sd) == len(spatial.lw.state_dict)
    assert set(network_alphas.values()) == {2.0, 4.0}

    pipe = make_pipe()
    pipe.load_lora_weights(dict(kohya), adapter_name="kohya")
    assert len(lora_layers(pipe.unet)) + len(lora_layers(pipe.text_encoder)) == len(spatial.lw.modules)
    assert max_diff(generate(pipe), spatial.ref) < TOL

    back = to_canonical(kohya)
    assert (back.source_format, back.kind) == ("kohya", "spatial_lora")
    assert_same_lora(spatial.lw, back)


def test_kohya_alpha_scale_is_folded_like_diffusers(spatial):
    kohya = to_kohya(spatial.lw)
    # Same LoRA written with alpha = rank / 2 and up doubled: effective weights unchanged.
    halved = {}
    for k, v in kohya.items():
        if k.endswith(".alpha"):
            halved[k] = v / 2
        elif k.endswith(".lora_up.weight"):
            halved[k] = v * 2
        else:
            halved[k] = v
    lw = to_canonical(halved)
    for k, v in spatial.lw.state_dict.items():
        torch.testing.assert_close(lw.state_dict[k], v, rtol=1e-6, atol=1e-7)
    # and diffusers' interpretation of that alpha is the same as ours
    pipe = make_pipe()
    pipe.load_lora_weights(dict(halved), adapter_name="k")
    assert_same_deltas(effective_deltas(pipe.unet, "k"), canonical_deltas(lw, "unet"))
    assert_same_deltas(effective_deltas(pipe.text_encoder, "k"), canonical_deltas(lw, "text_encoder"))

    # Per-module alphas that differ: each module gets its own alpha / rank.
    mixed = dict(kohya)
    first = next(k for k in mixed if k.endswith(".alpha"))
    mixed[first] = torch.tensor(1.0)
    rank = kohya[first.replace(".alpha", ".lora_down.weight")].shape[0]
    lw_mixed = to_canonical(mixed)
    changed = [k for k, v in spatial.lw.state_dict.items() if not torch.allclose(lw_mixed.state_dict[k], v)]
    assert len(changed) == 1 and changed[0].endswith(".lora_B.weight")
    torch.testing.assert_close(lw_mixed.state_dict[changed[0]], spatial.lw.state_dict[changed[0]] / rank)


def ldm_name(key: str) -> str:
    """SD1.5 diffusers block names → the LDM names some kohya trainers write (input_blocks/output_blocks)."""

    def down(m):
        return f"lora_unet_input_blocks_{3 * int(m[1]) + int(m[2]) + 1}_1_"

    def up(m):
        return f"lora_unet_output_blocks_{3 * int(m[1]) + int(m[2])}_1_"

    key = re.sub(r"^lora_unet_down_blocks_(\d+)_attentions_(\d+)_", down, key)
    key = re.sub(r"^lora_unet_up_blocks_(\d+)_attentions_(\d+)_", up, key)
    return key.replace("lora_unet_mid_block_attentions_0_", "lora_unet_middle_block_1_")


def test_kohya_ldm_block_names(spatial):
    kohya = to_kohya(spatial.lw)
    ldm = {ldm_name(k): v for k, v in kohya.items()}
    assert any("input_blocks" in k for k in ldm) and any("output_blocks" in k for k in ldm)
    assert_same_lora(spatial.lw, to_canonical(ldm))


# --------------------------------------------------------------- 4. other layouts, detection, refusals


def test_domain_adapter_layout(spatial):
    unet_only = LoraWeights(
        state_dict={k: v for k, v in spatial.lw.state_dict.items() if k.startswith("unet.")},
        kind="spatial_lora",
        source_format="peft",
        rank=4,
    )
    dom = to_original(unet_only)
    assert "down_blocks.1.attentions.1.transformer_blocks.0.attn1.processor.to_q_lora.down.weight" in dom
    assert "up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.up.weight" in dom
    assert detect_lora_format(dom) == "domain-adapter"
    lw = to_canonical({**dom, "animatediff_config": "not a tensor"})
    assert (lw.kind, lw.source_format) == ("spatial_lora", "domain-adapter")
    assert_same_lora(unet_only, lw)
    # diffusers' route for the v3 domain adapter (add "unet.", load_lora_weights) reads the same weights.
    pipe = make_pipe()
    pipe.load_lora_weights({"unet." + k: v for k, v in dom.items()}, adapter_name="dom")
    assert_same_deltas(effective_deltas(pipe.unet, "dom"), canonical_deltas(lw, "unet"))
    with pytest.raises(ValueError, match="text-encoder"):
        to_original(spatial.lw)


def test_motiondirector_and_diffusers_converted_layouts(motion, original):
    # MotionDirector: to_out.0 comes out as to_out.processor.0_lora; its TemporalTransformerBlock LoRA can also
    # cover the feed-forward (ff.net.0.proj → ff.net.0.processor.proj_lora, ff.net.2 → ff.net.processor.2_lora).
    md = {
        k.replace(".processor.to_out_lora.", ".to_out.processor.0_lora."): v for k, v in original.sd.items()
    }
    assert any(".to_out.processor.0_lora.up.weight" in k for k in md)
    assert detect_lora_format(md) == "motiondirector"
    lw = to_canonical(md, metadata={"model_type": "motion_director", "rank": "4"})
    assert (lw.kind, lw.source_format) == ("motion_lora", "motiondirector")
    assert_same_lora(motion.lw, lw)

    ff = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.ff.net"
    g = torch.Generator().manual_seed(3)
    extra = {
        f"{ff}.0.processor.proj_lora.down.weight": torch.randn(4, 32, generator=g),
        f"{ff}.0.processor.proj_lora.up.weight": torch.randn(256, 4, generator=g),
        f"{ff}.processor.2_lora.down.weight": torch.randn(4, 128, generator=g),
        f"{ff}.processor.2_lora.up.weight": torch.randn(32, 4, generator=g),
    }
    lw_ff = to_canonical({**md, **extra})
    new = "unet.down_blocks.0.motion_modules.0.transformer_blocks.0.ff.net"
    assert torch.equal(
        lw_ff.state_dict[f"{new}.0.proj.lora_A.weight"], extra[f"{ff}.0.processor.proj_lora.down.weight"]
    )
    assert torch.equal(lw_ff.state_dict[f"{new}.2.lora_B.weight"], extra[f"{ff}.processor.2_lora.up.weight"])
    pipe = make_pipe()
    assert_modules_exist(pipe, lw_ff)

    # diffusers' scripts/convert_animatediff_motion_lora_to_diffusers.py output: §3 renames + "unet." prefix.
    conv = {
        "unet."
        + k.replace(".temporal_transformer", "")
        .replace(".attention_blocks.0", ".attn1")
        .replace(".attention_blocks.1", ".attn2"): v
        for k, v in original.sd.items()
    }
    assert (
        "unet.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight"
        in conv
    )
    assert detect_lora_format(conv) == "diffusers-motion-lora"
    lw_conv = to_canonical(conv)
    assert (lw_conv.kind, lw_conv.source_format) == ("motion_lora", "diffusers-motion-lora")
    assert_same_lora(motion.lw, lw_conv)
    # and diffusers' own processor→PEFT conversion agrees on every module
    pipe.load_lora_weights(conv, adapter_name="conv")
    assert_same_deltas(effective_deltas(pipe.unet, "conv"), canonical_deltas(lw_conv, "unet"))


def test_detection(motion, spatial):
    peft = motion.peft_sd
    assert detect_lora_format(peft) == "peft"
    assert detect_lora_format({"unet." + k: v for k, v in peft.items()}) == "peft"
    assert detect_lora_format(to_peft_file_dict(spatial.lw)) == "peft"
    assert detect_lora_format(to_kohya(spatial.lw)) == "kohya"
    assert detect_lora_format(to_original(motion.lw)) == "original-motion-lora"
    assert detect_lora_format(tiny_motion_adapter(0).state_dict()) is None
    assert detect_lora_format([]) is None
    with pytest.raises(AdapterFormatError, match="no LoRA keys"):
        to_canonical(tiny_motion_adapter(0).state_dict(), "mm_sd_v15_v2.ckpt")
    with pytest.raises(AdapterFormatError):
        to_canonical({"animatediff_config": "only metadata"})
    with pytest.raises(ValueError, match="motion modules"):
        to_kohya(motion.lw)


def test_refusals_name_the_key(motion, spatial):
    sd = dict(motion.lw.state_dict)
    a_key = "unet.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.lora_A.weight"
    b_key = a_key.replace("lora_A", "lora_B")
    bad = {**sd, b_key: torch.zeros(sd[b_key].shape[0], 8)}
    with pytest.raises(AdapterFormatError, match=re.escape(f"{a_key}: down rank 4, up rank 8")) as e:
        to_canonical(bad, "bad.safetensors")
    assert e.value.expected == "LoRA down/up pairs of equal rank"
    assert "bad.safetensors" in str(e.value)

    missing = {k: v for k, v in sd.items() if k != b_key}
    with pytest.raises(AdapterFormatError, match=re.escape(a_key)):
        to_canonical(missing)

    orig = to_original(motion.lw)
    down = next(k for k in orig if k.endswith("to_v_lora.down.weight"))
    with pytest.raises(AdapterFormatError, match=re.escape(down)):
        to_canonical({k: v for k, v in orig.items() if k != down.replace(".down.", ".up.")})

    kohya = to_kohya(spatial.lw)
    name = next(k for k in kohya if k.endswith(".alpha"))[: -len(".alpha")]
    dora = {**kohya, name + ".dora_scale": torch.ones(1, 32)}
    with pytest.raises(AdapterFormatError, match=re.escape(name + ".dora_scale")):
        to_canonical(dora)
    with pytest.raises(AdapterFormatError, match=re.escape(name + ".lora_down.weight")):
        to_canonical({k: v for k, v in kohya.items() if k != name + ".lora_up.weight"})

    motion_kohya = {"lora_unet_down_blocks_0_motion_modules_0_proj_in.lora_down.weight": torch.zeros(2, 32)}
    with pytest.raises(AdapterFormatError, match="motion_modules_0_proj_in"):
        to_canonical(motion_kohya)

    mag = {**sd, a_key.replace("lora_A.weight", "lora_magnitude_vector"): torch.ones(32)}
    with pytest.raises(AdapterFormatError, match="lora_magnitude_vector"):
        to_canonical(mag)


def test_written_files_round_trip(motion, tmp_path):
    """The exports are plain tensor dicts that safetensors can write and our reader reads back."""
    p = save_safetensors_atomic(to_original(motion.lw), tmp_path / "motion_lora_orig.safetensors")
    tensors, meta = read_state_dict(p)
    assert_same_lora(motion.lw, to_canonical(tensors, p, meta))


def test_other_motion_targets_round_trip():
    """proj_in/proj_out, feed-forward and mid-block motion modules survive original export and read-back."""
    g = torch.Generator().manual_seed(4)
    mods = {
        "unet.mid_block.motion_modules.0.proj_in": (64, 64),
        "unet.up_blocks.3.motion_modules.2.proj_out": (32, 32),
        "unet.down_blocks.1.motion_modules.1.transformer_blocks.0.ff.net.0.proj": (32, 512),
        "unet.down_blocks.1.motion_modules.1.transformer_blocks.0.ff.net.2": (256, 64),
        "unet.down_blocks.1.motion_modules.1.transformer_blocks.0.attn2.to_out.0": (64, 64),
    }
    sd = {}
    for mod, (n_in, n_out) in mods.items():
        sd[f"{mod}.lora_A.weight"] = torch.randn(2, n_in, generator=g)
        sd[f"{mod}.lora_B.weight"] = torch.randn(n_out, 2, generator=g)
    lw = to_canonical(sd)
    assert (lw.kind, lw.rank) == ("motion_lora", 2)
    orig = to_original(lw)
    assert "mid_block.motion_modules.0.temporal_transformer.processor.proj_in_lora.down.weight" in orig
    assert (
        "down_blocks.1.motion_modules.1.temporal_transformer.transformer_blocks.0.ff.net.processor.2_lora.up.weight"
        in orig
    )
    assert detect_lora_format(orig) == "original-motion-lora"
    assert_same_lora(lw, to_canonical(orig))
    # (the tiny adapter, like v3, has no mid-block motion module)
    no_mid = {k: v for k, v in sd.items() if not k.startswith("unet.mid_block.")}
    assert_modules_exist(make_pipe(), to_canonical(no_mid))
