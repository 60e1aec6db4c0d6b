"""Every private internal ``motion_adapters.compat`` relies on still exists with the shape we use. A failure
names the installed diffusers / accelerate / transformers versions and what changed."""

from __future__ import annotations

import ast
import copy
import importlib.util
import inspect
import re
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from diffusers import AnimateDiffPipeline, ControlNetModel, UNet2DConditionModel, UNetMotionModel
from diffusers.loaders import lora_conversion_utils, single_file_utils
from diffusers.models.attention import BasicTransformerBlock, FreeNoiseTransformerBlock
from diffusers.pipelines import free_noise_utils

from motion_adapters import compat
from motion_adapters.formats.controlnet import diffusers_to_ldm as controlnet_diffusers_to_ldm
from motion_adapters.inference.pipeline import MotionAdaptersPipeline
from motion_adapters.logs import KNOWN_NOISE
from motion_adapters.schedulers import make_scheduler
from motion_adapters.swap import motion_unet_config
from motion_adapters.tokenizer import clip_tokenizer
from tests.tiny_models import TINY_UNET, tiny_motion_adapter, tiny_sd_components


def changed(what: str) -> str:
    return f"{what} (installed: {compat.installed_versions()}; compat written against {compat.WRITTEN_AGAINST})"


def params(fn) -> tuple[str, ...]:
    return tuple(inspect.signature(fn).parameters)


# ----------------------------------------------------------------------------------------------- FreeNoise
@pytest.fixture(scope="module")
def motion_block() -> BasicTransformerBlock:
    """A motion transformer block as diffusers builds it inside a motion module."""
    adapter = tiny_motion_adapter(0)
    return adapter.down_blocks[0].motion_modules[0].transformer_blocks[0]


def test_free_noise_block_has_the_plain_blocks_parts(motion_block):
    basic = motion_block
    kw = {name: getattr(basic, name) for name in (
        "dim", "num_attention_heads", "attention_head_dim", "dropout", "cross_attention_dim", "activation_fn",
        "attention_bias", "only_cross_attention", "double_self_attention", "positional_embeddings",
        "num_positional_embeddings")}
    free = FreeNoiseTransformerBlock(**kw, context_length=8, context_stride=6)
    assert {n: tuple(p.shape) for n, p in free.named_parameters()} == {
        n: tuple(p.shape) for n, p in basic.named_parameters()}, changed(
        "FreeNoiseTransformerBlock no longer has the same parameters as BasicTransformerBlock")
    own = {"context_length", "context_stride", "weighting_scheme"}  # set by set_free_noise_properties
    missing = set(vars(free)) - set(vars(basic)) - own
    assert not missing, changed(f"FreeNoiseTransformerBlock reads attributes a plain block lacks: {missing}")
    assert params(FreeNoiseTransformerBlock.set_free_noise_properties) == (
        "self", "context_length", "context_stride", "weighting_scheme"), changed(
        "FreeNoiseTransformerBlock.set_free_noise_properties changed its parameters")


def test_reclassed_block_computes_what_a_built_free_noise_block_does(motion_block):
    torch.manual_seed(0)
    block = copy.deepcopy(motion_block).eval()
    x = torch.randn(2, 10, block.dim)  # (batch * pixels, frames, channels): 10 frames, windows of 8
    with torch.no_grad():
        plain = block(x)
        built = FreeNoiseTransformerBlock(  # as diffusers' enable_free_noise builds it
            dim=block.dim, num_attention_heads=block.num_attention_heads,
            attention_head_dim=block.attention_head_dim, cross_attention_dim=block.cross_attention_dim,
            activation_fn=block.activation_fn, attention_bias=block.attention_bias,
            double_self_attention=block.double_self_attention, positional_embeddings=block.positional_embeddings,
            num_positional_embeddings=block.num_positional_embeddings, context_length=8, context_stride=6).eval()
        built.load_state_dict(block.state_dict(), strict=True)
        params_before = [id(p) for p in block.parameters()]
        compat.set_free_noise_block(block, 8, 6)
        assert isinstance(block, FreeNoiseTransformerBlock)
        windowed = block(x)
        expected = built(x)
        compat.set_free_noise_block(block, None, 0)
        back = block(x)
    assert type(block) is BasicTransformerBlock and [id(p) for p in block.parameters()] == params_before
    assert torch.allclose(windowed, expected, atol=1e-6), changed("a re-classed block no longer computes "
                                                                    "what diffusers' FreeNoise block computes")
    assert not torch.allclose(windowed, plain, atol=1e-4)  # the windows did something
    assert torch.equal(back, plain)


