"""Pictures as keyframes (SparseCtrl RGB) measured in the shapes world (issue #20).

Every case is a clip rendered with :func:`~motion_adapters.shapes.data.render_clip` (no motion cue) of one of
the held-out shape × colour × direction combos (:data:`~motion_adapters.shapes.world.HELDOUT`: no training
clip shows that shape in that colour moving that way) from a seed of its own (``IMAGE_SEED + seed + i``), so
its positions are fresh draws. Three arms over the same cases and noise seeds:

* **image to video** (``i2v``): frame 0 of the case as keyframe 0, the prompt naming colour, shape and
  direction. Measured: the distance between the object's centre in generated frame 0 and in the picture (the
  evaluator's mask centroid), placed when ≤ 15 % of the width; the evaluator's direction of the clip.
* **first + last** (``first_last``): frames 0 and F−1 of the case as keyframes 0 and F−1; both ends placed.
* **text only** (``text_only``): the same prompts without the encoder, the baseline that shows the encoder
  is what places the object (its frame 0 is compared with the picture the other arms got).

Clips come from ``VideoGenerator.generate`` (``keyframes={frame: picture}``, ``sparsectrl=`` the encoder).

``python -m motion_adapters.shapes.eval_images --n 32 --json out.json --gif docs/image_to_video.gif``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from diffusers import SparseControlNetModel

from motion_adapters.clips.export import to_uint8
from motion_adapters.inference.generator import VideoGenerator
from motion_adapters.kinds import KIND_SPARSECTRL
from motion_adapters.loading import load_adapter
from motion_adapters.registry import is_available, is_registered, model_path
from motion_adapters.shapes.data import render_clip
from motion_adapters.shapes.eval_common import eval_main, labelled_gif
from motion_adapters.shapes.evaluate import evaluate_clip
from motion_adapters.shapes.models import (
    DEFAULT_BASE,
    DEFAULT_MOTION,
    DEFAULT_SPARSECTRL,
    generation_defaults,
)
from motion_adapters.shapes.world import DIRECTIONS, HELDOUT, Spec, caption
from motion_adapters.swap import build_sparsectrl

ENCODER = DEFAULT_SPARSECTRL
ARMS = ("i2v", "first_last", "text_only")
#: the held-out combos that move in a direction (each direction twice)
CASES: tuple[tuple[str, str, str], ...] = tuple(c for c in HELDOUT if c[2] in DIRECTIONS)
IMAGE_SEED = 770_000      # case seeds start here: far from every training stream
PLACED = 0.15             # an end is placed when its centre is at most this share of the width away
TARGETS = {"i2v_placed": 0.90, "i2v_direction": 0.85, "first_last_both": 0.85}
Say = Callable[[str], None]


# ------------------------------------------------------------------------------------------------ inputs

def case(index: int, seed: int = 0, frames: int = 8, size: int = 32) -> tuple[Spec, np.ndarray]:
    """(spec, uint8 clip (F, H, W, 3)) of evaluation case ``index``: the held-out combos in turn, positions
    and speed from its own seed, base look, no motion cue."""
    shape, colour, motion = CASES[index % len(CASES)]
    spec = Spec(shape, colour, motion)
    return spec, render_clip(spec, IMAGE_SEED + seed + index, frames=frames, size=size, cue=False)


def load_encoder(src: str | Path = ENCODER) -> SparseControlNetModel:
    """A live SparseCtrl encoder (fp32, eval) from a file or a registered name."""
    path = model_path(str(src)) if is_registered(str(src)) else Path(src)
    return build_sparsectrl(load_adapter(path, expect=KIND_SPARSECTRL), torch.float32, "cpu").eval()


def encoder_status(src: str | Path | SparseControlNetModel | None = ENCODER) -> str | None:
    """``None`` when the encoder arms can run with ``src``, else why not (the skip message)."""
    if isinstance(src, SparseControlNetModel):
        return None
    if src is None or (not is_registered(str(src)) and not Path(str(src)).exists()):
        return f"skipped: SparseCtrl encoder {src!r} is neither registered nor a file"
    if is_registered(str(src)) and not is_available(str(src)):
        return f"skipped: SparseCtrl encoder {src!r} is registered but its weights are missing (build it first)"
    return None


# ----------------------------------------------------------------------------------------------- generation

class Animator:
    """The shapes base + motion module with a SparseCtrl encoder: clips from keyframes ``{frame: picture}``
    through ``VideoGenerator.generate(keyframes=…, sparsectrl=…)``, or from text alone."""

    def __init__(self, encoder: str | Path | SparseControlNetModel | None, base: str = DEFAULT_BASE,
                 motion: str = DEFAULT_MOTION):
        self.gen = VideoGenerator(base=base, motion=motion)
        self.defaults = generation_defaults(base)
        self.encoder = encoder

    def __call__(self, prompt: str, seed: int, keyframes: dict[int, np.ndarray] | None = None,
                 steps: int | None = None, scale: float = 1.0) -> np.ndarray:
        """uint8 (F, H, W, 3) clip: with ``keyframes`` through the encoder, else text only."""
        steps = steps or int(self.defaults["num_inference_steps"])
        if not keyframes:
            return to_uint8(self.gen.generate(prompt, seed=seed, num_inference_steps=steps).frames)
        res = self.gen.generate(prompt, seed=seed, num_inference_steps=steps, keyframes=keyframes,
                                sparsectrl=self.encoder, sparsectrl_scale=scale)
        return to_uint8(res.frames)


# ----------------------------------------------------------------------------------------------- metrics

def centre(frame: np.ndarray, spec: Spec) -> np.ndarray:
    """The evaluator's object centre (x, y) in px of one frame (NaN when no object is found)."""
    return np.asarray(evaluate_clip(frame, spec)["centroids"][0], dtype=np.float64)


