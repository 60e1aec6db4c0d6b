"""Curate a folder of synthetic shapes-world videos (cuts, static shots, a dark and a blank clip, a broken file)
and copy the contact sheet to ``docs/curate_report.png`` (the README's example).

    python bench/curate_demo.py [docs/curate_report.png]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from motion_adapters.clips.curate import CurateConfig, curate
from motion_adapters.clips.video import write_mp4
from motion_adapters.shapes.data import render_clip
from motion_adapters.shapes.world import Spec

FPS = 24


def _clip(shape, colour, motion, look, seed, n=36, size=96) -> np.ndarray:
    return render_clip(Spec(shape, colour, motion, look), seed, n, size)


def demo_videos(root: Path) -> Path:
    """Write the demo's raw videos and caption CSV under ``root``; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    write_mp4(np.concatenate([_clip("circle", "red", "right", "light", 1), _clip("square", "blue", "left", "navy", 2),
                              _clip("triangle", "yellow", "up", "paper", 3)]), root / "trailer.mp4", FPS)
    write_mp4(np.concatenate([_clip("square", "green", "left", "light", 4),
                              _clip("circle", "yellow", "zoom in", "navy", 5)]), root / "vlog.mp4", FPS)
    write_mp4(_clip("triangle", "red", "static", "light", 6, 48), root / "still_shot.mp4", FPS)
    write_mp4(_clip("circle", "blue", "down", "paper", 7), root / "walk.mp4", FPS)
    write_mp4((_clip("square", "red", "right", "light", 8).astype(np.float32) * 0.1).astype(np.uint8),
              root / "night.mp4", FPS)
    write_mp4(np.full((36, 96, 96, 3), 200, np.uint8), root / "title_card.mp4", FPS)
    write_mp4(_clip("circle", "green", "up", "light", 9, 8), root / "blink.mp4", FPS)
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    (root / "captions.csv").write_text("file,caption\ntrailer.mp4,a trailer\nvlog.mp4,a vlog\nwalk.mp4,"
                                       "a blue circle moving down\n")
    return root


def main(out_png: str = "docs/curate_report.png") -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        src = demo_videos(Path(tmp) / "raw")
        ds = Path(tmp) / "dataset"
        cfg = CurateConfig(drop_bottom=(("motion", 25), ("brightness", 15), ("contrast", 15)),
                           captions=str(src / "captions.csv"), default_caption="a video")
        s = curate(src, ds, cfg)
        print({k: s[k] for k in ("videos", "clips", "kept", "dropped", "unreadable", "thresholds")})
        out = Path(out_png)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ds / "report" / "contact_sheet.png", out)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_png", nargs="?", default="docs/curate_report.png",
                        help="where the contact sheet is copied (default docs/curate_report.png)")
    print(main(parser.parse_args().out_png))
