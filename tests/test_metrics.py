"""eval: flicker, motion, dynamic degree, consistency, run tables, CLIP scores from a tiny local model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from motion_adapters.cli import main
from motion_adapters.clips.export import write_clip
from motion_adapters.clips.metrics import consistency, motion, temporal_flicker
from motion_adapters.shapes.data import render_clip
from motion_adapters.shapes.world import Spec


def toy(motion_="right", n=16, size=64, seed=1) -> np.ndarray:
    return render_clip(Spec("circle", "red", motion_, "light"), seed, n, size)


def flickering(n=16) -> np.ndarray:
    f = toy("static", n).astype(np.int16)
    f[1::2] -= 40  # every other frame darker
    return np.clip(f, 0, 255).astype(np.uint8)


def test_flicker_motion_consistency_on_arrays():
    static, moving, flick = toy("static"), toy("right"), flickering()
    assert temporal_flicker(static)["temporal_flickering"] == 1.0
    assert temporal_flicker(flick)["flicker_mae"] > 20 > temporal_flicker(moving)["flicker_mae"]
    assert temporal_flicker(flick)["temporal_flickering"] < temporal_flicker(moving)["temporal_flickering"] < 1.0
    ms, mm = motion(static), motion(moving)
    assert ms["motion_magnitude"] < 0.05 and ms["dynamic"] == 0.0
    assert mm["motion_magnitude"] > 1.0 and mm["dynamic"] == 1.0
    assert consistency(static)["frame_ssim"] == pytest.approx(1.0)
    assert consistency(flick)["frame_ssim"] < 0.99 and consistency(moving)["frame_ssim"] < 0.99


def test_consistent_flow_separates_smooth_motion_from_independent_frames():
    """Independent frames (what an image model makes without a motion module) score HIGHER plain motion
    magnitude than smooth motion, but lower coherent motion and flow consistency."""
    smooth, jumpy = [], []
    for seed in range(6):
        smooth.append(motion(toy(("right", "left", "up")[seed % 3], n=8, size=32, seed=seed)))
        frames = np.stack([toy("static", n=1, size=32, seed=100 * seed + i)[0] for i in range(8)])
        jumpy.append(motion(frames))
    mean = lambda rows, k: float(np.mean([r[k] for r in rows]))  # noqa: E731
    assert mean(jumpy, "motion_magnitude") > mean(smooth, "motion_magnitude")
    assert mean(smooth, "coherent_motion") > mean(jumpy, "coherent_motion")
    assert mean(smooth, "flow_consistency") > mean(jumpy, "flow_consistency") + 0.2


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    recipe = {"prompt": "a red circle moving right", "fps": 8}
    write_clip(toy("right"), root / "moving" / "a.mp4", fps=8, recipe=recipe)
    write_clip(toy("right", seed=2), root / "moving" / "b.gif", fps=8, recipe=recipe)
    write_clip(toy("static"), root / "static" / "a.mp4", fps=8, recipe={"prompt": "a red circle", "fps": 8})
    write_clip(toy("static", seed=2), root / "static" / "frames", fps=8, recipe={"prompt": "a red circle"})
    write_clip(flickering(), root / "flicker.mp4", fps=8, recipe={"prompt": "a red circle"})
    return root


def test_eval_ranks_runs_and_flags_flicker(runs, tmp_path, capsys):
    out = tmp_path / "cmp.json"
    assert main(["eval", str(runs / "moving"), str(runs / "static"), str(runs / "flicker.mp4"),
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("| run | clips |") and "| moving | 2 |" in text and "| static | 2 |" in text
    res = json.loads(out.read_text())
    m = {r["name"]: r["metrics"] for r in res["runs"]}
    assert m["moving"]["motion_magnitude"] > 1.0 > 0.05 > m["static"]["motion_magnitude"]
    assert m["moving"]["dynamic_degree"] == 1.0 and m["static"]["dynamic_degree"] == 0.0
    assert m["flicker.mp4"]["flicker_mae"] > 10 * max(m["static"]["flicker_mae"], 0.5)
    assert m["flicker.mp4"]["temporal_flickering"] < m["static"]["temporal_flickering"]
    assert "clip_score" not in m["moving"]  # no CLIP without --clip-model
    assert [Path(c["path"]).name for c in res["runs"][1]["per_clip"]] == ["a.mp4", "frames"]


def test_eval_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MOTION_ADAPTERS_TOY_DIR", str(tmp_path / "no-models"))
    assert main(["eval", "toy"]) == 2  # the shapes-world models are not built there
    assert "motion-adapters toy build" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing.mp4")]) == 2
    assert "missing.mp4: expected a clip file or folder" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--clip-model", str(tmp_path)]) == 2
    assert "--clip-model" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPModel

    from motion_adapters.tokenizer import write_clip_tokenizer_files

    d = tmp_path_factory.mktemp("tiny_clip")
    cfg = CLIPConfig(text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                      num_hidden_layers=2, max_position_embeddings=77),
                     vision_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                        num_hidden_layers=2, image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(d)
    write_clip_tokenizer_files(d)
    return d


def test_clip_scores_with_tiny_local_model(runs, tiny_clip, tmp_path, capsys):
    out = tmp_path / "clip.json"
    assert main(["eval", str(runs / "moving"), str(runs / "static"), "--clip-model", str(tiny_clip),
                 "--json", str(out), "--per-clip"]) == 0
    text = capsys.readouterr().out
    assert "CLIP score" in text and "CLIP frame cons." in text
    res = json.loads(out.read_text())
    for run in res["runs"]:
        for c in run["per_clip"]:
            assert 0.0 <= c["clip_score"] <= 100.0
            assert -1.0 <= c["clip_frame_consistency"] <= 1.0 + 1e-5
    static = res["runs"][1]["per_clip"][0]
    assert static["prompt"] == "a red circle" and static["clip_frame_consistency"] == pytest.approx(1.0, abs=1e-4)
    # an explicit prompt overrides the recipes
    assert main(["eval", str(runs / "static" / "a.mp4"), "--clip-model", str(tiny_clip), "--prompt", "a dog",
                 "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["per_clip"][0]["prompt"] == "a dog"
