"""Single-file LDM (civitai) checkpoints: round trip, diffusers' own loader, detection and errors."""

from __future__ import annotations

import logging
import socket

import pytest
import torch

from motion_adapters.errors import AdapterFormatError
from motion_adapters.formats.ldm import (
    LDM_TEXT_PREFIX,
    LDM_UNET_PREFIX,
    LDM_VAE_PREFIX,
    diffusers_to_ldm,
    is_ldm_checkpoint,
    ldm_family,
    ldm_to_diffusers,
    save_ldm_checkpoint,
)
from motion_adapters.io import read_state_dict
from tests.tiny_models import SDComponents, save_sd_folder, tiny_sd_components

COMPONENTS = ("unet", "vae", "text_encoder")


@pytest.fixture(scope="module")
def tiny_sd() -> SDComponents:
    return tiny_sd_components(0)


@pytest.fixture(scope="module")
def ldm_sd(tiny_sd: SDComponents) -> dict[str, torch.Tensor]:
    return diffusers_to_ldm(
        tiny_sd.unet.state_dict(),
        tiny_sd.vae.state_dict(),
        tiny_sd.text_encoder.state_dict(),
        dict(tiny_sd.unet.config),
    )


@pytest.fixture(scope="module")
def ldm_file(tiny_sd: SDComponents, tmp_path_factory: pytest.TempPathFactory):
    return save_ldm_checkpoint(
        tmp_path_factory.mktemp("ldm") / "model.safetensors", tiny_sd.unet, tiny_sd.vae, tiny_sd.text_encoder
    )


def assert_same_state(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], name: str) -> None:
    assert set(actual) == set(expected), f"{name}: key sets differ: {sorted(set(actual) ^ set(expected))[:5]}"
    for k, v in expected.items():
        assert actual[k].dtype == v.dtype and torch.equal(actual[k], v), f"{name}.{k} differs"


def test_round_trip_is_bit_exact(tiny_sd: SDComponents, ldm_sd: dict[str, torch.Tensor]) -> None:
    # position_ids is a non-persistent buffer in transformers 5.x, so it is absent on both sides.
    assert not any("position_ids" in k for k in tiny_sd.text_encoder.state_dict())
    assert not any("position_ids" in k for k in ldm_sd)
    back = ldm_to_diffusers(
        ldm_sd, tiny_sd.unet.config, tiny_sd.vae.config, source="tiny"
    )  # FrozenDict configs
    assert set(back) == set(COMPONENTS)
    for name in COMPONENTS:
        assert_same_state(back[name], getattr(tiny_sd, name).state_dict(), name)


def test_written_keys_follow_the_real_sd15_layout(ldm_sd: dict[str, torch.Tensor]) -> None:
    u, v, t = LDM_UNET_PREFIX, LDM_VAE_PREFIX, LDM_TEXT_PREFIX
    for key in (
        u + "input_blocks.0.0.weight",
        u + "input_blocks.1.0.in_layers.0.weight",
        u + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
        u + "input_blocks.3.0.op.weight",
        u + "input_blocks.11.0.emb_layers.1.weight",
        u + "middle_block.2.out_layers.3.weight",
        u + "output_blocks.2.1.conv.weight",  # level without attention: upsampler in slot 1
        u + "output_blocks.5.2.conv.weight",  # level with attention: upsampler in slot 2
        u + "output_blocks.11.0.skip_connection.weight",
        u + "time_embed.2.bias",
        u + "out.2.weight",
        v + "encoder.down.0.block.0.norm1.weight",
        v + "encoder.down.2.block.0.nin_shortcut.weight",
        v + "encoder.down.0.downsample.conv.weight",
        v + "encoder.norm_out.weight",
        v + "decoder.up.3.upsample.conv.weight",
        v + "decoder.mid.block_2.conv2.weight",
        v + "quant_conv.weight",
        v + "post_quant_conv.weight",
        t + "text_model.embeddings.token_embedding.weight",
        t + "text_model.encoder.layers.1.mlp.fc2.weight",
        t + "text_model.final_layer_norm.bias",
    ):
        assert key in ldm_sd, key
    for part in ("q", "k", "v", "proj_out"):
        w = ldm_sd[v + f"decoder.mid.attn_1.{part}.weight"]
        assert w.ndim == 4 and w.shape[2:] == (1, 1) and w.shape[0] == w.shape[1]
    assert not any(
        k.startswith(tuple(u + b for b in ("down_blocks", "up_blocks", "mid_block"))) for k in ldm_sd
    )


