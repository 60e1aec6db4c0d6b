"""``motion-adapters eval CLIPS...``: video metrics for clips and runs (folders of clips), JSON and a table."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from motion_adapters.clips.clip_metrics import LocalCLIP
from motion_adapters.clips.export import read_frames, read_recipe
from motion_adapters.clips.metrics import METRICS, evaluate_frames, summarize
from motion_adapters.clips.video import open_video
from motion_adapters.errors import MotionAdapterError

CLIP_SUFFIXES = (".gif", ".mp4", ".webm", ".webp", ".mov", ".mkv", ".avi", ".m4v")
TABLE_COLUMNS = [("temporal_flickering", "flicker score ↑"), ("flicker_mae", "flicker MAE ↓"),
                 ("motion_magnitude", "motion"), ("coherent_motion", "coherent motion"),
                 ("flow_consistency", "flow consistency ↑"), ("dynamic_degree", "dynamic degree"),
                 ("frame_ssim", "frame SSIM ↑"), ("clip_score", "CLIP score ↑"),
                 ("clip_frame_consistency", "CLIP frame cons. ↑")]
EXAMPLES = """examples:
  motion-adapters eval out/corgi.mp4                                   # one clip
  motion-adapters eval runs/with_mm/ runs/without_mm/ --json cmp.json  # compare two runs (folders of clips)
  motion-adapters eval data/clips/                                     # a curated dataset (metadata.csv)
  motion-adapters eval runs/a/ --clip-model ~/models/clip-vit-large-patch14   # + CLIP scores (local weights)
"""


@dataclass(frozen=True)
class EvalSuite:
    """A named evaluation (``motion-adapters eval NAME``) that another package plugs into ``eval``."""

    add_arguments: Callable[[argparse._ArgumentGroup], None]  # its options, in a group of their own
    run: Callable[[argparse.Namespace], int]
    example: str = ""                                          # one line for the examples in --help


def add_eval_parser(sub, suites: Mapping[str, EvalSuite] | None = None) -> None:
    """Register ``eval`` on the main parser's subparsers, with the named ``suites`` (e.g. ``eval toy``)."""
    p = sub.add_parser(
        "eval", help="video metrics: flicker, motion, dynamic degree, consistency, CLIP (local weights)",
        epilog=EXAMPLES + "".join(f"  {s.example}\n" for s in (suites or {}).values() if s.example),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score clips without internet: VBench temporal flickering, Farneback motion magnitude and "
        "dynamic degree, consecutive-frame SSIM/correlation; CLIP text-video score and CLIP frame consistency "
        "only with --clip-model pointing at local weights. Each argument is a clip or a run (a folder of clips, "
        "or a dataset folder with metadata.csv); several runs print a comparison table.")
    p.add_argument("clips", nargs="+", metavar="CLIP",
                   help="clip files (.gif .mp4 .webm .webp .mov .mkv), PNG-frame folders, folders of clips, or "
                   "dataset folders with metadata.csv")
    p.add_argument("--json", metavar="OUT", help="write every clip's and run's metrics as JSON ('-' for stdout)")
    p.add_argument("--clip-model", metavar="DIR", help="local CLIPModel folder (never downloaded) for clip_score and "
                   "clip_frame_consistency")
    p.add_argument("--prompt", metavar="TEXT", help="prompt for clip_score (default: the prompt in each clip's "
                   "recipe, or the dataset's text column)")
    p.add_argument("--fps", type=float, help="frame rate when a clip does not tell (default: its recipe or file, "
                   "else 8); sets the dynamic-degree frame step round(fps/8)")
    p.add_argument("--per-clip", action="store_true", help="also print one table row per clip")
    p.add_argument("--device", default="cpu", help="torch device for --clip-model and the suites (default cpu)")
    suites = dict(suites or {})
    for name, suite in suites.items():
        suite.add_arguments(p.add_argument_group(f"eval {name}"))
    p.set_defaults(func=cmd_eval, eval_suites={name: suite.run for name, suite in suites.items()})


# ---------------------------------------------------------------------------------------------- inputs

def _is_png_folder(p: Path) -> bool:
    return p.is_dir() and any(p.glob("*.png")) and not any(q.suffix.lower() in CLIP_SUFFIXES for q in p.iterdir())