def score(frames: np.ndarray, spec: Spec, clip: np.ndarray) -> dict:
    """Distances (share of the width) of the generated first / last frame's object from the case's, and the
    evaluator's direction of the whole clip."""
    width = clip.shape[2]
    e = evaluate_clip(frames, spec)
    got = np.asarray(e["centroids"], dtype=np.float64)
    first = float(np.linalg.norm(got[0] - centre(clip[0], spec)) / width)
    last = float(np.linalg.norm(got[-1] - centre(clip[-1], spec)) / width)
    first = first if np.isfinite(first) else 1.0   # no object found: never placed
    last = last if np.isfinite(last) else 1.0
    return {"first_dist": first, "last_dist": last, "first_placed": first <= PLACED, "last_placed": last <= PLACED,
            "both_placed": first <= PLACED and last <= PLACED, "direction": e["motion_pred"],
            "direction_ok": e["motion_pred"] == spec.motion, "colour_ok": e["colour_ok"], "found": e["found"]}


def summarize(rows: list[dict]) -> dict:
    def rate(key: str) -> float:
        return float(np.mean([r[key] for r in rows])) if rows else float("nan")

    return {"n": len(rows), "first_placed": rate("first_placed"), "last_placed": rate("last_placed"),
            "both_placed": rate("both_placed"), "direction": rate("direction_ok"), "colour": rate("colour_ok"),
            "median_first_dist": float(np.median([r["first_dist"] for r in rows])),
            "median_last_dist": float(np.median([r["last_dist"] for r in rows])),
            "directions": {k: sum(r["direction"] == k for r in rows) for k in sorted({str(r["direction"]) for r in rows})}}


def targets(arms: dict) -> dict:
    """Each issue target with its measured rate and whether it is met."""
    got = {"i2v_placed": arms.get("i2v", {}).get("first_placed"),
           "i2v_direction": arms.get("i2v", {}).get("direction"),
           "first_last_both": arms.get("first_last", {}).get("both_placed")}
    return {k: {"target": TARGETS[k], "measured": v, "met": v is not None and v >= TARGETS[k]}
            for k, v in got.items() if v is not None}


# -------------------------------------------------------------------------------------------------- arms

def keyframes_of(arm: str, clip: np.ndarray) -> dict[int, np.ndarray] | None:
    if arm == "i2v":
        return {0: clip[0]}
    if arm == "first_last":
        return {0: clip[0], len(clip) - 1: clip[-1]}
    return None


def run_arm(anim: Animator, arm: str, n: int, seed: int = 0, steps: int | None = None, keep: int = 0,
            say: Say | None = None) -> tuple[list[dict], list[np.ndarray]]:
    """``n`` cases of ``arm``: per-case rows and the first ``keep`` generated clips."""
    rows, kept = [], []
    frames_n = int(anim.defaults["num_frames"])
    for i in range(n):
        spec, clip = case(i, seed, frames=frames_n)
        t0 = time.perf_counter()
        frames = anim(caption(spec), seed + i, keyframes_of(arm, clip), steps)
        row = score(frames, spec, clip)
        row.update(index=i, prompt=caption(spec), seed=seed + i, seconds=time.perf_counter() - t0)
        rows.append(row)
        if i < keep:
            kept.append(frames)
        if say:
            say(f"[{arm}] {i + 1}/{n} first {row['first_dist']:.2f} last {row['last_dist']:.2f} "
                f"{row['direction']} ({spec.motion})")
    return rows, kept


