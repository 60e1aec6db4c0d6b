"""Video to video and ControlNets measured in the shapes world (issue #19).

**V2V arms.** Input clips are rendered in the base look along paths no training clip has (training clips move
in straight lines, :func:`~motion_adapters.shapes.data.clip_geometry`): a diagonal that turns back (``turn``),
three quarters of a circle (``arc``) and a zig-zag (``zigzag``), each mirrored / reversed by the clip's seed,
over the 12 shape × colour pairs of the held-out combos. Each is generated with the paper checkpoint as base
(and the motion module) at a strength; the output's object centroids (the evaluator's mask) are correlated with
the drawn path per axis (Pearson r), and its look is classified (paper expected).

**ControlNet arm.** A silhouette video of an object moving left (``clips.controls.silhouette`` of a rendered
clip) steers a text-to-video call prompted "… moving right" on ``shapes-base`` + ``shapes-motion``; the
evaluator's direction of the output says whether the clip follows the control (left) or the prompt (right),
with the ControlNet at scale 1 and without it. It runs when ``shapes-silhouette-controlnet`` is registered and
available, or with a live ``ControlNetModel`` given (e.g. :func:`stand_in_controlnet`, an untrained copy of the
base UNet whose zero convolutions add nothing: it proves the code path, not the claim).

``python -m motion_adapters.shapes.eval_controls --n 32 --json out.json --gif docs/v2v_controlnet.gif``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from diffusers import ControlNetModel, UNet2DConditionModel

from motion_adapters.clips.controls import silhouette
from motion_adapters.clips.export import to_uint8
from motion_adapters.inference.controlnets import ControlInput
from motion_adapters.inference.generator import VideoGenerator
from motion_adapters.registry import is_available, is_registered, model_path
from motion_adapters.shapes.data import background, render_clip, render_frame
from motion_adapters.shapes.eval_common import eval_main, labelled_gif
from motion_adapters.shapes.evaluate import evaluate_clip
from motion_adapters.shapes.world import HELDOUT, LOOKS, Spec, caption

CONTROLNET = "shapes-silhouette-controlnet"
V2V_BASE = "shapes-paper"
V2V_LOOK = "paper"
PATH_KINDS = ("turn", "arc", "zigzag")
R_MIN = 0.8            # a clip "follows" its input path on an axis at r >= R_MIN
STRENGTHS = (0.0, 0.6, 1.0)
#: (base, strength) of each V2V arm, in the order they run
ARMS: tuple[tuple[str, float], ...] = tuple((V2V_BASE, s) for s in STRENGTHS)
TARGETS = {0.6: 0.8, 0.0: 0.95}   # strength -> mean r (x and y) it must reach
CN_TARGET = 0.85                  # share of clips following the control with the ControlNet at scale 1
#: the shape x colour pairs of the held-out combos (each pair once)
PAIRS: tuple[tuple[str, str], ...] = tuple(dict.fromkeys((s, c) for s, c, _ in HELDOUT))
Say = Callable[[str], None]


# ------------------------------------------------------------------------------------------------ inputs

def _unit_path(kind: str, frames: int) -> np.ndarray:
    """(F, 2) points in [-1, 1]² along a path of ``kind`` (never a straight line)."""
    t = np.linspace(0.0, 1.0, frames)
    if kind == "turn":        # diagonal down-right, then turning up-right
        return np.stack([2 * t - 1, 1 - 2 * np.abs(2 * t - 1)], axis=1)
    if kind == "arc":         # three quarters of a circle
        a = 1.5 * np.pi * t
        return np.stack([np.cos(a), np.sin(a)], axis=1)
    if kind == "zigzag":      # rightwards, y a triangle wave with a period of 6 frames
        phase = (np.arange(frames) % 6) / 6.0
        return np.stack([2 * t - 1, 1 - 4 * np.abs(phase - 0.5)], axis=1)
    raise ValueError(f"unknown path kind {kind!r}; expected one of {PATH_KINDS}")


def path_clip(index: int, seed: int = 0, frames: int = 8, size: int = 32) -> tuple[Spec, str, np.ndarray, np.ndarray]:
    """(spec, path kind, centres (F, 2) px, uint8 clip (F, H, W, 3)) of V2V input ``index``: the path kind
    cycles with ``index``, the held-out shape × colour pair with ``index // 3``; the mirrors, time direction and
    object size come from ``(seed, index)``. Base look, no motion cue."""
    rng = np.random.default_rng([seed, index, 19])
    kind = PATH_KINDS[index % len(PATH_KINDS)]
    shape, colour = PAIRS[(index // len(PATH_KINDS)) % len(PAIRS)]
    spec = Spec(shape, colour)
    s = rng.uniform(10.0, 12.0) * size / 32
    p = _unit_path(kind, frames) * np.where(rng.random(2) < 0.5, -1.0, 1.0)
    if rng.random() < 0.5:
        p = p[::-1]
    lo, hi = 1 + 2 * s / 3, size - 1 - 2 * s / 3    # every shape's extent fits inside
    centres = lo + (p + 1) / 2 * (hi - lo)
    bg = background("light", int(rng.integers(2**31 - 1)), size)
    clip = np.stack([np.clip(np.rint(render_frame(spec, x, y, s, bg, cue=False)), 0, 255).astype(np.uint8)
                     for x, y in centres])
    return spec, kind, centres, clip


def left_control(index: int, seed: int = 0, frames: int = 8, size: int = 32) -> tuple[Spec, np.ndarray, np.ndarray]:
    """(the spec prompted "… moving right", the rendered clip moving left, its silhouette maps) of ControlNet
    clip ``index`` (held-out shape × colour pairs in turn)."""
    shape, colour = PAIRS[index % len(PAIRS)]
    clip = render_clip(Spec(shape, colour, "left"), seed=seed * 1000 + index, frames=frames, size=size, cue=False)
    return Spec(shape, colour, "right"), clip, silhouette(clip.astype(np.float32) / 255.0)


def stand_in_controlnet() -> ControlNetModel:
    """An untrained ControlNet copied from ``shapes-base``'s UNet (two stride-2 stages in the conditioning
    embedding for the 4x VAE); its zero convolutions leave every clip as without it."""
    unet = UNet2DConditionModel.from_pretrained(model_path("shapes-base") / "unet")
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 64))


# ----------------------------------------------------------------------------------------------- metrics

def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r over the finite pairs; 0 when fewer than 3 or either side is constant."""
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    den = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b / den) if ok.sum() >= 3 and den > 1e-9 else 0.0


