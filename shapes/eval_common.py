"""What the shapes-world evaluators of SparseCtrl (:mod:`~motion_adapters.shapes.eval_images`) and of video to
video / ControlNet (:mod:`~motion_adapters.shapes.eval_controls`) share: their CLI and their labelled demo GIF."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from motion_adapters.shapes.eval_run import write_json

#: a GIF row: its title and its cells, each a label and a (frames, H, W, 3) uint8 clip
GifRow = tuple[str, list[tuple[str, np.ndarray]]]


def labelled_gif(path: str | Path, rows: list[GifRow], num_frames: int, cell: int, gap: int, head: int,
                 label_dy: int, fps: float, colours: int | None = None) -> Path:
    """``rows`` as an animated GIF of ``num_frames`` frames: per row its title, per cell its label ``label_dy``
    px below and its clip (looped, nearest-neighbour resized to ``cell`` px); ``colours``: quantize each frame."""
    ncol = max(len(c) for _, c in rows)
    width, height = ncol * (cell + gap) + gap, len(rows) * (cell + head + gap) + gap
    frames = []
    for t in range(num_frames):
        img = Image.new("RGB", (width, height), (255, 255, 255))
        draw = ImageDraw.Draw(img)
        for r, (title, cells) in enumerate(rows):
            y = gap + r * (cell + head + gap)
            draw.text((gap, y), title, fill=(0, 0, 0))
            for c, (label, clip) in enumerate(cells):
                x = gap + c * (cell + gap)
                draw.text((x, y + label_dy), label, fill=(90, 90, 90))
                img.paste(Image.fromarray(clip[t % len(clip)]).resize((cell, cell), Image.NEAREST), (x, y + head))
        frames.append(img.quantize(colours) if colours else img)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0, optimize=True)
    return out


def eval_main(argv: list[str] | None, description: str, build_parser: Callable[[str], argparse.ArgumentParser],
              run_parsed: Callable[[argparse.Namespace], dict], table: Callable[[dict], str]) -> int:
    """An evaluator's CLI: its options plus ``--json``, the run, its table on stdout (and the JSON)."""
    p = build_parser(description)
    p.add_argument("--json", default=None, help="also write the result as JSON here")
    a = p.parse_args(argv)
    res = run_parsed(a)
    print(table(res))
    if a.json:
        write_json(res, a.json)
    return 0