class _FakePipe:
    """Just enough of an AnimateDiff pipeline for diffusers' FreeNoise switches (no blocks to rebuild)."""

    _lerp = AnimateDiffPipeline._lerp
    _check_inputs_free_noise = AnimateDiffPipeline._check_inputs_free_noise

    def __init__(self):
        self.motion_adapter = SimpleNamespace(config=SimpleNamespace(motion_max_seq_length=8))
        self.unet = SimpleNamespace(down_blocks=[], up_blocks=[], mid_block=object())


def _free_noise_state(pipe) -> dict:
    return {k: v for k, v in vars(pipe).items() if k.startswith("_free_noise_")}


def test_free_noise_pipeline_state_is_what_enable_free_noise_sets():
    theirs, ours = _FakePipe(), _FakePipe()
    AnimateDiffPipeline.enable_free_noise(theirs, context_length=8, context_stride=6)
    compat.set_free_noise_state(ours, 8, 6)
    a, b = _free_noise_state(theirs), _free_noise_state(ours)
    assert set(a) == set(compat.FREE_NOISE_PIPELINE_ATTRS), changed(
        f"enable_free_noise sets {sorted(a)}, compat sets {sorted(compat.FREE_NOISE_PIPELINE_ATTRS)}")
    cb = "_free_noise_prompt_interpolation_callback"
    assert {k: v for k, v in a.items() if k != cb} == {k: v for k, v in b.items() if k != cb}, changed(
        "enable_free_noise's default FreeNoise settings changed")
    assert a[cb].__func__ is b[cb].__func__ is AnimateDiffPipeline._lerp
    enabled = AnimateDiffPipeline.free_noise_enabled.fget
    assert enabled(ours)
    compat.set_free_noise_state(ours, None, 0)
    assert not enabled(ours), changed("free_noise_enabled no longer follows _free_noise_context_length")
    read = set(re.findall(r"self\.(_free_noise_[a-z_]+)", inspect.getsource(free_noise_utils)))
    assert read <= set(compat.FREE_NOISE_PIPELINE_ATTRS), changed(
        f"diffusers' FreeNoise code reads pipeline attributes compat does not set: {read - set(a)}")
    assert params(AnimateDiffPipeline._lerp) == ("self", "start_index", "end_index", "start_tensor", "end_tensor")


def test_prompt_travel_checks_and_encoder_override_match_diffusers():
    assert params(AnimateDiffPipeline._check_inputs_free_noise) == (
        "self", "prompt", "negative_prompt", "prompt_embeds", "negative_prompt_embeds", "num_frames"), changed(
        "AnimateDiffPipeline._check_inputs_free_noise changed its parameters")
    compat.check_free_noise_inputs(_FakePipe(), {0: "a", 3: "b"}, {0: ""}, 4)
    for bad in ({1: "a"}, {0: "a", 4: "b"}):
        with pytest.raises(ValueError):
            compat.check_free_noise_inputs(_FakePipe(), bad, {0: ""}, 4)
    theirs = params(AnimateDiffPipeline._encode_prompt_free_noise)
    assert theirs == compat.ENCODE_PROMPT_FREE_NOISE_PARAMS, changed(
        f"AnimateDiffPipeline._encode_prompt_free_noise now takes {theirs}")
    assert params(MotionAdaptersPipeline._encode_prompt_free_noise) == compat.ENCODE_PROMPT_FREE_NOISE_PARAMS
    # the keywords AnimateDiffPipeline.__call__ passes to the method we override
    tree = ast.parse(textwrap.dedent(inspect.getsource(AnimateDiffPipeline.__call__)))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr == "_encode_prompt_free_noise"]
    assert calls, changed("AnimateDiffPipeline.__call__ no longer calls _encode_prompt_free_noise")
    passed = {kw.arg for c in calls for kw in c.keywords}
    assert passed <= set(compat.ENCODE_PROMPT_FREE_NOISE_PARAMS), changed(
        f"AnimateDiffPipeline.__call__ passes {sorted(passed - set(compat.ENCODE_PROMPT_FREE_NOISE_PARAMS))} "
        "to _encode_prompt_free_noise, which our override does not take")