def score_v2v(frames: np.ndarray, spec: Spec, centres: np.ndarray, look: str) -> dict:
    """Per-axis r of the output's centroids against the input path, and the evaluator's look/colour."""
    e = evaluate_clip(frames, spec, look=look)
    c = np.asarray(e["centroids"], dtype=np.float64)
    return {"r_x": pearson(c[:, 0], centres[:, 0]), "r_y": pearson(c[:, 1], centres[:, 1]),
            "found": e["found"], "look_pred": e["look_pred"], "look_ok": e["look_ok"],
            "colour_ok": e["colour_ok"], "bg_rgb": e["bg_rgb"], "bg_noise": e["noise"]}


def paper_vs_decoded(rows: list[dict], decoded_light: np.ndarray) -> float:
    """Share of clips whose background is nearer the paper colour than ``decoded_light`` (the light look after
    the shared VAE's round trip, which the evaluator's own look classes already call paper)."""
    paper = np.array(LOOKS["paper"], dtype=np.float64)
    bg = np.array([r["bg_rgb"] for r in rows], dtype=np.float64)
    return float((np.linalg.norm(bg - paper, axis=1) < np.linalg.norm(bg - decoded_light, axis=1)).mean())


def summarize_v2v(rows: list[dict], strength: float) -> dict:
    rx, ry = np.array([r["r_x"] for r in rows]), np.array([r["r_y"] for r in rows])
    out = {"n": len(rows), "strength": strength,
           "mean_r_x": float(rx.mean()), "mean_r_y": float(ry.mean()),
           "median_r_x": float(np.median(rx)), "median_r_y": float(np.median(ry)),
           "frac_r_x_ge_0.8": float((rx >= R_MIN).mean()), "frac_r_y_ge_0.8": float((ry >= R_MIN).mean()),
           "frac_both_ge_0.8": float(((rx >= R_MIN) & (ry >= R_MIN)).mean()),
           "look_rate": float(np.mean([r["look_ok"] for r in rows])),
           "looks": {k: sum(r["look_pred"] == k for r in rows) for k in sorted({r["look_pred"] for r in rows})},
           "colour_rate": float(np.mean([r["colour_ok"] for r in rows])),
           "mean_bg_rgb": np.mean([r["bg_rgb"] for r in rows], axis=0).round(1).tolist(),
           "mean_bg_noise": float(np.mean([r["bg_noise"] for r in rows])),
           "by_path": {k: {"n": len(v), "mean_r_x": float(np.mean([r["r_x"] for r in v])),
                           "mean_r_y": float(np.mean([r["r_y"] for r in v]))}
                       for k in PATH_KINDS if (v := [r for r in rows if r["path"] == k])}}
    if strength in TARGETS:
        out["target"] = f"mean r >= {TARGETS[strength]} for x and y"
        out["met"] = bool(out["mean_r_x"] >= TARGETS[strength] and out["mean_r_y"] >= TARGETS[strength])
    return out


