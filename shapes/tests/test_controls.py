"""The video-to-video / ControlNet evaluator (``shapes.eval_controls``) end to end on the shipped models, small n:
its input paths are not straight lines and it measures them exactly, strength 0 follows them, the ControlNet
arm runs with a live stand-in and is skipped with a message when the real model is absent."""

from __future__ import annotations

import numpy as np
import pytest

from motion_adapters.inference.generator import VideoGenerator
from motion_adapters.registry import is_available
from motion_adapters.shapes.eval_controls import (
    PATH_KINDS,
    V2V_BASE,
    controlnet_status,
    left_control,
    path_clip,
    pearson,
    run_controlnet,
    run_v2v,
    stand_in_controlnet,
    summarize_v2v,
)
from motion_adapters.shapes.evaluate import evaluate_clip


@pytest.fixture(scope="module")
def gen() -> VideoGenerator:
    if not (is_available(V2V_BASE) and is_available("shapes-motion")):
        pytest.skip("shipped shapes-world weights missing; run `motion-adapters toy build`")
    return VideoGenerator(base=V2V_BASE, motion="shapes-motion")


@pytest.mark.parametrize("index", range(6))
def test_input_paths_turn_and_are_measured_exactly(index):
    spec, kind, centres, clip = path_clip(index, seed=3)
    assert kind == PATH_KINDS[index % 3] and clip.shape == (8, 32, 32, 3) and clip.dtype == np.uint8
    steps = np.diff(centres, axis=0)
    turns = np.abs(np.diff(np.arctan2(steps[:, 1], steps[:, 0])))
    assert turns.max() > 0.5                       # not a straight line (training clips are)
    assert np.ptp(centres, axis=0).min() >= 8      # both axes move enough for a meaningful r
    c = np.array(evaluate_clip(clip, spec, look="light")["centroids"])
    assert pearson(c[:, 0], centres[:, 0]) > 0.99 and pearson(c[:, 1], centres[:, 1]) > 0.99
    assert path_clip(index, seed=3)[3].tobytes() == clip.tobytes()      # fixed by (seed, index)


def test_pearson_edge_cases():
    a = np.arange(5.0)
    assert pearson(a, 2 * a + 1) == pytest.approx(1.0) and pearson(a, -a) == pytest.approx(-1.0)
    assert pearson(a, np.full(5, 3.0)) == 0.0                          # constant: no evidence of following
    assert pearson(np.array([0, 1, np.nan, np.nan, np.nan]), a) == 0.0  # fewer than 3 frames found


def test_strength_zero_follows_the_input_path(gen):
    rows, kept = run_v2v(gen, 2, 0.0, seed=0, keep=1)
    s = summarize_v2v([dict(r) for r in rows], 0.0)
    assert [r["path"] for r in rows] == ["turn", "arc"] and len(kept) == 1
    assert all(r["r_x"] >= 0.9 and r["r_y"] >= 0.9 for r in rows), rows
    assert s["met"] and s["frac_both_ge_0.8"] == 1.0 and s["colour_rate"] == 1.0


def test_controlnet_arm_runs_with_a_stand_in_and_is_skipped_without_the_model(gen):
    assert "skipped" in controlnet_status("no-such-controlnet")
    cn = stand_in_controlnet()
    assert controlnet_status(cn) is None
    spec, clip, maps = left_control(0)
    assert spec.motion == "right" and evaluate_clip(clip, spec.with_(motion="left"))["motion_ok"]
    assert set(np.unique(maps)) <= {0.0, 1.0} and maps.shape == clip.shape
    gen.load_base("shapes-base")
    try:
        with_cn, frames = run_controlnet(gen, cn, 1, steps=2, keep=1)
        without, _ = run_controlnet(gen, None, 1, steps=2)
    finally:
        gen.load_base(V2V_BASE)
    assert with_cn[0]["direction"] == without[0]["direction"] and frames[0].shape == (8, 32, 32, 3)