def test_execution_device_is_where_the_pipeline_runs():
    assert isinstance(inspect.getattr_static(AnimateDiffPipeline, "_execution_device"), property), changed(
        "DiffusionPipeline._execution_device is no longer a property")
    c = tiny_sd_components(0)
    pipe = AnimateDiffPipeline(vae=c.vae, text_encoder=c.text_encoder, tokenizer=clip_tokenizer(), unet=c.unet,
                               motion_adapter=tiny_motion_adapter(0), scheduler=make_scheduler())
    assert compat.execution_device(pipe) == torch.device("cpu")


# ------------------------------------------------------------------------------------------------ models
def test_motion_module_class_is_what_motion_blocks_hold():
    adapter = tiny_motion_adapter(0)
    kinds = {type(m) for block in adapter.down_blocks for m in block.motion_modules}
    assert kinds == {compat.MOTION_MODULE_CLASS}, changed(f"motion blocks now hold {kinds}")
    module = adapter.down_blocks[0].motion_modules[0]
    assert {"proj_in", "transformer_blocks", "proj_out"} <= set(dict(module.named_children())), changed(
        "a motion module no longer has proj_in / transformer_blocks / proj_out")


def test_init_config_keys_are_what_from_config_takes():
    keys = compat.init_config_keys(UNetMotionModel)
    ours = {"motion_num_attention_heads", "motion_max_seq_length", "use_motion_mid_block", "layers_per_block",
            "temporal_transformer_layers_per_mid_block", "temporal_transformer_layers_per_block", "in_channels",
            "num_attention_heads", "down_block_types", "up_block_types", "block_out_channels", "sample_size",
            "cross_attention_dim"}
    assert ours <= keys, changed(f"UNetMotionModel no longer takes {sorted(ours - keys)}")
    if hasattr(UNetMotionModel, "_get_signature_keys"):  # diffusers' own (private) filter agrees
        expected, optional = UNetMotionModel._get_signature_keys(UNetMotionModel)
        assert keys == set(expected) | set(optional), changed("diffusers filters UNetMotionModel configs "
                                                              "differently from init_config_keys")
    cfg = motion_unet_config({**TINY_UNET, "_class_name": "UNet2DConditionModel"},
                             dict(tiny_motion_adapter(0).config))
    assert set(cfg) <= keys and "_class_name" not in cfg


# --------------------------------------------------------------------------------------------- converters
def test_ldm_converters_keep_their_parameters():
    for name, first in [("convert_ldm_unet_checkpoint", ("checkpoint", "config")),
                        ("convert_ldm_vae_checkpoint", ("checkpoint", "config")),
                        ("convert_ldm_clip_checkpoint", ("checkpoint",)),
                        ("convert_controlnet_checkpoint", ("checkpoint", "config"))]:
        fn = getattr(single_file_utils, name, None)
        assert fn is not None, changed(f"diffusers.loaders.single_file_utils.{name} is gone")
        assert params(fn)[: len(first)] == first, changed(f"{name} now takes {params(fn)}")
    clip = compat.convert_ldm_clip({"cond_stage_model.transformer.text_model.final_layer_norm.weight":
                                    torch.ones(4)})
    assert [k.removeprefix("text_model.") for k in clip] == ["final_layer_norm.weight"]


