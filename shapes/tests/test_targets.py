"""The shipped shapes-world weights against a small version of every issue-4 target (fixed seeds, 8 clips per
arm, held-out prompts), and ``eval`` ranking the motion module above per-frame generation (issue 7).

Thresholds are set a little below the full-size measurements (README table) so that they hold at 8 clips; the
navy checkpoint's known failure (no motion) is a strict xfail (it must start failing loudly once fixed).

These load ``motion_adapters/assets/toy/`` (no build, no download), so a regression anywhere on the path
registry → loading → hot-swap → LoRA → sampling → evaluator breaks CI. The full-size numbers (64 clips per
arm) are in the README and come from ``motion-adapters eval toy --n 64``.
"""

from __future__ import annotations

import numpy as np
import pytest

from motion_adapters.registry import is_available
from motion_adapters.shapes.models import DEFAULT_BASE, MODELS

N = 8


@pytest.fixture(scope="module")
def shipped() -> None:
    missing = [n for n in MODELS if not is_available(n)]
    assert not missing, f"shipped shapes-world weights missing: {missing}; run `motion-adapters toy build`"


@pytest.fixture(scope="module")
def result(shipped):
    from motion_adapters.shapes.eval_run import eval_toy

    return eval_toy(n=N, seed=0)


def rate(result, arm, key):
    return result["arms"][arm][key]["acc"]


def zoom(result, arm):
    s = result["arms"][arm]
    return s["predicted"].get("zoom in", 0) / s["n"]


def test_motion_module_moves_objects_as_prompted(result):
    assert rate(result, "base+motion", "direction") >= 7 / N
    assert rate(result, "base+motion", "colour") >= 7 / N


def test_without_the_module_frames_do_not_move_coherently(result):
    assert rate(result, "base, no motion", "direction") <= 2 / N
    assert result["arms"]["base, no motion"]["centroid_jump"] > 2 * result["arms"]["base+motion"]["centroid_jump"]


@pytest.mark.parametrize("arm", [
    pytest.param("navy+motion", marks=pytest.mark.xfail(strict=True, reason="the motion module does not move "
                                                        "navy content (docs/shapes-world.md: known limitation)")),
    "paper+motion"])
def test_personalised_checkpoints_keep_their_look_and_the_motion(result, arm):
    assert rate(result, arm, "look") >= 7 / N
    assert rate(result, arm, "direction") >= 6 / N


def test_motion_lora_adds_zoom_at_weight_one(result):
    assert zoom(result, "zoom-lora@1") >= 7 / N


def test_motion_lora_adds_no_zoom_at_weight_zero(result):
    assert zoom(result, "zoom-lora@0") <= 1 / N


def test_spatial_finetune_raises_quality_and_keeps_direction(result):
    hq, base = result["arms"]["hq+motion"], result["arms"]["base+motion"]
    assert hq["quality"] > base["quality"]
    assert hq["direction"]["acc"] >= base["direction"]["acc"] - 1 / N


def test_eval_ranks_the_motion_module_above_per_frame_generation(shipped):
    """Issue 7: same prompts and seeds with and without ``shapes-motion``; the module's clips show more
    *coherent* motion (flow that passes the forward-backward check) — plain flow magnitude would rank the
    independent frames higher, since every pixel of them changes (see inference/metrics.py)."""
    from motion_adapters.clips.metrics import motion
    from motion_adapters.inference import VideoGenerator

    gen = VideoGenerator(base=DEFAULT_BASE)
    prompts = ["a red circle moving right", "a blue square moving up", "a green triangle moving left",
               "a yellow circle moving down"]
    rows = {"module": [], "none": []}
    for i, p in enumerate(prompts):
        for arm, strength in (("module", 1.0), ("none", 0.0)):
            frames = gen.generate(p, seed=i, motion_strength=strength).frames
            rows[arm].append(motion((np.clip(frames, 0, 1) * 255).round().astype(np.uint8)))
    mean = {arm: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for arm, rs in rows.items()}
    assert mean["module"]["coherent_motion"] > mean["none"]["coherent_motion"]
    assert mean["module"]["flow_consistency"] > mean["none"]["flow_consistency"]
