"""``motion_adapters.shapes.probe``: every shipped checkpoint reads the direction word (the link the motion module needs),
the probe measures the text path (a UNet blind to text reads nothing), and the checkpoints the motion module
transfers to share the base's direction codes while content the base never learned does not."""

from __future__ import annotations

import pytest
import torch

from motion_adapters.shapes.probe import (
    CHECKPOINTS,
    OPPOSITE,
    code_alignment,
    direction_codes,
    probe_checkpoints,
    probe_specs,
    word_binding,
)


@pytest.fixture(scope="module")
def probe() -> dict:
    return probe_checkpoints()


def test_probe_images_cover_every_direction_shape_and_colour():
    specs = probe_specs("navy", 48)
    assert {s.motion for s in specs} == set(OPPOSITE)
    assert {s.look for s in specs} == {"navy"}
    assert len({(s.shape, s.colour) for s in specs}) == 12


@pytest.mark.parametrize("name", [name for name, _ in CHECKPOINTS])
def test_shipped_checkpoints_read_the_direction_word(probe, name):
    r = probe[name]
    # the opposite word raises the noise-prediction error (shipped: +0.0058 to +0.0092 at t=200)
    assert r["opposite"][200] > 0.003, r
    assert r["opposite"][400] > 0.0, r


def test_a_unet_blind_to_text_reads_no_word():
    from motion_adapters.inference import VideoGenerator

    gen = VideoGenerator(base="shapes-base", motion=None)
    with torch.no_grad():
        for name, p in gen.pipe.unet.named_parameters():
            if ".attn2.to_k." in name or ".attn2.to_v." in name:
                p.zero_()
    r = word_binding(gen.pipe, "light", n=8, timesteps=(200,))
    assert r["opposite"][200] == 0.0 and r["no_motion"][200] == 0.0
    assert r["error"][200] > 0.0


@pytest.mark.parametrize("name", ["shapes-paper", "shapes-hq"])
def test_checkpoints_the_module_transfers_to_share_the_base_direction_codes(probe, name):
    align = probe[name]["code_alignment"]
    assert len(align) == 9 and min(align.values()) > 0.6, align     # shipped: 0.70-0.99


def test_content_the_base_never_learned_has_unaligned_direction_codes():
    from motion_adapters.inference import VideoGenerator

    gen = VideoGenerator(base="shapes-base", motion=None)
    light = direction_codes(gen.pipe, "light")
    assert code_alignment(light, light) == pytest.approx(dict.fromkeys(light, 1.0), abs=1e-5)
    navy = code_alignment(light, direction_codes(gen.pipe, "navy"))
    assert sum(abs(v) for v in navy.values()) / len(navy) < 0.3, navy