# -------------------------------------------------------------------------------------------------- arms

def run_v2v(gen: VideoGenerator, n: int, strength: float, seed: int = 0, steps: int | None = None,
            keep: int = 0, say: Say | None = None, motion_strength: float = 1.0,
            controlnet: str | ControlNetModel | None = None) -> tuple[list[dict], list[np.ndarray]]:
    """``n`` V2V clips at ``strength`` on the generator's current base (with ``controlnet``: also following the
    input's silhouettes): per-clip rows and the first ``keep`` outputs (uint8)."""
    cns = [ControlInput(controlnet, preprocessor="silhouette")] if controlnet is not None else None
    rows, kept = [], []
    for i in range(n):
        spec, kind, centres, clip = path_clip(i, seed)
        t0 = time.perf_counter()
        res = gen.generate(caption(spec), video=clip, strength=strength, seed=seed + i, num_inference_steps=steps,
                           motion_strength=motion_strength, controlnets=cns)
        frames = to_uint8(res.frames)
        row = score_v2v(frames, spec, centres, V2V_LOOK)
        row.update(index=i, path=kind, prompt=caption(spec), seed=seed + i, seconds=time.perf_counter() - t0)
        rows.append(row)
        if i < keep:
            kept.append(frames)
        if say:
            say(f"[v2v {strength:g}] {i + 1}/{n} {kind} r_x={row['r_x']:.2f} r_y={row['r_y']:.2f} "
                f"look={row['look_pred']} {row['seconds']:.1f}s")
    return rows, kept


def controlnet_status(model: str | ControlNetModel | None = CONTROLNET) -> str | None:
    """``None`` when the ControlNet arm can run with ``model``, else why not (the skip message)."""
    if isinstance(model, ControlNetModel):
        return None
    if model is None or not is_registered(str(model)):
        return (f"skipped: ControlNet {model!r} is not registered (`motion-adapters models` lists the registered "
                "names); the silhouette ControlNet arm runs once it is")
    if not is_available(str(model)):
        return f"skipped: ControlNet {model!r} is registered but its weights are missing (build it first)"
    return None