def test_diffusers_from_single_file_accepts_our_file(
    tiny_sd: SDComponents, ldm_file, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffusers import StableDiffusionPipeline

    # HF_HUB_OFFLINE is read when huggingface_hub is imported, so the env var alone may come too late; the
    # socket guard makes any network attempt fail loudly. Offline, diffusers needs `config=<local folder>`:
    # it reads unet/vae/text_encoder/tokenizer/scheduler configs from it. The text encoder then loads with no
    # extra step (CLIPTextConfig from `<folder>/text_encoder`, keys stripped of `text_model.` for the
    # flattened transformers 5.x CLIPTextModel), so all three components are checked.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    config_dir = save_sd_folder(tiny_sd, tmp_path / "sd15-tiny")
    pipe = StableDiffusionPipeline.from_single_file(
        str(ldm_file), config=str(config_dir), local_files_only=True, safety_checker=None
    )
    for name in COMPONENTS:
        assert_same_state(getattr(pipe, name).state_dict(), getattr(tiny_sd, name).state_dict(), name)


def test_file_reads_back_through_our_reader(tiny_sd: SDComponents, ldm_file) -> None:
    tensors, _ = read_state_dict(ldm_file)
    assert is_ldm_checkpoint(tensors)
    assert ldm_family(tensors) == "sd15"
    back = ldm_to_diffusers(tensors, dict(tiny_sd.unet.config), dict(tiny_sd.vae.config), source=ldm_file)
    assert_same_state(back["unet"], tiny_sd.unet.state_dict(), "unet")


def test_is_ldm_checkpoint() -> None:
    assert is_ldm_checkpoint(["first_stage_model.x", "model.diffusion_model.input_blocks.0.0.weight"])
    assert not is_ldm_checkpoint([])
    assert not is_ldm_checkpoint(["down_blocks.0.motion_modules.0.proj_in.weight", "conv_in.weight"])
    assert not is_ldm_checkpoint(["lora_unet_down_blocks_0_attentions_0_proj_in.alpha"])


def test_ldm_family(ldm_sd: dict[str, torch.Tensor]) -> None:
    assert ldm_family(ldm_sd) == "sd15"
    key = LDM_UNET_PREFIX + "input_blocks.0.0.weight"
    w = ldm_sd[key]
    assert ldm_family({**ldm_sd, key: torch.zeros(w.shape[0], 9, *w.shape[2:])}) == "sd15-inpaint"
    v2 = LDM_UNET_PREFIX + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
    assert ldm_family({**ldm_sd, v2: torch.zeros(4, 1024)}) == "sd2"
    xl = {"conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": torch.zeros(1)}
    assert ldm_family({**ldm_sd, **xl}) == "sdxl"
    assert ldm_family({"conv_in.weight": torch.zeros(1)}) == "unknown"


def test_no_unet_keys_names_the_source(tiny_sd: SDComponents) -> None:
    with pytest.raises(AdapterFormatError, match="my_lora.safetensors") as err:
        ldm_to_diffusers(
            {"lora_unet_x.alpha": torch.ones(())},
            tiny_sd.unet.config,
            tiny_sd.vae.config,
            "my_lora.safetensors",
        )
    assert LDM_UNET_PREFIX in str(err.value)


def test_sdxl_and_wrong_config_are_refused(tiny_sd: SDComponents, ldm_sd: dict[str, torch.Tensor]) -> None:
    xl = {**ldm_sd, "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": torch.zeros(1)}
    with pytest.raises(AdapterFormatError, match="SDXL"):
        ldm_to_diffusers(xl, tiny_sd.unet.config, tiny_sd.vae.config, "xl.safetensors")
    wrong = {**dict(tiny_sd.unet.config), "layers_per_block": 1}
    with pytest.raises(AdapterFormatError, match="layers_per_block=1"):
        ldm_to_diffusers(ldm_sd, wrong, tiny_sd.vae.config, "m.safetensors")


def test_missing_components_are_omitted(tiny_sd: SDComponents, ldm_sd: dict[str, torch.Tensor]) -> None:
    no_vae = {k: v for k, v in ldm_sd.items() if not k.startswith(LDM_VAE_PREFIX)}
    out = ldm_to_diffusers(no_vae, tiny_sd.unet.config, tiny_sd.vae.config)
    assert set(out) == {"unet", "text_encoder"}
    unet_only = diffusers_to_ldm(tiny_sd.unet.state_dict())  # layout counted from the keys (no config)
    assert unet_only.keys() == {k for k in ldm_sd if k.startswith(LDM_UNET_PREFIX)}
    assert set(ldm_to_diffusers(unet_only, tiny_sd.unet.config, tiny_sd.vae.config)) == {"unet"}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_ema_and_position_ids_are_ignored(tiny_sd: SDComponents, ldm_sd: dict[str, torch.Tensor]) -> None:
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    # diffusers' converter logs an EMA warning when it sees >100 `model_ema*` keys. Its logger does not
    # propagate to the root logger (so caplog misses it): listen on the "diffusers" logger directly.
    ema = {
        "model_ema." + k[len(LDM_UNET_PREFIX) :].replace(".", ""): v
        for k, v in ldm_sd.items()
        if "diffusion" in k
    }
    pos = {LDM_TEXT_PREFIX + "text_model.embeddings.position_ids": torch.arange(77)[None]}
    records = _Records()
    diffusers_logger = logging.getLogger("diffusers")
    old_level = diffusers_logger.level  # conftest.py may set DIFFUSERS_VERBOSITY=error
    diffusers_logger.setLevel(logging.WARNING)
    diffusers_logger.addHandler(records)
    try:
        convert_ldm_unet_checkpoint({**ldm_sd, **ema}, dict(tiny_sd.unet.config))
        assert any("EMA" in m for m in records.messages)  # the control: the raw converter does warn
        records.messages.clear()
        out = ldm_to_diffusers({**ldm_sd, **ema, **pos}, tiny_sd.unet.config, tiny_sd.vae.config)
    finally:
        diffusers_logger.removeHandler(records)
        diffusers_logger.setLevel(old_level)
    assert not records.messages
    assert_same_state(out["unet"], tiny_sd.unet.state_dict(), "unet")
    assert_same_state(out["text_encoder"], tiny_sd.text_encoder.state_dict(), "text_encoder")


def test_unmapped_diffusers_key_is_refused(tiny_sd: SDComponents) -> None:
    extra = {**tiny_sd.unet.state_dict(), "add_embedding.linear_1.weight": torch.zeros(1)}
    with pytest.raises(AdapterFormatError, match="add_embedding"):
        diffusers_to_ldm(extra, unet_config=dict(tiny_sd.unet.config))
