"""``motion-adapters toy build``: every shapes-world model from scratch, with the training engine.

Stages, in order (each one's YAML under ``configs/toy/``; paths between stages are filled in here):

=========  ==============  ======================================================================
stage      task            what
=========  ==============  ======================================================================
data       (writer)        datasets of ``configs/toy/data.yaml`` (static motion cues included)
vae        vae             AutoencoderKL, 32×32 → 8×8×4
base       t2i             UNet + CLIP text encoder from scratch (EMA), shapes tokenizer
navy       t2i             DreamBooth-style personalised checkpoint (navy background), + LDM file
paper      t2i             the same on a paper texture
motion     motion          motion module against the frozen base
zoom_lora  motion_lora     "zooming in" MotionLoRA from 24 clips
hq         spatial_full    VideoCrafter2-style spatial finetune on hq images, + LDM file
controlnet controlnet      silhouette ControlNet on the base (frames of clips of every motion and look)
sparsectrl sparsectrl      RGB SparseCtrl encoder on the base + motion module (keyframes of clips)
export     (copy)          fp16 weights + ``manifest.json`` into the registry directory
=========  ==============  ======================================================================

A stage is skipped when its ``DONE.json`` exists; an interrupted stage resumes from its newest checkpoint.
A stage finds its inputs in the work folder; ``controlnet`` starts from the shipped ``shapes-base`` when the
work folder has no finished base, and writes its dataset when the data stage did not; ``sparsectrl`` likewise
starts from the shipped base and ``shapes-motion`` when the work folder has none. ``export`` keeps a model
already in OUT whose stage did not run in this work folder (``--stage controlnet --stage export`` adds the
ControlNet to the shipped models; ``--stage sparsectrl --stage export`` the SparseCtrl encoder).
``quick=True`` shrinks data and steps to a smoke test (seconds per stage; the weights are useless).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from motion_adapters.errors import MotionAdapterError
from motion_adapters.shapes.data import write_dataset
from motion_adapters.shapes.models import (
    DEFAULT_BASE,
    DEFAULT_MOTION,
    MANIFEST,
    MODELS,
    TOY_GENERATION,
    toy_dir,
)
from motion_adapters.shapes.tokenizer import write_shapes_tokenizer
from motion_adapters.training.config import load_config
from motion_adapters.training.model import to_fp16_file
from motion_adapters.training.trainer import train

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
STAGES = ("data", "vae", "base", "navy", "paper", "motion", "zoom_lora", "hq", "controlnet", "sparsectrl",
          "export")
#: planned minutes on 2 idle CPU cores: each stage's time in the last end-to-end build from scratch (seventh session,
#: 60.9 min with zoom_lora at 2,000 steps; at 1,000 steps that stage is half as long, so the build is about 55.5).
#: Seconds per step vary by day and by the minute on this machine: vae 0.22-0.27, base 0.18-0.21, navy 0.11-0.14,
#: paper 0.11-0.13, motion 0.21-0.25, zoom_lora 0.25-0.32, hq 0.2-0.32.
BUDGET_MIN = {"data": 0.3, "vae": 4.8, "base": 16.8, "navy": 3.9, "paper": 1.1, "motion": 21.3,
              "zoom_lora": 5.4, "hq": 1.9, "controlnet": 10.0, "sparsectrl": 15.0, "export": 0.1}
MAX_TOTAL_BYTES = 30_000_000
QUICK_RUN = {"run.max_steps": 1, "run.batch_size": 2, "run.checkpoint_every": 1000, "optim.warmup_steps": 0}
DONE = "DONE.json"
CONTROLNET_DATA = "controlnet_images"  # the dataset of data.yaml the controlnet stage trains on
SPARSECTRL_DATA = "sparsectrl_clips"  # the dataset of data.yaml the sparsectrl stage trains on


def default_out() -> Path:
    return toy_dir()


def _stage_values(stage: str, work: Path) -> tuple[str, dict]:
    """(YAML file, path values) of a training stage."""
    d = work / "data"
    base = str(work / "base" / "base")
    mm = str(work / "motion" / "motion_module.safetensors")
    table = {
        "vae": ("vae.yaml", {"data": {"path": str(d / "vae_images")}}),
        "base": ("base.yaml", {"data": {"path": str(d / "base_images")},
                               "model": {"vae": str(work / "vae" / "vae"), "tokenizer": str(work / "base" / "tokenizer")}}),
        "navy": ("navy.yaml", {"data": {"path": str(d / "navy_images")}, "model": {"base": base}}),
        "paper": ("personalize.yaml", {"data": {"path": str(d / "paper_images")}, "model": {"base": base}}),
        "motion": ("motion.yaml", {"data": {"path": str(d / "motion_clips")}, "model": {"base": base}}),
        "zoom_lora": ("zoom_lora.yaml", {"data": {"path": str(d / "zoom_clips")},
                                         "model": {"base": base, "motion_module": mm}}),
        "hq": ("hq.yaml", {"data": {"path": str(d / "hq_images")}, "model": {"base": base, "motion_module": mm}}),
        "controlnet": ("controlnet.yaml", {"data": {"path": str(d / CONTROLNET_DATA)},
                                           "model": {"base": str(base_of(work))}}),
        "sparsectrl": ("sparsectrl.yaml", {"data": {"path": str(d / SPARSECTRL_DATA)},
                                           "model": {"base": str(base_of(work)), "motion_module": str(motion_of(work))}}),
    }
    name, values = table[stage]
    values["run"] = {"output_dir": str(work / stage)}
    if stage != "vae":  # every diffusion stage encodes with the same trained VAE: cache its latents per stage
        values["data"]["latent_cache"] = str(work / stage / "latents")
    return name, values


def stage_config(stage: str, work: Path, quick: bool = False, progress: bool = True):
    """The validated :class:`~motion_adapters.training.config.TrainConfig` of a training stage."""

    name, values = _stage_values(stage, work)
    overrides = [f"{k}={v}" for k, v in QUICK_RUN.items()] if quick else []
    overrides.append(f"run.progress={str(progress).lower()}")
    return load_config(CONFIG_DIR / name, overrides=overrides, values=values)


def base_of(work: Path) -> Path:
    """The base the later stages train on: the work folder's when its stage finished, else the shipped one."""
    if (work / "base" / DONE).exists():
        return work / "base" / "base"
    return toy_dir() / MODELS[DEFAULT_BASE].file


