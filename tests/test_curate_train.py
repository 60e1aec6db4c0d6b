"""A curated dataset trains with the training engine (issue 7 × issue 3): cuts split the raw videos, captions
carry over from a CSV, and the trainer reads every clip of ``metadata.csv`` in both output formats."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from motion_adapters.cli import main as cli
from motion_adapters.clips.video import write_mp4
from motion_adapters.shapes.data import render_clip
from motion_adapters.shapes.world import Spec
from motion_adapters.training.config import load_config


@pytest.mark.parametrize("fmt", ["mp4", "png"])
def test_curated_dataset_trains(tiny, tmp_path, fmt):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i, (a, b) in enumerate([(("circle", "red", "right"), ("square", "blue", "down")),
                                (("triangle", "yellow", "left"), ("circle", "green", "up"))]):
        video = np.concatenate([render_clip(Spec(*a), i, 20, 64), render_clip(Spec(*b, look="navy"), i + 5, 20, 64)])
        write_mp4(video, raw / f"video{i}.mp4", 24)
    with open(tmp_path / "captions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "caption"])
        w.writerows([["video0.mp4", "a shape moving"], ["video1.mp4", "another shape moving"]])
    out = tmp_path / "dataset"
    assert cli(["curate", str(raw), "--out", str(out), "--workers", "1", "--no-progress", "--min-frames", "8",
                "--format", fmt, "--captions", str(tmp_path / "captions.csv")]) == 0
    with open(out / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4  # two scenes per video, split at the cut
    assert {r["text"] for r in rows} == {"a shape moving", "another shape moving"}

    from motion_adapters.training.trainer import Trainer

    cfg = load_config(values={
        "task": "motion_lora",
        "model": {"base": str(tiny.base_a), "motion_module": str(tiny.mm_a_dir)},
        "data": {"path": str(out), "num_frames": 4, "stride": 2, "resolution": 64},
        "lora": {"rank": 4},
        "optim": {"lr": 1e-3},
        "run": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "checkpoint_every": 100, "progress": False,
                "tensorboard": False, "seed": 1},
    })
    trainer = Trainer(cfg)
    assert len(trainer.dataset) == 4 and trainer.dataset.summary()["videos"] == 4
    result = trainer.run()
    assert trainer.failures.attempts > 0 and not trainer.failures.failed
    assert len(result["losses"]) == 2 and all(np.isfinite(result["losses"]))
    assert torch.isfinite(torch.tensor(result["losses"])).all()