def eval_images(n: int = 32, seed: int = 0, steps: int | None = None, arms: tuple[str, ...] = ARMS,
                encoder: str | Path | SparseControlNetModel | None = ENCODER, gif: str | Path | None = None,
                say: Say | None = None, on_arm: Callable[[dict], None] | None = None) -> dict:
    """Every arm over ``n`` cases (the encoder arms skipped with a message when ``encoder`` cannot run);
    ``gif``: also write the demo; ``on_arm``: called with the result so far after each arm."""
    why = encoder_status(encoder)
    model = None if why else encoder   # a path or registered name is read by the generator
    anim = Animator(model)
    out: dict = {"n": n, "seed": seed, "steps": steps or anim.defaults["num_inference_steps"],
                 "encoder": encoder if not isinstance(encoder, SparseControlNetModel) else "live SparseControlNetModel",
                 "cases": [list(c) for c in CASES], "placed_within": PLACED, "arms": {}, "per_case": {}}
    if why:
        out["skipped"] = why
        if say:
            say(why)
    kept: dict[str, list[np.ndarray]] = {}
    for arm in arms:
        if arm != "text_only" and model is None:
            continue
        t0 = time.perf_counter()
        rows, kept[arm] = run_arm(anim, arm, n, seed, steps, 2 if gif else 0, say)
        out["arms"][arm] = dict(summarize(rows), seconds=time.perf_counter() - t0)
        out["per_case"][arm] = rows
        out["targets"] = targets(out["arms"])
        if on_arm:
            on_arm(out)
    if gif and {"i2v", "first_last", "text_only"} <= set(kept):
        out["gif"] = str(demo_gif(gif, kept, seed))
    return out


# ------------------------------------------------------------------------------------------------- GIF

def demo_gif(path: str | Path, kept: dict[str, list[np.ndarray]], seed: int = 0, scale: int = 3,
             fps: float = 4.0) -> Path:
    """Per kept case two rows: picture | SparseCtrl clip | text-only clip; first | last | the in-between clip |
    the case itself. Nearest-neighbour upscaled, labelled."""
    rows: list[tuple[str, list[tuple[str, np.ndarray]]]] = []
    for i in range(min(len(v) for v in kept.values())):
        spec, clip = case(i, seed, frames=len(kept["i2v"][i]))
        rows.append((f'image to video: "{caption(spec)}"',
                     [("input image", clip[:1]), ("SparseCtrl", kept["i2v"][i]), ("text only", kept["text_only"][i])]))
        rows.append(("first + last keyframes", [("first", clip[:1]), ("last", clip[-1:]),
                                                 ("in-between", kept["first_last"][i]), ("rendered case", clip)]))
    return labelled_gif(path, rows, len(kept["i2v"][0]), 32 * scale, 6, 28, 13, fps, colours=64)


def table(result: dict) -> str:
    """Markdown table of the arms, then the targets."""
    lines = ["| arm | n | frame 0 placed | last frame placed | both | direction | colour | median dist 0 | s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for arm, s in result["arms"].items():
        lines.append(f"| {arm} | {s['n']} | {s['first_placed']:.0%} | {s['last_placed']:.0%} | "
                     f"{s['both_placed']:.0%} | {s['direction']:.0%} | {s['colour']:.0%} | "
                     f"{s['median_first_dist']:.3f} | {s['seconds']:.0f} |")
    if "skipped" in result:
        lines += ["", f"encoder arms {result['skipped']}"]
    for k, t in result.get("targets", {}).items():
        lines.append(f"\n{k}: {t['measured']:.0%} (target {t['target']:.0%}) {'met' if t['met'] else 'MISSED'}")
    return "\n".join(lines)


def build_parser(description: str) -> argparse.ArgumentParser:
    """The evaluation's options (shared by this module's CLI and ``bench/shapes_images.py``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--n", type=int, default=32, help="cases per arm (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first case (case i uses seed + i)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the registered 25)")
    p.add_argument("--arm", action="append", choices=ARMS, default=None, help="an arm (repeatable; default all)")
    p.add_argument("--encoder", default=ENCODER, help=f"a SparseCtrl file or registered name (default {ENCODER})")
    p.add_argument("--gif", default=None, help="also write the demo GIF here")
    return p


def run_parsed(a: argparse.Namespace, on_arm: Callable[[dict], None] | None = None) -> dict:
    """:func:`eval_images` with parsed :func:`build_parser` options, progress on stderr."""
    return eval_images(a.n, a.seed, a.steps, tuple(a.arm or ARMS), a.encoder, a.gif,
                       say=lambda m: print(m, file=sys.stderr, flush=True), on_arm=on_arm)


def main(argv: list[str] | None = None) -> int:
    return eval_main(argv, __doc__.split("\n\n")[0], build_parser, run_parsed, table)


if __name__ == "__main__":
    sys.exit(main())