def motion_of(work: Path) -> Path:
    """The motion module the sparsectrl stage copies and steers: the work folder's when its stage finished,
    else the shipped one."""
    if (work / "motion" / DONE).exists():
        return work / "motion" / "motion_module.safetensors"
    return toy_dir() / MODELS[DEFAULT_MOTION].file


def write_data(work: Path, quick: bool = False, names: list[str] | None = None) -> dict:
    """Write the datasets of ``data.yaml`` (or only ``names``) into ``work/data``; returns their sizes."""
    spec = yaml.safe_load((CONFIG_DIR / "data.yaml").read_text())["datasets"]
    counts = {}
    for name, kw in spec.items():
        if names is not None and name not in names:
            continue
        kw = dict(kw)
        quick_n = kw.pop("quick_n", 8)
        if quick:
            kw["n"] = min(kw["n"], quick_n)
        write_dataset(work / "data" / name, seed=hash_seed(name), **kw)
        counts[name] = kw["n"]
    return counts


def ensure_data(work: Path, name: str, quick: bool = False) -> None:
    """Write one dataset of ``data.yaml`` when the data stage did not (a stage run on its own)."""
    if not (work / "data" / name / "metadata.csv").exists():
        write_data(work, quick, [name])


def hash_seed(name: str) -> int:
    """A fixed per-dataset seed (stable across Python runs, unlike ``hash``)."""
    return sum((i + 1) * ord(c) for i, c in enumerate(name))


EXPORTS = {  # registered name -> file inside the work dir
    "shapes-base": "base/base",
    "shapes-navy": "navy/model.safetensors",
    "shapes-paper": "paper/model.safetensors",
    "shapes-hq": "hq/model.safetensors",
    "shapes-motion": "motion/motion_module.safetensors",
    "shapes-zoom-lora": "zoom_lora/motion_lora.safetensors",
    "shapes-silhouette-controlnet": "controlnet/controlnet.safetensors",
    "shapes-rgb-sparsectrl": "sparsectrl/sparsectrl.safetensors",
}