def expand(arg: str) -> tuple[str, list[tuple[Path, str | None]]]:
    """A run name and its clips ``(path, prompt or None)`` for one CLI argument."""
    p = Path(arg)
    if not p.exists():
        raise MotionAdapterError(f"CLIP {arg}: expected a clip file or folder, found nothing at that path")
    if p.is_file():
        if p.suffix.lower() not in CLIP_SUFFIXES:
            raise MotionAdapterError(f"CLIP {p}: expected one of {', '.join(CLIP_SUFFIXES)}, found {p.suffix!r}")
        return p.name, [(p, None)]
    if (p / "metadata.csv").is_file():
        with open(p / "metadata.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if rows and "file_name" not in rows[0]:
            raise MotionAdapterError(f"{p / 'metadata.csv'}: expected a file_name column, found {list(rows[0])}")
        return p.name or str(p), [(p / r["file_name"], r.get("text") or None) for r in rows]
    if _is_png_folder(p):
        return p.name, [(p, None)]
    clips = sorted(q for q in p.iterdir() if not q.name.startswith(".")
                   and ((q.is_file() and q.suffix.lower() in CLIP_SUFFIXES) or _is_png_folder(q)))
    if not clips:
        raise MotionAdapterError(f"CLIP {p}: expected clips or PNG frames in the folder, found none")
    return p.name, [(q, None) for q in clips]


def load(path: Path) -> np.ndarray:
    """uint8 (F, H, W, 3) frames of a clip file or PNG folder."""

    try:
        if path.is_dir() or path.suffix.lower() in (".gif", ".webp", ".mp4", ".webm"):
            frames = read_frames(path)
        else:

            frames = np.stack(list(open_video(path).frames))
    except MotionAdapterError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure names the file
        raise MotionAdapterError(f"CLIP {path}: expected a readable clip, found {type(e).__name__}: "
                                 f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}") from None
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.shape[-1] == 4:
        frames = frames[..., :3]
    return np.ascontiguousarray(frames.astype(np.uint8))


def _recipe(path: Path) -> dict:
    try:
        return read_recipe(path)
    except Exception:  # noqa: BLE001 - clips without a recipe are fine
        return {}


def clip_fps(path: Path, recipe: dict, default: float | None) -> float:
    if default:
        return default
    if recipe.get("fps"):
        return float(recipe["fps"])
    try:
        if path.suffix.lower() in (".gif", ".webp"):
            from PIL import Image

            d = Image.open(path).info.get("duration")
            return 1000.0 / d if d else 8.0
        if path.is_file():

            s = open_video(path)
            s.frames.close()
            return s.fps
    except Exception:  # noqa: BLE001 - fall back to the default below
        pass
    return 8.0


def frame_prompts(prompt, n: int) -> list[str] | None:
    """One prompt per frame from a recipe prompt (text, or a {frame: text} travel schedule)."""
    if not prompt:
        return None
    if isinstance(prompt, str):
        return [prompt]
    keys = sorted((int(k), v) for k, v in prompt.items())
    out, j = [], 0
    for t in range(n):
        while j + 1 < len(keys) and keys[j + 1][0] <= t:
            j += 1
        out.append(keys[j][1])
    return out


# ---------------------------------------------------------------------------------------------- run

def evaluate_paths(args_clips: list[str], clip_model: str | None = None, prompt: str | None = None,
                   fps: float | None = None, device: str = "cpu") -> dict:
    """Metrics of every clip and every run (one run per argument)."""
    clip = None
    if clip_model:

        clip = LocalCLIP(clip_model, device)
    runs = []
    names: dict[str, int] = {}
    for arg in args_clips:
        name, items = expand(arg)
        names[name] = names.get(name, 0) + 1
        if names[name] > 1:
            name = f"{name} ({names[name]})"
        results = []
        for path, text in items:
            frames = load(path)
            recipe = _recipe(path)
            r = dict(path=str(path), **evaluate_frames(frames, clip_fps(path, recipe, fps)))
            if clip is not None:
                prompts = frame_prompts(prompt or text or recipe.get("prompt"), len(frames))
                r.update(clip.scores(frames, prompts))
                if prompts:
                    r["prompt"] = prompts[0] if len(set(prompts)) == 1 else "; ".join(dict.fromkeys(prompts))
            results.append(r)
        runs.append(dict(name=name, path=arg, clips=len(results), metrics=summarize(results), per_clip=results))
    return dict(metrics={k: v[1] for k, v in METRICS.items()}, runs=runs)


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"


def table(rows: list[tuple[str, int, dict]], label: str = "run") -> str:
    """Markdown table: one row per (name, clip count, metrics)."""
    cols = [(k, t) for k, t in TABLE_COLUMNS if any(k in m for _, _, m in rows)]
    lines = [f"| {label} | clips | " + " | ".join(t for _, t in cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    for name, n, m in rows:
        lines.append(f"| {name} | {n} | " + " | ".join(_cell(m.get(k)) for k, _ in cols) + " |")
    return "\n".join(lines)


def no_nan(x):
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: no_nan(v) for k, v in x.items()}
    if isinstance(x, list):
        return [no_nan(v) for v in x]
    return x


def cmd_eval(args) -> int:
    suite = getattr(args, "eval_suites", {}).get(args.clips[0])
    if suite is not None and not Path(args.clips[0]).exists():
        return suite(args)
    res = no_nan(evaluate_paths(args.clips, args.clip_model, args.prompt, args.fps, args.device))
    if args.json == "-":
        print(json.dumps(res, indent=2))
        return 0
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2))
    print(table([(r["name"], r["clips"], r["metrics"]) for r in res["runs"]]))
    if args.per_clip:
        print()
        print(table([(f"{r['name']}/{Path(c['path']).name}", 1, dict(c, dynamic_degree=c.get("dynamic")))
                     for r in res["runs"] for c in r["per_clip"]], label="clip"))
    if args.json:
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
