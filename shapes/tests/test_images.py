"""The pictures-as-keyframes evaluator (``shapes.eval_images``): its cases are held out and measured exactly,
and, when ``shapes-rgb-sparsectrl`` is built, the targets hold on a small n (8 cases per arm, 12 steps)."""

from __future__ import annotations

import numpy as np
import pytest

from motion_adapters.registry import is_available
from motion_adapters.shapes.data import render_clip
from motion_adapters.shapes.eval_images import (
    CASES,
    ENCODER,
    PLACED,
    Animator,
    case,
    encoder_status,
    load_encoder,
    run_arm,
    score,
    summarize,
)
from motion_adapters.shapes.world import DIRECTIONS, HELDOUT, train_combos

N = 8


def test_cases_are_held_out_fresh_and_measured_exactly():
    assert len(CASES) == 8 and {c[2] for c in CASES} == set(DIRECTIONS)
    assert set(CASES) <= set(HELDOUT) and not set(CASES) & set(train_combos())
    for i in range(N):
        spec, clip = case(i)
        assert spec.combo == CASES[i % 8] and clip.shape == (8, 32, 32, 3) and clip.dtype == np.uint8
        assert case(i)[1].tobytes() == clip.tobytes()                      # fixed by (seed, index)
        cued = render_clip(spec, 770_000 + i, cue=True)
        assert not np.array_equal(cued[0], clip[0])                        # the motion cue is left out
        row = score(clip, spec, clip)                                       # the case against itself
        assert row["first_dist"] == 0 and row["last_dist"] == 0 and row["direction_ok"], row
    still = np.repeat(case(0)[1][:1], 8, axis=0)                           # an object that never moves
    row = score(still, case(0)[0], case(0)[1])
    assert row["first_placed"] and not row["direction_ok"] and row["last_dist"] > PLACED


def test_an_absent_encoder_is_a_skip_message():
    assert "neither registered nor a file" in encoder_status("no-such-encoder")


@pytest.fixture(scope="module")
def anim() -> Animator:
    if not (is_available(ENCODER) and is_available("shapes-base") and is_available("shapes-motion")):
        pytest.skip(f"{ENCODER} not built; run `motion-adapters toy build --stage sparsectrl --stage export`")
    return Animator(load_encoder(ENCODER))


def test_image_to_video_places_the_object_and_moves_it_as_prompted(anim):
    rows, kept = run_arm(anim, "i2v", N, steps=12, keep=1)
    s = summarize(rows)
    assert kept[0].shape == (8, 32, 32, 3)
    assert s["first_placed"] >= 6 / N and s["direction"] >= 6 / N, rows


def test_first_and_last_keyframes_place_both_ends(anim):
    s = summarize(run_arm(anim, "first_last", N, steps=12)[0])
    assert s["both_placed"] >= 6 / N, s