def export(work: Path, out: Path, summary: dict) -> dict:
    """Copy every model into ``out`` under its registered file name, in fp16, and write the manifest.

    A model whose stage did not run in ``work`` is kept when ``out`` already has it (with its manifest record);
    otherwise its absence is an error."""

    out.mkdir(parents=True, exist_ok=True)
    old = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).exists() else {}
    sizes, kept = {}, []
    for name, rel in EXPORTS.items():
        src, dst = work / rel, out / MODELS[name].file
        if not src.exists():
            if dst.exists() and not (work / rel.split("/")[0]).exists():
                kept.append(name)
                sizes[name] = _size(dst)
                continue
            raise MotionAdapterError(f"toy build export: {src} is missing (stage {rel.split('/')[0]} not finished)")
        tmp = dst.with_name(f".{dst.name}.tmp")
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        if src.is_dir():
            shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("training.json"))
            for f in tmp.rglob("*.safetensors"):
                to_fp16_file(f)
        else:
            shutil.copy2(src, tmp)
            to_fp16_file(tmp)
        if dst.exists():
            shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
        tmp.rename(dst)
        sizes[name] = _size(dst)
    total = sum(sizes.values())
    stages = dict(summary.get("stages", {}))
    if kept:  # the records of the stages that made the kept models, then this build's
        stages = {**{k: v for k, v in old.get("stages", {}).items() if k not in stages}, **stages}
        stages = {k: stages[k] for k in STAGES if k in stages}
    manifest = {"generation": dict(TOY_GENERATION),
                "models": {n: {"file": MODELS[n].file, "kind": MODELS[n].kind, "size_bytes": s}
                           for n, s in sizes.items()},
                "total_bytes": total, "quick": summary.get("quick", False), "stages": stages}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if total > MAX_TOTAL_BYTES and not summary.get("quick"):
        raise MotionAdapterError(f"toy build: the shipped weights total {total / 1e6:.1f} MB, more than the "
                                 f"{MAX_TOTAL_BYTES / 1e6:.0f} MB budget; shrink the models in shapes/configs/")
    return {"total_bytes": total, "sizes": sizes, "kept": kept}


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def build(out: str | Path | None = None, work: str | Path | None = None, quick: bool = False,
          stages: list[str] | None = None, force: bool = False, progress: bool = True,
          log: Callable[[str], None] = print) -> dict:
    """Run the build (all stages, or ``stages``); returns ``{stage: {"seconds", "skipped", ...}}``."""

    work = Path(work) if work is not None else Path("runs") / ("toy-build-quick" if quick else "toy-build")
    if out is None:  # a --quick build never overwrites the shipped weights unless told to
        out = work / "out" if quick else default_out()
    out = Path(out)
    todo = list(stages or STAGES)
    for s in todo:
        if s not in STAGES:
            raise MotionAdapterError(f"--stage {s}: expected one of {', '.join(STAGES)}")
    work.mkdir(parents=True, exist_ok=True)
    summary: dict = {"quick": quick, "work": str(work), "out": str(out), "stages": {}}
    from tqdm.auto import tqdm

    bar = tqdm(todo, desc="toy build", disable=not progress, dynamic_ncols=True)
    for stage in bar:
        bar.set_postfix(stage=stage)
        marker = work / stage / DONE
        if marker.exists() and not force and stage != "export":
            summary["stages"][stage] = {**json.loads(marker.read_text()), "skipped": True}
            log(f"[toy build] {stage}: done already (delete {marker} to redo)")
            continue
        if force and (work / stage / "latents").exists():
            shutil.rmtree(work / stage / "latents")  # the VAE may have changed
        t0 = time.perf_counter()
        info: dict = {}
        if stage == "data":
            info["datasets"] = write_data(work, quick)
        elif stage == "export":
            info.update(export(work, out, summary))
        else:
            if stage == "base":  # trained from scratch on the shapes vocabulary
                write_shapes_tokenizer(work / "base" / "tokenizer")
            if stage == "controlnet":
                ensure_data(work, CONTROLNET_DATA, quick)
                info["base"] = str(base_of(work))
            if stage == "sparsectrl":
                ensure_data(work, SPARSECTRL_DATA, quick)
                info.update(base=str(base_of(work)), motion_module=str(motion_of(work)))
            cfg = stage_config(stage, work, quick, progress)
            res = train(cfg, resume="latest")
            info.update(steps=res["steps"], final_loss=res["losses"][-1] if res["losses"] else None,
                        outputs=res["outputs"])
        info["seconds"] = round(time.perf_counter() - t0, 2)
        (work / stage).mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(info, indent=2, default=str))
        summary["stages"][stage] = {**info, "skipped": False}
        log(f"[toy build] {stage}: {info['seconds']:.1f}s (budget {BUDGET_MIN[stage]:g} min)")
    return summary


def format_summary(summary: dict) -> str:
    lines = ["| stage | status | seconds | budget (min) | final loss |", "|---|---|---:|---:|---:|"]
    for stage, info in summary["stages"].items():
        loss = info.get("final_loss")
        lines.append(f"| {stage} | {'skipped' if info.get('skipped') else 'ran'} | {info.get('seconds', 0):.1f} | "
                     f"{BUDGET_MIN[stage]:g} | {'' if loss is None else f'{loss:.4f}'} |")
    if "export" in summary["stages"]:
        lines.append(f"\nweights: {summary['stages']['export'].get('total_bytes', 0) / 1e6:.1f} MB in {summary['out']}")
    return "\n".join(lines)
