"""Contact sheet of shapes-world clips (one row per clip: its caption, then its frames).

``python -m motion_adapters.shapes.sheet docs/shapes_samples.png`` regenerates the README's sample sheet.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from motion_adapters.shapes.data import render_clip
from motion_adapters.shapes.world import Spec, caption

SAMPLE_ROWS: tuple[Spec, ...] = (
    Spec("circle", "red", "left", "light"),
    Spec("square", "blue", "right", "navy"),
    Spec("triangle", "yellow", "up", "paper"),
    Spec("circle", "green", "down", "light", hq=True),
    Spec("triangle", "blue", "zoom in", "navy", hq=True),
    Spec("square", "red", "static", "paper", hq=True),
)


def contact_sheet(path: str | Path, specs: tuple[Spec, ...] = SAMPLE_ROWS, seed: int = 3, frames: int = 8,
                  scale: int = 3, label_width: int = 250) -> Path:
    """Write a PNG with one row per spec: the caption (+ "[hq]") and the clip's frames, upscaled ×``scale``."""
    size = 32 * scale
    gap = 4
    sheet = Image.new("RGB", (label_width + frames * (size + gap), len(specs) * (size + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for row, spec in enumerate(specs):
        clip = render_clip(spec, seed + row, frames)
        y = row * (size + gap)
        draw.text((6, y + size // 2 - 6), caption(spec) + ("  [hq]" if spec.hq else ""), fill=(0, 0, 0))
        for t, frame in enumerate(clip):
            img = Image.fromarray(np.ascontiguousarray(frame)).resize((size, size), Image.NEAREST)
            sheet.paste(img, (label_width + t * (size + gap), y))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    return out


if __name__ == "__main__":
    print(contact_sheet(sys.argv[1] if len(sys.argv) > 1 else "docs/shapes_samples.png"))