def test_controlnet_converter_maps_every_lllyasviel_key():
    """diffusers' ControlNet converter, on bare lllyasviel keys (our writer's inverse), gives every diffusers
    key back: the hint block at 0/2/…/14, zero convs, middle_block_out, and None for what it lacks."""
    torch.manual_seed(0)
    cn = ControlNetModel.from_unet(UNet2DConditionModel(**TINY_UNET),
                                   conditioning_embedding_out_channels=(8, 8, 16, 16))
    sd = cn.state_dict()
    ldm = controlnet_diffusers_to_ldm(sd, cn.config, prefix="")
    assert "input_hint_block.14.weight" in ldm and "zero_convs.11.0.weight" in ldm
    out = compat.convert_ldm_controlnet(ldm, {"layers_per_block": 2})
    assert out.keys() == sd.keys(), changed("convert_controlnet_checkpoint maps lllyasviel keys differently")
    assert all(torch.equal(out[k], sd[k]) for k in sd), changed("convert_controlnet_checkpoint moved tensors")
    ldm.pop("zero_convs.3.0.bias")
    missing = compat.convert_ldm_controlnet(ldm, {"layers_per_block": 2})
    assert missing.get("controlnet_down_blocks.3.bias", "absent") is None, changed(
        "convert_controlnet_checkpoint no longer gives None for a missing zero conv (we drop the Nones)")


def test_kohya_lora_converters_give_peft_keys():
    for name in ("_convert_non_diffusers_lora_to_diffusers", "_maybe_map_sgm_blocks_to_diffusers"):
        assert hasattr(lora_conversion_utils, name), changed(
            f"diffusers.loaders.lora_conversion_utils.{name} is gone")
    unet_mod = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    te_mod = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    kohya = {f"{m}.lora_{d}.weight": torch.zeros(s) for m in (unet_mod, te_mod)
             for d, s in (("down", (2, 8)), ("up", (8, 2)))}
    converted, _alphas = compat.kohya_lora_to_diffusers(kohya)
    unet = {k.removeprefix("unet."): v for k, v in converted.items() if k.startswith("unet.")}
    te = {k.removeprefix("text_encoder."): v for k, v in converted.items() if k.startswith("text_encoder.")}
    assert sorted(compat.unet_lora_to_peft(unet)) == [
        f"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_{x}.weight" for x in "AB"], changed(
        "the kohya UNet LoRA → PEFT conversion gives other keys")
    assert sorted(compat.text_encoder_lora_to_peft(te)) == [
        f"text_model.encoder.layers.0.self_attn.q_proj.lora_{x}.weight" for x in "AB"], changed(
        "the kohya text-encoder LoRA → PEFT conversion gives other keys")
    ldm = {f"lora_unet_input_blocks_1_1_proj_in.lora_{d}.weight": torch.zeros(2) for d in ("down", "up")}
    mapped = compat.ldm_lora_blocks_to_diffusers(ldm, SimpleNamespace(layers_per_block=2))
    assert sorted(mapped) == [f"lora_unet_input_blocks_0_attentions_0_proj_in.lora_{d}.weight"
                              for d in ("down", "up")], changed("LDM block names of kohya LoRAs map differently")


# --------------------------------------------------------------------------------------------- accelerate
def test_accelerate_state_reset_allows_another_mixed_precision():
    try:
        compat.reset_accelerate_state()
        assert Accelerator(cpu=True, mixed_precision="no").mixed_precision == "no"
        compat.reset_accelerate_state()
        second = Accelerator(cpu=True, mixed_precision="bf16")
        assert second.mixed_precision == "bf16", changed(
            "after AcceleratorState/GradientState._reset_state a new Accelerator keeps the old settings")
    finally:
        compat.reset_accelerate_state()


# ------------------------------------------------------------------------------------ import-time noise
@pytest.mark.parametrize("logger_name", sorted(KNOWN_NOISE))
def test_known_noise_is_filtered_on_the_logger_that_emits_it(logger_name):
    """The filters sit on the emitting modules' loggers (named by module): a library that moves the message
    to another module makes it reappear in every command's output."""
    module = importlib.util.find_spec(logger_name)
    assert module is not None and module.origin, changed(f"{logger_name} is no longer a module")
    source = Path(module.origin).read_text()
    text = " ".join(KNOWN_NOISE[logger_name][0].split()[:3])  # the words before any formatted value
    assert text in source, changed(f"{logger_name} no longer emits {text!r}")
