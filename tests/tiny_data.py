"""Test fixture: tiny synthetic captioned datasets (moving squares) in the shared folder format."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image

COLORS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (40, 80, 230)}


def moving_square(num_frames: int = 12, size: int = 64, dx: int = 3, color=(230, 40, 40)) -> np.ndarray:
    """(F, H, W, 3) uint8: a square sliding right by ``dx`` px per frame on a grey background."""
    frames = np.full((num_frames, size, size, 3), 40, np.uint8)
    s = size // 4
    for i in range(num_frames):
        x = (size // 16 + i * dx) % (size - s)
        frames[i, size // 3 : size // 3 + s, x : x + s] = color
    return frames


def write_video(path: Path, frames: np.ndarray, fps: int = 8) -> Path:
    """mp4/webm/mov through imageio-ffmpeg, gif through PIL, or a folder of PNG frames (no suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == "":
        path.mkdir(exist_ok=True)
        for i, f in enumerate(frames):
            Image.fromarray(f).save(path / f"{i:05d}.png")
    elif path.suffix == ".gif":
        ims = [Image.fromarray(f) for f in frames]
        ims[0].save(path, save_all=True, append_images=ims[1:], duration=1000 // fps, loop=0)
    else:
        iio.imwrite(path, frames, fps=fps, codec="libx264", macro_block_size=1)
    return path


def write_toy_dataset(folder: str | Path, kinds=("mp4", "gif", "frames", "png"), num_frames: int = 12,
                      size: int = 64, broken: int = 0, fmt: str = "jsonl") -> Path:
    """A dataset folder with one item per kind (+ ``broken`` corrupt .mp4 files) and its metadata file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, kind in enumerate(kinds):
        name, color = list(COLORS.items())[i % len(COLORS)]
        frames = moving_square(num_frames, size, 3 + i, color)
        rel = {"mp4": f"clip{i}.mp4", "gif": f"clip{i}.gif", "frames": f"clip{i}", "png": f"image{i}.png",
               "webm": f"clip{i}.webm"}[kind]
        if kind == "png":
            Image.fromarray(frames[0]).save(folder / rel)
        else:
            write_video(folder / rel, frames)
        rows.append({"file_name": rel, "text": f"a {name} square moving right"})
    for j in range(broken):
        (folder / f"broken{j}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video" * 3)
        rows.append({"file_name": f"broken{j}.mp4", "text": "broken"})
    if fmt == "jsonl":
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with open(folder / "metadata.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["file_name", "text"])
            w.writeheader()
            w.writerows(rows)
    return folder
