"""curate: cuts, motion score, relative filters, unreadable files, resume, dataset format (synthetic videos)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from motion_adapters.cli import main
from motion_adapters.clips.captions import caption_for, load_captions
from motion_adapters.clips.curate import CurateConfig, curate, select
from motion_adapters.clips.flow import motion_score, resize_short, sample_indices, to_gray
from motion_adapters.clips.scenes import FrameFeatures, detect_cuts, slow_step_for, split
from motion_adapters.clips.video import open_video, write_mp4
from motion_adapters.shapes.data import render_clip
from motion_adapters.shapes.world import Spec

FPS = 24
SIZE = 64


def clip(shape="circle", colour="red", motion="right", look="light", seed=1, n=30) -> np.ndarray:
    return render_clip(Spec(shape, colour, motion, look), seed, n, SIZE)


def three_scenes() -> tuple[np.ndarray, list[int]]:
    """Moving (30) | static (25) | moving (30): cuts at 30 and 55."""
    v = np.concatenate([clip(), clip("square", "blue", "static", "navy", 2, 25),
                        clip("triangle", "yellow", "up", "paper", 3, 30)])
    return v, [30, 55]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------- units

def test_cuts_found_within_one_frame(tmp_path):
    v, truth = three_scenes()
    black = np.zeros((6, SIZE, SIZE, 3), np.uint8)
    v = np.concatenate([v, black, clip("square", "green", "down", "light", 4, 20)])  # fade to black at 85..91
    write_mp4(v, tmp_path / "v.mp4", FPS)
    s = open_video(tmp_path / "v.mp4", 64)
    feat = FrameFeatures(slow_step_for(s.fps))
    for f in s.frames:
        feat.push(f)
    cuts = detect_cuts(feat, s.fps)
    for t in truth:
        assert any(abs(c - t) <= 1 for c in cuts), (t, cuts)
    scenes = split(len(feat), cuts, np.asarray(feat.luma) < 12)
    starts = [a for a, _ in scenes]
    assert all(any(abs(a - t) <= 1 for a in starts) for t in truth)
    assert scenes[-1][0] in (90, 91, 92) and scenes[-1][1] == len(v)  # black frames left out
    assert not any(a <= 88 < b for a, b in scenes)


def test_static_clip_scores_lower_motion_than_moving():
    def score(frames):
        g = [resize_short(to_gray(f), 16) for f in frames]
        return motion_score([g[i] for i in sample_indices(0, len(g), FPS)])

    static, moving = score(clip(motion="static", n=48)), score(clip(motion="right", n=48))
    assert static < 0.05 < 0.5 < moving


def _row(i, motion, brightness=100.0, contrast=30.0, frames=32):
    return dict(clip_id=f"c{i}", source=f"v{i}.mp4", fps=24.0, frames=frames, motion=motion,
                brightness=brightness, contrast=contrast)


def test_relative_thresholds_drop_what_they_should():
    rows = [_row(i, float(i), brightness=100 + i, contrast=50 - i) for i in range(8)]
    rows.append(_row(99, -5.0, frames=4))  # too short: out of the ranking, dropped anyway
    cfg = CurateConfig(drop_bottom=(("motion", 25), ("brightness", 12.5)), drop_top=(("contrast", 25),),
                       min_values=(("motion", 1.0),))
    th = select(rows, cfg, None)
    why = {r["clip_id"]: r["reasons"] for r in rows}
    assert why["c0"] == ["motion<1", "motion_bottom_25pct", "brightness_bottom_12.5pct", "contrast_top_25pct"]
    assert why["c1"] == ["motion_bottom_25pct", "contrast_top_25pct"]
    assert why["c2"] == [] and why["c7"] == []
    assert why["c99"] == ["too_short(<16)", "motion<1"]
    assert [r["clip_id"] for r in rows if r["kept"]] == ["c2", "c3", "c4", "c5", "c6", "c7"]
    assert th == {"motion_bottom_25pct": 1.0, "brightness_bottom_12.5pct": 100, "contrast_top_25pct": 49}
    with pytest.raises(ValueError, match="sharpness"):
        select(rows, CurateConfig(drop_bottom=(("sharpness", 10),)), None)


def test_captions_csv_formats(tmp_path):
    (tmp_path / "webvid.csv").write_text("videoid,contentUrl,name\n1066,http://x,a dog runs\n7,u,\"a cat, sleeping\"\n")
    caps = load_captions(tmp_path / "webvid.csv")
    assert caption_for(caps, "1066.mp4") == "a dog runs" and caption_for(caps, "sub/7.mp4") == "a cat, sleeping"
    (tmp_path / "plain.csv").write_text("file,caption\nsub/a.mp4,hello\nb,world\n")
    caps = load_captions(tmp_path / "plain.csv")
    assert caption_for(caps, "sub/a.mp4") == "hello" and caption_for(caps, "b.webm") == "world"
    assert caption_for(caps, "c.mp4") is None
    (tmp_path / "bad.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv: expected a file column"):
        load_captions(tmp_path / "bad.csv")


# ------------------------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("videos")
    v, _ = three_scenes()
    write_mp4(v, src / "cuts.mp4", FPS)
    write_mp4(clip(motion="static", n=40, seed=5), src / "static.mp4", FPS)
    write_mp4((clip(motion="left", seed=6).astype(np.float32) * 0.12).astype(np.uint8), src / "dark.mp4", FPS)
    flat = np.full((30, SIZE, SIZE, 3), 128, np.uint8)
    flat[:, :, : SIZE // 2] = 131  # nearly uniform, not dark
    write_mp4(flat, src / "flat.mp4", FPS)
    write_mp4(clip(n=10, seed=7), src / "short.mp4", FPS)
    (src / "sub").mkdir()
    from motion_adapters.clips.export import write_clip

    write_clip(clip(motion="down", seed=8), src / "sub" / "moving.gif", fps=FPS)
    (src / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    (src / ".hidden.mp4").write_bytes(b"ignored")
    (src / "caps.csv").write_text("file,caption\ncuts.mp4,three scenes\nsub/moving.gif,a red circle moving down\n")
    return src


@pytest.fixture(scope="module")
def dataset(videos, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ds") / "dataset"
    rc = main(["curate", str(videos), "--out", str(out), "--workers", "2", "--no-progress", "--motion-pct", "45",
               "--dark-pct", "15", "--uniform-pct", "15", "--captions", str(videos / "caps.csv"),
               "--default-caption", "a video"])
    assert rc == 0
    return out, json.loads((out / "report.json").read_text())


def test_unreadable_video_reported_and_skipped(dataset):
    out, s = dataset
    assert s["videos"] == 7 and s["unreadable"] == 1
    assert [e["source"] for e in s["errors"]] == ["broken.mp4"]
    assert "broken.mp4" in (out / "report" / "index.html").read_text()
    assert s["kept"] >= 3  # the run went on


def test_filters_on_real_clips(dataset):
    out, _ = dataset
    rows = {r["clip_id"].rsplit("-", 1)[0] + "_" + r["clip_id"].rsplit("_", 1)[1]: r
            for r in read_csv(out / "scores.csv")}
    assert set(rows) == {"cuts_000", "cuts_001", "cuts_002", "static_000", "dark_000", "flat_000", "short_000",
                         "sub-moving_000"}
    motion = {k: float(r["motion"]) for k, r in rows.items()}
    assert max(motion["cuts_001"], motion["static_000"]) < min(motion["cuts_000"], motion["cuts_002"],
                                                               motion["sub-moving_000"])
    reasons = {k: r["reasons"] for k, r in rows.items()}
    # 7 clips are long enough: 45 % by motion drops 3 (flat too), 15 % by brightness and contrast 1 each
    assert all("motion_bottom_45pct" in reasons[k] for k in ("cuts_001", "static_000", "flat_000"))
    assert "brightness_bottom_15pct" in reasons["dark_000"]
    assert "contrast_bottom_15pct" in reasons["flat_000"]
    assert reasons["short_000"].startswith("too_short")
    assert {k for k, r in rows.items() if r["kept"] == "1"} == {"cuts_000", "cuts_002", "sub-moving_000"}
    assert int(rows["cuts_001"]["start_frame"]) in (29, 30, 31) and int(rows["cuts_002"]["start_frame"]) in (54, 55, 56)


def test_dataset_format(dataset):
    out, _ = dataset
    meta = read_csv(out / "metadata.csv")
    with open(out / "metadata.csv", newline="") as f:
        assert next(csv.reader(f))[:2] == ["file_name", "text"]
    assert len(meta) == 3
    texts = {Path(r["source"]).name: r["text"] for r in meta}
    assert texts == {"cuts.mp4": "three scenes", "moving.gif": "a red circle moving down"}
    for r in meta:
        p = out / r["file_name"]
        assert p.suffix == ".mp4" and p.is_file()
        frames = np.stack(list(open_video(p).frames))
        assert len(frames) == int(r["frames"]) == int(r["end_frame"]) - int(r["start_frame"])
        assert frames.shape[1:] == (SIZE, SIZE, 3)
    assert len(read_csv(out / "scores.csv")) == 8
    assert (out / "report" / "contact_sheet.png").stat().st_size > 1000
    assert sorted(p.name for p in (out / "clips").iterdir()) == sorted(Path(r["file_name"]).name for r in meta)


def test_resume_skips_done_files(videos, tmp_path):
    out = tmp_path / "ds"
    cfg = CurateConfig(format="png")
    first = curate(videos, out, cfg)
    assert first["analysed"] == 6 and first["cached"] == 0 and first["written"] == first["kept"] == 7
    again = curate(videos, out, cfg)
    assert again["analysed"] == 0 and again["cached"] == 6 and again["written"] == 0 and again["reused"] == 7
    meta = read_csv(out / "metadata.csv")
    import shutil

    shutil.rmtree(out / meta[0]["file_name"])  # an interrupted write
    (videos / "static.mp4").touch()            # a changed source is analysed again
    third = curate(videos, out, cfg)
    assert third["analysed"] == 1 and third["cached"] == 5 and third["written"] >= 1
    assert (out / meta[0]["file_name"] / "0000.png").is_file()
    assert read_csv(out / "metadata.csv") == meta
    stricter = curate(videos, out, CurateConfig(format="png", drop_bottom=(("motion", 50),)))
    assert stricter["analysed"] == 0 and stricter["written"] == 0 and stricter["kept"] == 4
    assert len(list((out / "clips").iterdir())) == 4  # clips no longer kept are removed


def test_cli_help_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["curate", "--help"])
    text = capsys.readouterr().out
    for flag in ("--motion-pct", "--dark-pct", "--uniform-pct", "--captions", "--workers", "--flow-size",
                 "--cut-threshold", "--format", "--drop-bottom", "--score"):
        assert flag in text
    assert main(["curate", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "expected a folder of videos" in capsys.readouterr().err
    (tmp_path / "v").mkdir()
    assert main(["curate", str(tmp_path / "v"), "--out", str(tmp_path / "o"), "--flow-size", "8"]) == 2
    assert "--flow-size: expected 16 to 64" in capsys.readouterr().err
