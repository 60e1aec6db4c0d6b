"""``motion-adapters eval toy``: generate shapes-world clips on held-out combos with the embedded models and
score them with :mod:`motion_adapters.shapes.evaluate` (the issue #4 targets).

Arms (each ``n`` clips, prompts cycling over the held-out combos of the motions it tests, fixed seeds):
base with / without the motion module (``motion_strength`` 0 = exactly per-frame SD), both personalised
checkpoints (their look expected), the zoom MotionLoRA at weights 1 and 0, and the spatial finetune.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from motion_adapters.clips.eval_cli import no_nan
from motion_adapters.clips.export import write_clip
from motion_adapters.inference.generator import VideoGenerator
from motion_adapters.shapes.evaluate import evaluate_clip, summarize
from motion_adapters.shapes.models import ENV_DIR
from motion_adapters.shapes.world import DIRECTIONS, Spec, caption, heldout_combos

TARGETS = (
    # (description, arm, check on the arms' summaries)
    ("direction >= 90 % with the motion module", "base+motion", lambda s: s["base+motion"]["direction"]["acc"] >= 0.90),
    ("direction <= 35 % without it", "base, no motion",
     lambda s: s["base, no motion"]["direction"]["acc"] <= 0.35),
    ("colour >= 90 %", "base+motion", lambda s: s["base+motion"]["colour"]["acc"] >= 0.90),
    ("navy: look >= 90 %, direction >= 85 %", "navy+motion",
     lambda s: s["navy+motion"]["look"]["acc"] >= 0.90 and s["navy+motion"]["direction"]["acc"] >= 0.85),
    ("paper: look >= 90 %, direction >= 85 %", "paper+motion",
     lambda s: s["paper+motion"]["look"]["acc"] >= 0.90 and s["paper+motion"]["direction"]["acc"] >= 0.85),
    ("zoom LoRA: zoom in >= 80 % at weight 1", "zoom-lora@1", lambda s: _zoom(s["zoom-lora@1"]) >= 0.80),
    ("zoom LoRA: zoom in <= 10 % at weight 0", "zoom-lora@0", lambda s: _zoom(s["zoom-lora@0"]) <= 0.10),
    ("hq: quality up, direction down <= 5 points", "hq+motion",
     lambda s: s["hq+motion"]["quality"] > s["base+motion"]["quality"]
     and s["base+motion"]["direction"]["acc"] - s["hq+motion"]["direction"]["acc"] <= 0.05),
)


def _zoom(summary: dict) -> float:
    return summary["predicted"].get("zoom in", 0) / max(summary["n"], 1)


def prompts_for(motions: tuple[str, ...], n: int) -> list[Spec]:
    """``n`` specs cycling over the held-out combos of ``motions``."""
    combos = heldout_combos(motions)
    return [Spec(*combos[i % len(combos)]) for i in range(n)]


@contextmanager
def toy_models_dir(folder: str | Path | None):
    """Point the registry at ``folder`` for the duration (``None``: leave it)."""

    old = os.environ.get(ENV_DIR)
    if folder is not None:
        os.environ[ENV_DIR] = str(folder)
    try:
        yield
    finally:
        if folder is not None:
            if old is None:
                os.environ.pop(ENV_DIR, None)
            else:
                os.environ[ENV_DIR] = old


def run_arm(gen, specs: list[Spec], seed: int, look: str | None = None, hq: bool | None = None,
            motion_strength: float = 1.0, steps: int | None = None, save: Path | None = None) -> list[dict]:
    out = []
    for i, spec in enumerate(specs):
        res = gen.generate(caption(spec), seed=seed + i, motion_strength=motion_strength, num_inference_steps=steps)
        frames = (np.clip(res.frames, 0, 1) * 255).round().astype(np.uint8)
        r = evaluate_clip(frames, spec, look=look, hq=hq)
        r.update(prompt=caption(spec), seed=seed + i)
        out.append(r)
        if save is not None:

            write_clip(res.frames, save / f"{i:03d}.gif", fps=8, recipe=res.recipe)
    return out


def eval_toy(n: int = 64, steps: int | None = None, seed: int = 0, models_dir: str | Path | None = None,
             device: str | None = None, save_clips: str | Path | None = None,
             progress: Callable[[str], None] | None = None) -> dict:
    """Every arm's summary, the per-clip results and the targets (met or not)."""

    say = progress or (lambda _m: None)
    directional = prompts_for(DIRECTIONS, n)
    zoom = prompts_for(("zoom in",), n)
    arms: dict[str, list[dict]] = {}

    def arm(name, specs, **kw):
        say(f"[eval toy] {name}: {len(specs)} clips")
        folder = None
        if save_clips is not None:
            folder = Path(save_clips) / name.replace(" ", "_").replace(",", "").replace("@", "_w")
            folder.mkdir(parents=True, exist_ok=True)
        arms[name] = run_arm(gen, specs, seed, steps=steps, save=folder, **kw)

    with toy_models_dir(models_dir):
        gen = VideoGenerator(base="shapes-base", motion="shapes-motion", device=device)
        arm("base+motion", directional, look="light", hq=False)
        arm("base, no motion", directional, look="light", hq=False, motion_strength=0.0)
        gen.load_base("shapes-navy")
        arm("navy+motion", directional, look="navy", hq=False)
        gen.load_base("shapes-paper")
        arm("paper+motion", directional, look="paper", hq=False)
        gen.load_base("shapes-base")
        gen.set_loras({"shapes-zoom-lora": 1.0})
        arm("zoom-lora@1", zoom, look="light", hq=False)
        gen.set_loras({"shapes-zoom-lora": 0.0})
        arm("zoom-lora@0", zoom, look="light", hq=False)
        gen.set_loras(None)
        gen.load_base("shapes-hq")
        arm("hq+motion", directional, look="light", hq=True)
    summaries = {k: summarize(v) for k, v in arms.items()}
    targets = [{"target": d, "arm": a, "met": bool(check(summaries))} for d, a, check in TARGETS]
    return {"n": n, "steps": steps, "seed": seed, "arms": summaries, "targets": targets,
            "per_clip": {k: [{kk: vv for kk, vv in r.items() if kk not in ("area", "centroids")} for r in v]
                         for k, v in arms.items()}}


def _pct(rate: dict) -> str:
    return "-" if rate["n"] == 0 else f"{100 * rate['acc']:.0f} %"


def table(result: dict) -> str:
    """Markdown table of the arms, then the targets."""
    lines = ["| arm | clips | colour | direction | motion as prompted | look | zoom in | quality | jump px/frame |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in result["arms"].items():
        lines.append(f"| {name} | {s['n']} | {_pct(s['colour'])} | {_pct(s['direction'])} | {_pct(s['motion'])} | "
                     f"{_pct(s['look'])} | {100 * _zoom(s):.0f} % | {s['quality']:.2f} | {s['centroid_jump']:.2f} |")
    lines += ["", "| target | met |", "|---|---|"]
    lines += [f"| {t['target']} | {'yes' if t['met'] else 'NO'} |" for t in result["targets"]]
    return "\n".join(lines)


def write_json(result: dict, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(no_nan(result), indent=2, default=str))
    return p