def run_controlnet(gen: VideoGenerator, model: str | ControlNetModel | None, n: int, seed: int = 0,
                   scale: float = 1.0, steps: int | None = None, keep: int = 0,
                   say: Say | None = None) -> tuple[list[dict], list[np.ndarray]]:
    """``n`` clips prompted "… moving right" with a left-moving silhouette control (``model`` ``None``: the
    same calls without a ControlNet): per-clip rows (predicted direction, follows control / prompt) and the
    first ``keep`` outputs."""
    rows, kept = [], []
    for i in range(n):
        spec, _clip, maps = left_control(i, seed)
        cns = [ControlInput(model, frames=maps, scale=scale)] if model is not None else None
        t0 = time.perf_counter()
        res = gen.generate(caption(spec), seed=seed + i, num_inference_steps=steps, controlnets=cns)
        frames = to_uint8(res.frames)
        e = evaluate_clip(frames, spec)
        rows.append({"index": i, "prompt": caption(spec), "seed": seed + i, "direction": e["motion_pred"],
                     "follows_control": e["motion_pred"] == "left", "follows_prompt": e["motion_pred"] == "right",
                     "dx": e["dx"], "seconds": time.perf_counter() - t0})
        if i < keep:
            kept.append(frames)
        if say:
            say(f"[controlnet {'on' if model is not None else 'off'}] {i + 1}/{n} {e['motion_pred']}")
    return rows, kept


def summarize_cn(rows: list[dict]) -> dict:
    return {"n": len(rows), "follows_control": float(np.mean([r["follows_control"] for r in rows])),
            "follows_prompt": float(np.mean([r["follows_prompt"] for r in rows])),
            "directions": {k: sum(r["direction"] == k for r in rows)
                           for k in sorted({str(r["direction"]) for r in rows})}}


def eval_controls(n: int = 32, seed: int = 0, steps: int | None = None, arms: tuple[tuple[str, float], ...] = ARMS,
                  controlnet: str | ControlNetModel | None = CONTROLNET, cn_n: int | None = None,
                  gif: str | Path | None = None, say: Say | None = None,
                  on_arm: Callable[[dict], None] | None = None, motion_strength: float = 1.0) -> dict:
    """Every V2V arm (``n`` clips each; ``(base, strength)`` pairs) and the ControlNet arm (``cn_n`` clips per
    side, default ``n``; skipped with a message when ``controlnet`` cannot run); ``gif``: also write the
    side-by-side demo; ``on_arm``: called with the result so far after each arm (partial writes);
    ``motion_strength``: of the V2V arms (0: without the motion module's effect, a diagnostic)."""
    out: dict = {"n": n, "seed": seed, "steps": steps, "motion_strength": motion_strength, "v2v": {}, "per_clip": {}}
    keep = 3 if gif else 0
    gen = VideoGenerator(base=arms[0][0] if arms else V2V_BASE, motion="shapes-motion")
    v2v_frames = {}
    for base, s in arms:
        gen.load_base(base)
        t0 = time.perf_counter()
        rows, kept = run_v2v(gen, n, s, seed, steps, keep, say, motion_strength)
        name = f"{base}@{s:g}"
        out["v2v"][name] = dict(summarize_v2v(rows, s), base=base, seconds=time.perf_counter() - t0)
        out["per_clip"][f"v2v {name}"] = rows
        if base == V2V_BASE:
            v2v_frames[s] = kept
        _decoded_light(out)
        if on_arm:
            on_arm(out)
    cn_frames: dict[str, list[np.ndarray]] = {}
    why = controlnet_status(controlnet)
    if why is not None:
        out["controlnet"] = {"skipped": why}
        if say:
            say(why)
    else:
        gen.load_base(V2V_BASE)  # video to video at 0.6 that also follows the input's silhouettes
        t0 = time.perf_counter()
        rows, _ = run_v2v(gen, n, 0.6, seed, steps, 0, say, motion_strength, controlnet)
        out["v2v"][f"{V2V_BASE}@0.6+silhouette"] = dict(summarize_v2v(rows, 0.6), base=V2V_BASE,
                                                         controlnet="silhouette", seconds=time.perf_counter() - t0)
        out["per_clip"][f"v2v {V2V_BASE}@0.6+silhouette"] = rows
        _decoded_light(out)
        gen.load_base("shapes-base")
        gen.set_controlnets([])
        m = cn_n if cn_n is not None else n
        cn: dict = {"model": controlnet if isinstance(controlnet, str) else "live ControlNetModel (stand-in)",
                    "scale": 1.0}
        for label, model in (("with", controlnet), ("without", None)):
            t0 = time.perf_counter()
            rows, cn_frames[label] = run_controlnet(gen, model, m, seed, 1.0, steps, 1 if gif else 0, say)
            cn[label] = dict(summarize_cn(rows), seconds=time.perf_counter() - t0)
            out["per_clip"][f"controlnet_{label}"] = rows
        cn["target"] = f"follows control >= {CN_TARGET:.0%} with it; follows the prompt without it"
        cn["met"] = bool(cn["with"]["follows_control"] >= CN_TARGET
                         and cn["without"]["follows_prompt"] > cn["without"]["follows_control"])
        out["controlnet"] = cn
    if on_arm:
        on_arm(out)
    if gif:
        out["gif"] = str(demo_gif(gif, v2v_frames, cn_frames, seed))
    return out


