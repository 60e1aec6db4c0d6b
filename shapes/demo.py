"""The README's animated demo: the embedded shapes-world models, one labelled row per arm.

``python -m motion_adapters.shapes.demo docs/shapes_demo.gif`` regenerates it (seconds on a CPU). Every row is a
real clip of the embedded models on a held-out prompt, upscaled with nearest-neighbour so pixels stay
visible; the rows show the motion module, no motion module, both personalised checkpoints, the zoom
MotionLoRA and the spatial finetune.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from motion_adapters.inference.generator import VideoGenerator

#: (label, base, motion, LoRAs, prompt)
ROWS: tuple[tuple[str, str, str | None, dict, str], ...] = (
    ("shapes-base + shapes-motion", "shapes-base", "shapes-motion", {}, "a red circle moving right"),
    ("shapes-base, --motion none", "shapes-base", None, {}, "a red circle moving right"),
    ("shapes-navy + shapes-motion", "shapes-navy", "shapes-motion", {}, "a green square moving up"),
    ("shapes-paper + shapes-motion", "shapes-paper", "shapes-motion", {}, "a blue triangle moving left"),
    ("+ shapes-zoom-lora (weight 1)", "shapes-base", "shapes-motion", {"shapes-zoom-lora": 1.0},
     "a yellow square zooming in"),
    ("shapes-hq + shapes-motion", "shapes-hq", "shapes-motion", {}, "a red circle moving down"),
)


def render_rows(seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """(label + prompt, uint8 frames) of every row, with one generator swapped in place between rows."""

    gen = VideoGenerator(base=ROWS[0][1], motion=ROWS[0][2])
    out = []
    for label, base, motion, loras, prompt in ROWS:
        gen.load_base(base)
        gen.load_motion(motion)
        gen.set_loras(loras)
        frames = gen.generate(prompt, seed=seed).frames
        out.append((f"{label}\n\"{prompt}\"", (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)))
    return out


def demo_gif(path: str | Path, seed: int = 0, scale: int = 4, label_width: int = 230, fps: float = 6.0) -> Path:
    """Write the labelled grid as a looping GIF (one column of clips, labels on the left)."""
    rows = render_rows(seed)
    n_frames, h, w = rows[0][1].shape[:3]
    gap = 6
    cell_h, cell_w = h * scale, w * scale
    size = (label_width + cell_w + gap, len(rows) * (cell_h + gap))
    canvas = []
    for t in range(n_frames):
        img = Image.new("RGB", size, (255, 255, 255))
        draw = ImageDraw.Draw(img)
        for r, (label, frames) in enumerate(rows):
            y = r * (cell_h + gap)
            draw.multiline_text((6, y + cell_h // 2 - 12), label, fill=(0, 0, 0), spacing=4)
            tile = Image.fromarray(frames[t]).resize((cell_w, cell_h), Image.NEAREST)
            img.paste(tile, (label_width, y))
        canvas.append(img)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas[0].save(out, save_all=True, append_images=canvas[1:], duration=int(1000 / fps), loop=0, optimize=True)
    return out


if __name__ == "__main__":
    print(demo_gif(sys.argv[1] if len(sys.argv) > 1 else "docs/shapes_demo.gif"))