def _decoded_light(out: dict) -> None:
    """With a strength-0 arm (the input through the VAE only): its mean background is the decoded light look,
    and every arm gets the share of clips nearer paper than that (``look_paper_vs_decoded_light``)."""
    zero = [k for k, v in out["v2v"].items() if v["strength"] == 0]
    if not zero:
        return
    ref = np.array(out["v2v"][zero[0]]["mean_bg_rgb"], dtype=np.float64)
    out["decoded_light_rgb"] = ref.tolist()
    for k, v in out["v2v"].items():
        v["look_paper_vs_decoded_light"] = paper_vs_decoded(out["per_clip"][f"v2v {k}"], ref)


# ------------------------------------------------------------------------------------------------- GIF

def demo_gif(path: str | Path, v2v: dict[float, list[np.ndarray]], cn: dict[str, list[np.ndarray]],
             seed: int = 0, scale: int = 4, fps: float = 4.0) -> Path:
    """Input | each strength's output for the kept V2V clips, then (when ``cn`` has clips) the control clip |
    its silhouette maps | with the ControlNet | without it; nearest-neighbour upscaled, labelled."""
    strengths = sorted(v2v)
    rows: list[tuple[str, list[tuple[str, np.ndarray]]]] = []
    for i in range(min(len(v) for v in v2v.values())):
        spec, kind, _c, clip = path_clip(i, seed)
        cells = [("input (base look)", clip)] + [(f"{V2V_BASE} @ {s:g}", v2v[s][i]) for s in strengths]
        rows.append((f'V2V, {kind} path: "{caption(spec)}"', cells))
    if cn.get("with"):
        spec, clip, maps = left_control(0, seed)
        rows.append((f'ControlNet: "{caption(spec)}"',
                     [("control clip (left)", clip), ("silhouette maps", to_uint8(maps)),
                      ("with ControlNet", cn["with"][0]), ("without", cn["without"][0])]))
    return labelled_gif(path, rows, len(rows[0][1][0][1]), 32 * scale, 8, 30, 14, fps)


def gif_only(path: str | Path, seed: int = 0, steps: int | None = None,
             controlnet: str | ControlNetModel | None = CONTROLNET, say: Say | None = None) -> Path:
    """The side-by-side GIF alone: the first 3 V2V clips at every strength of :data:`STRENGTHS` (the same clips
    and seeds as the evaluation's) and, when ``controlnet`` can run, the first ControlNet clip with and without."""
    gen = VideoGenerator(base=V2V_BASE, motion="shapes-motion")
    v2v = {s: run_v2v(gen, 3, s, seed, steps, 3, say)[1] for s in STRENGTHS}
    cn: dict[str, list[np.ndarray]] = {}
    if controlnet_status(controlnet) is None:
        gen.load_base("shapes-base")
        cn = {k: run_controlnet(gen, m, 1, seed, 1.0, steps, 1, say)[1] for k, m in (("with", controlnet),
                                                                                    ("without", None))}
    return demo_gif(path, v2v, cn, seed)


def table(result: dict) -> str:
    """Markdown tables of the V2V arms and the ControlNet arm."""
    lines = ["| arm | clips | mean r x | mean r y | r x >= 0.8 | r y >= 0.8 | both | look paper | "
             "paper vs decoded light | colour | s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in result["v2v"].items():
        pvd = s.get("look_paper_vs_decoded_light")
        lines.append(f"| {name} | {s['n']} | {s['mean_r_x']:.3f} | {s['mean_r_y']:.3f} | "
                     f"{s['frac_r_x_ge_0.8']:.0%} | {s['frac_r_y_ge_0.8']:.0%} | {s['frac_both_ge_0.8']:.0%} | "
                     f"{s['look_rate']:.0%} | {'-' if pvd is None else f'{pvd:.0%}'} | {s['colour_rate']:.0%} | "
                     f"{s['seconds']:.0f} |")
    cn = result.get("controlnet", {})
    if "skipped" in cn:
        lines += ["", f"ControlNet arm {cn['skipped']}"]
    elif cn:
        lines += ["", "| ControlNet | clips | follows control (left) | follows prompt (right) | s |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {k} | {cn[k]['n']} | {cn[k]['follows_control']:.0%} | {cn[k]['follows_prompt']:.0%} | "
                  f"{cn[k]['seconds']:.0f} |" for k in ("with", "without")]
    return "\n".join(lines)


def parse_arms(items: list[str] | None) -> tuple[tuple[str, float], ...]:
    """``["shapes-paper:0.6", …]`` as (base, strength) pairs; ``None``: :data:`ARMS`."""
    if not items:
        return ARMS
    return tuple((b, float(v)) for b, _, v in (it.rpartition(":") for it in items))


def build_parser(description: str) -> argparse.ArgumentParser:
    """The evaluation's options (shared by this module's CLI and ``bench/shapes_controls.py``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--n", type=int, default=32, help="clips per V2V arm (default 32)")
    p.add_argument("--cn-n", type=int, default=None, help="clips per ControlNet arm (default --n)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first clip (clip i uses seed + i)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the registered 25)")
    p.add_argument("--arm", action="append", default=None, metavar="BASE:STRENGTH",
                   help=f"a V2V arm (repeatable; default {V2V_BASE} at 0, 0.6 and 1)")
    p.add_argument("--motion-strength", type=float, default=1.0,
                   help="of the V2V arms (0: the motion module's residual off, a diagnostic)")
    p.add_argument("--stand-in", action="store_true", help="run the ControlNet arm with an untrained stand-in "
                   "(exercises the code path; its numbers say nothing about ControlNets)")
    p.add_argument("--gif", default=None, help="also write the side-by-side GIF here")
    return p


def run_parsed(a: argparse.Namespace, on_arm: Callable[[dict], None] | None = None) -> dict:
    """:func:`eval_controls` with parsed :func:`build_parser` options, progress on stderr."""
    return eval_controls(a.n, a.seed, a.steps, parse_arms(a.arm), stand_in_controlnet() if a.stand_in else CONTROLNET,
                         a.cn_n, a.gif, say=lambda m: print(m, file=sys.stderr, flush=True), on_arm=on_arm,
                         motion_strength=a.motion_strength)


def main(argv: list[str] | None = None) -> int:
    return eval_main(argv, __doc__.split("\n\n")[0], build_parser, run_parsed, table)


if __name__ == "__main__":
    sys.exit(main())
