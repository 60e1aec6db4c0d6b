"""From a folder of raw videos to a training dataset: cut detection, clip splitting, scores, filters, report.

Three stages, each resumable:

1. **analyse** every video (in parallel): decode once at a short side of 64 px, find cuts
   (:mod:`motion_adapters.clips.scenes`), split into clips, score each clip (SVD motion score with Farnebäck flow at
   ~2 fps on frames with a short side of ``flow_size`` px, brightness, contrast, registered extra scorers)
   and save a thumbnail strip. The result per video is cached in ``OUT/.curate/analysis/`` (atomic JSON,
   keyed by the file's path, size, mtime and the analysis settings), so a re-run skips finished files.
   Unreadable videos are reported and skipped.
2. **select** over all clips: minimum length, absolute bounds, relative (percentile) filters, captions.
3. **write** the kept clips (mp4, libx264 crf 16, or PNG frame folders), skipping clips already written
   with the same settings, then ``metadata.csv`` (the training engine's format), ``scores.csv`` (every
   clip, kept or dropped, with the reasons), ``report.json`` and ``report/`` (contact sheet + HTML).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from motion_adapters.clips.captions import caption_for, load_captions
from motion_adapters.clips.curate_report import write_report
from motion_adapters.clips.flow import motion_score, resize_short, sample_indices, to_gray
from motion_adapters.clips.scenes import CutParams, FrameFeatures, detect_cuts, slow_step_for, split
from motion_adapters.clips.scorers import ClipView, available, make_scorers
from motion_adapters.clips.video import VIDEO_SUFFIXES, Mp4Writer, VideoReadError, list_videos, open_video
from motion_adapters.errors import MotionAdapterError

log = logging.getLogger(__name__)
CACHE_DIR = ".curate"
ANALYSIS_VERSION = 1
THUMB_HEIGHT = 48
THUMBS_PER_CLIP = 4
BASE_COLUMNS = ["clip_id", "source", "start_frame", "end_frame", "frames", "fps", "start_s", "end_s",
                "width", "height"]


@dataclass(frozen=True)
class CurateConfig:
    """Every curate setting (the CLI flags map one to one)."""

    # analysis
    analysis_size: int = 64
    flow_size: int = 16
    flow_fps: float = 2.0
    cuts: CutParams = field(default_factory=CutParams)
    max_seconds: float = 0.0
    scores: tuple[str, ...] = ()
    # selection
    min_frames: int = 16
    min_seconds: float = 0.0
    drop_bottom: tuple[tuple[str, float], ...] = ()
    drop_top: tuple[tuple[str, float], ...] = ()
    min_values: tuple[tuple[str, float], ...] = ()
    max_values: tuple[tuple[str, float], ...] = ()
    captions: str | None = None
    caption_key_column: str | None = None
    caption_text_column: str | None = None
    default_caption: str = ""
    drop_uncaptioned: bool = False
    # output
    format: str = "mp4"
    crf: int = 16
    short_side: int = 0
    report_rows: int = 24

    def validate(self) -> None:
        if not 16 <= self.flow_size <= 64:
            raise MotionAdapterError(f"--flow-size: expected 16 to 64 px, found {self.flow_size}")
        if self.flow_size > self.analysis_size:
            raise MotionAdapterError(f"--flow-size {self.flow_size}: expected at most --analysis-size "
                                     f"{self.analysis_size}")
        if self.format not in ("mp4", "png"):
            raise MotionAdapterError(f"--format: expected mp4 or png, found {self.format!r}")
        if not 0 <= self.crf <= 51:
            raise MotionAdapterError(f"--crf: expected 0 to 51, found {self.crf}")
        if self.min_frames < 2:
            raise MotionAdapterError(f"--min-frames: expected at least 2, found {self.min_frames}")
        for flag, pairs in (("--drop-bottom", self.drop_bottom), ("--drop-top", self.drop_top)):
            for name, pct in pairs:
                if not 0 <= pct < 100:
                    raise MotionAdapterError(f"{flag} {name}={pct}: expected a percentage in [0, 100)")

    def analysis_key(self) -> str:
        keys = dict(v=ANALYSIS_VERSION, a=self.analysis_size, f=self.flow_size, r=self.flow_fps,
                    c=asdict(self.cuts), m=self.max_seconds, s=sorted(self.scores))
        return hashlib.sha1(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]

    def write_key(self) -> str:
        keys = dict(f=self.format, c=self.crf, s=self.short_side)
        return hashlib.sha1(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]

    def filter_names(self) -> set[str]:
        return {n for pairs in (self.drop_bottom, self.drop_top, self.min_values, self.max_values) for n, _ in pairs}


# ---------------------------------------------------------------------------------------------- helpers

def file_key(rel: str) -> str:
    """Stable, readable id of a source video: its slugged relative path (no suffix) + a short hash."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", str(Path(rel).with_suffix(""))).strip("-")[:60] or "video"
    return f"{slug}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}"


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_csv(path: Path, columns: list[str], rows: Iterable[dict]) -> None:
    """Atomic CSV write (stdlib csv, header first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in columns})
    os.replace(tmp, path)


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, list):
        return ";".join(map(str, v))
    return "" if v is None else v


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


# ---------------------------------------------------------------------------------------------- analyse

def _thumb_strip(frames: list[np.ndarray]) -> Image.Image:
    imgs = [Image.fromarray(f) for f in frames]
    imgs = [im.resize((max(1, round(im.width * THUMB_HEIGHT / im.height)), THUMB_HEIGHT), Image.BILINEAR)
            for im in imgs]
    strip = Image.new("RGB", (sum(im.width for im in imgs) + 2 * (len(imgs) - 1), THUMB_HEIGHT), (255, 255, 255))
    x = 0
    for im in imgs:
        strip.paste(im, (x, 0))
        x += im.width + 2
    return strip


def analyse_video(path: Path, rel: str, cfg: CurateConfig, out: Path) -> dict:
    """Cuts, clips and scores of one video; thumbnails go to ``out/report/thumbs``. Raises on unreadable files."""
    stream = open_video(path, cfg.analysis_size)
    fps = stream.fps
    feat = FrameFeatures(slow_step_for(fps))
    grid_step = max(1, round(fps / cfg.flow_fps))
    gray: list[np.ndarray] = []
    grid: dict[int, np.ndarray] = {}
    for i, frame in enumerate(stream.frames):
        feat.push(frame)
        gray.append(resize_short(to_gray(frame), cfg.flow_size))
        if i % grid_step == 0:
            grid[i] = frame
    n = len(feat)
    if n == 0:
        raise VideoReadError(f"{path}: expected video frames, found none")
    cuts = detect_cuts(feat, fps, cfg.cuts)
    luma, contrast = np.asarray(feat.luma), np.asarray(feat.contrast)
    max_len = round(cfg.max_seconds * fps) if cfg.max_seconds else 0
    scenes = split(n, cuts, luma < cfg.cuts.fade_threshold if cfg.cuts.fade_threshold > 0 else None, max_len)
    scorers = make_scorers(list(cfg.scores))
    key = file_key(rel)
    thumbs = out / "report" / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    grid_idx = np.array(sorted(grid))
    clips = []
    for k, (s, e) in enumerate(scenes):
        clip_id = f"{key}_{k:03d}"
        inside = [int(i) for i in grid_idx if s <= i < e] or [int(grid_idx[np.argmin(np.abs(grid_idx - s))])]
        view = ClipView(np.stack([grid[i] for i in inside]), luma[s:e], contrast[s:e], fps)
        row = dict(clip_id=clip_id, source=rel, start_frame=s, end_frame=e, frames=e - s, fps=fps,
                   start_s=s / fps, end_s=e / fps, width=stream.source_size[0], height=stream.source_size[1],
                   motion=motion_score([gray[i] for i in sample_indices(s, e, fps, cfg.flow_fps)]))
        row.update({name: float(fn(view)) for name, fn in scorers.items()})
        pick = np.unique(np.linspace(0, len(inside) - 1, THUMBS_PER_CLIP).round().astype(int))
        _thumb_strip([grid[inside[j]] for j in pick]).save(thumbs / f"{clip_id}.png")
        clips.append(row)
    return dict(source=rel, fps=fps, frames=n, width=stream.source_size[0], height=stream.source_size[1],
                cuts=cuts, clips=clips)


def _analysis_job(path: str, rel: str, cfg: CurateConfig, out: str) -> dict:
    """Worker: cached result, fresh analysis, or the error (never raises for a bad video)."""
    p, o = Path(path), Path(out)
    cache = o / CACHE_DIR / "analysis" / f"{file_key(rel)}.json"
    try:
        stamp = dict(_stamp(p), key=cfg.analysis_key(), source=rel)
        if cache.is_file():
            try:
                data = json.loads(cache.read_text())
                if data.get("stamp") == stamp:
                    return dict(ok=True, cached=True, source=rel, result=data["result"])
            except (OSError, json.JSONDecodeError, KeyError):
                pass  # a damaged cache entry is recomputed
        result = analyse_video(p, rel, cfg, o)
        atomic_write_text(cache, json.dumps(dict(stamp=stamp, result=result)))
        return dict(ok=True, cached=False, source=rel, result=result)
    except MotionAdapterError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure on one file is reported, the run goes on
        msg = (str(e).strip() or type(e).__name__).replace(str(p), rel)
        if rel not in msg:
            msg = f"{rel}: {type(e).__name__}: {msg}"
        return dict(ok=False, source=rel, error=msg.splitlines()[0][:500])


# ---------------------------------------------------------------------------------------------- select

def _drop_ranked(clips: list[dict], name: str, pct: float, bottom: bool) -> float | None:
    """Mark the ``pct`` % lowest (``bottom``) or highest clips by ``name``; NaN ranks as worst. Returns the cut."""
    n_drop = math.floor(pct / 100.0 * len(clips) + 1e-9)
    if n_drop <= 0:
        return None

    def rank(c: dict) -> tuple:
        v = c.get(name, float("nan"))
        bad = v is None or (isinstance(v, float) and math.isnan(v))
        return (0 if bad else 1, (v if bottom else -v) if not bad else 0.0, c["clip_id"])

    ordered = sorted(clips, key=rank)
    tag = f"{name}_{'bottom' if bottom else 'top'}_{pct:g}pct"
    for c in ordered[:n_drop]:
        c["reasons"].append(tag)
    return ordered[n_drop - 1].get(name)


def select(clips: list[dict], cfg: CurateConfig, captions: dict[str, str] | None) -> dict:
    """Decide ``kept``/``reasons`` for every clip and set ``text``. Percentile filters are computed
    independently of each other over the clips long enough to keep. Returns the thresholds used."""
    known = set(BASE_COLUMNS) | {"motion"} | (set(clips[0]) if clips else set())
    for name in cfg.filter_names():
        if clips and name not in known:
            raise MotionAdapterError(f"filter on {name!r}: expected a score in {sorted(known - set(BASE_COLUMNS))}, "
                                     "found none by that name (extra scorers need --score NAME)")
    thresholds: dict[str, float | None] = {}
    for c in clips:
        c["reasons"] = []
        need = max(cfg.min_frames, math.ceil(cfg.min_seconds * c["fps"] - 1e-9))
        if c["frames"] < need:
            c["reasons"].append(f"too_short(<{need})")
        cap = caption_for(captions, c["source"]) if captions else None
        c["text"] = cap if cap is not None else cfg.default_caption
        if captions is not None and cap is None and cfg.drop_uncaptioned:
            c["reasons"].append("no_caption")
        for name, lo in cfg.min_values:
            v = c.get(name)
            if v is None or (isinstance(v, float) and math.isnan(v)) or v < lo:
                c["reasons"].append(f"{name}<{lo:g}")
        for name, hi in cfg.max_values:
            v = c.get(name)
            if v is None or (isinstance(v, float) and math.isnan(v)) or v > hi:
                c["reasons"].append(f"{name}>{hi:g}")
    pool = [c for c in clips if not any(r.startswith("too_short") for r in c["reasons"])]
    for name, pct in cfg.drop_bottom:
        thresholds[f"{name}_bottom_{pct:g}pct"] = _drop_ranked(pool, name, pct, bottom=True)
    for name, pct in cfg.drop_top:
        thresholds[f"{name}_top_{pct:g}pct"] = _drop_ranked(pool, name, pct, bottom=False)
    for c in clips:
        c["kept"] = not c["reasons"]
    return thresholds


# ---------------------------------------------------------------------------------------------- write

def clip_file_name(clip_id: str, cfg: CurateConfig) -> str:
    return f"clips/{clip_id}.mp4" if cfg.format == "mp4" else f"clips/{clip_id}"


def _write_png_dir(frames: list[np.ndarray], dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp / f"{i:04d}.png")
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)


def _write_job(path: str, rel: str, clips: list[tuple[str, int, int, float]], cfg: CurateConfig, out: str) -> dict:
    """Worker: decode ``path`` once and write the given clips ``(clip_id, start, end, fps)``."""
    o = Path(out)
    marker = o / CACHE_DIR / "written" / f"{file_key(rel)}.json"
    done = {}
    if marker.is_file():
        try:
            done = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            done = {}
    wkey = cfg.write_key()
    todo = []
    for cid, s, e, fps in clips:
        dst = o / clip_file_name(cid, cfg)
        if dst.exists() and done.get(cid) == [s, e, wkey]:
            continue
        todo.append((cid, s, e, fps))
    if not todo:
        return dict(ok=True, source=rel, written=0, reused=len(clips))
    try:
        stream = open_video(path, cfg.short_side or None, even=cfg.format == "mp4")
        todo.sort(key=lambda t: t[1])
        j, writer, buf = 0, None, []
        for i, frame in enumerate(stream.frames):
            if j >= len(todo):
                break
            cid, s, e, fps = todo[j]
            if i < s:
                continue
            if cfg.format == "mp4":
                if writer is None:
                    writer = Mp4Writer(o / clip_file_name(cid, cfg), fps, cfg.crf)
                writer.write(frame)
            else:
                buf.append(frame.copy())
            if i == e - 1:
                if writer is not None:
                    writer.close()
                    writer = None
                else:
                    _write_png_dir(buf, o / clip_file_name(cid, cfg))
                    buf = []
                done[cid] = [s, e, wkey]
                atomic_write_text(marker, json.dumps(done))
                j += 1
        if writer is not None:
            writer.abort()
        if j < len(todo):
            raise VideoReadError(f"{rel}: expected frames up to {todo[j][2]} for clip {todo[j][0]}, "
                                 "found the video shorter on the second decode")
    except Exception as e:  # noqa: BLE001 - reported per file, the run goes on
        return dict(ok=False, source=rel, error=(str(e).strip() or type(e).__name__).splitlines()[0][:500],
                    written=0, reused=len(clips) - len(todo))
    return dict(ok=True, source=rel, written=len(todo), reused=len(clips) - len(todo))


# ---------------------------------------------------------------------------------------------- run

def _run(jobs: list[tuple], fn: Callable, workers: int, desc: str, progress: bool) -> list[dict]:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit="video", disable=not progress, leave=False)
    out: list[dict] = []
    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                out.append(fn(*job))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as ex:
                futures = [ex.submit(fn, *job) for job in jobs]
                for fut in as_completed(futures):
                    out.append(fut.result())
                    bar.update()
    finally:
        bar.close()
    return out


def curate(videos_dir: str | Path, out_dir: str | Path, cfg: CurateConfig = CurateConfig(), workers: int = 1,
           progress: bool = False) -> dict:
    """Curate ``videos_dir`` into the dataset folder ``out_dir``; returns the run summary (also in report.json)."""

    cfg.validate()
    src, out = Path(videos_dir), Path(out_dir)
    if not src.is_dir():
        raise MotionAdapterError(f"VIDEOS_DIR {src}: expected a folder of videos, found "
                                 f"{'a file' if src.exists() else 'nothing'}")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise MotionAdapterError(f"--out {out}: expected a folder outside VIDEOS_DIR {src}, found it inside")
    unknown = [n for n in cfg.scores if n not in available()]
    if unknown:
        raise MotionAdapterError(f"--score {unknown[0]}: expected one of {sorted(available())}, found no such scorer")
    captions = load_captions(cfg.captions, cfg.caption_key_column, cfg.caption_text_column) if cfg.captions else None
    videos = list_videos(src)
    if not videos:
        raise MotionAdapterError(f"VIDEOS_DIR {src}: expected video files ({', '.join(_suffixes())}), found none")
    out.mkdir(parents=True, exist_ok=True)
    rels = {v: v.relative_to(src).as_posix() for v in videos}

    results = _run([(str(v), rels[v], cfg, str(out)) for v in videos], _analysis_job, workers, "analyse", progress)
    by_source = {r["source"]: r for r in results}
    errors = [dict(source=r["source"], stage="analyse", error=r["error"]) for r in results if not r["ok"]]
    clips = [c for v in videos if by_source[rels[v]]["ok"] for c in by_source[rels[v]]["result"]["clips"]]
    thresholds = select(clips, cfg, captions)

    kept_by_file: dict[str, list] = {}
    for c in clips:
        if c["kept"]:
            kept_by_file.setdefault(c["source"], []).append((c["clip_id"], c["start_frame"], c["end_frame"], c["fps"]))
    jobs = [(str(v), rels[v], kept_by_file[rels[v]], cfg, str(out)) for v in videos if rels[v] in kept_by_file]
    written = _run(jobs, _write_job, workers, "write", progress)
    failed = {w["source"] for w in written if not w["ok"]}
    errors += [dict(source=w["source"], stage="write", error=w["error"]) for w in written if not w["ok"]]
    for c in clips:
        if c["kept"] and c["source"] in failed:
            c["kept"] = False
            c["reasons"].append("write_failed")
        c["file_name"] = clip_file_name(c["clip_id"], cfg) if c["kept"] else ""
    _prune(out, {c["file_name"] for c in clips if c["kept"]})

    score_names = [k for k in (clips[0] if clips else {}) if k not in BASE_COLUMNS and k not in
                   ("text", "reasons", "kept", "file_name")]
    kept = [c for c in clips if c["kept"]]
    write_csv(out / "metadata.csv", ["file_name", "text", *BASE_COLUMNS[1:], *score_names], kept)
    write_csv(out / "scores.csv", [*BASE_COLUMNS, *score_names, "kept", "reasons", "file_name", "text"], clips)
    summary = dict(
        videos_dir=str(src), out=str(out), videos=len(videos),
        analysed=sum(1 for r in results if r["ok"] and not r["cached"]),
        cached=sum(1 for r in results if r["ok"] and r["cached"]),
        unreadable=len([e for e in errors if e["stage"] == "analyse"]), errors=errors,
        clips=len(clips), kept=len(kept), dropped=len(clips) - len(kept),
        written=sum(w.get("written", 0) for w in written), reused=sum(w.get("reused", 0) for w in written),
        thresholds=thresholds, uncaptioned=sum(1 for c in clips if captions is not None
                                               and caption_for(captions, c["source"]) is None),
        config=_config_dict(cfg))
    atomic_write_text(out / "report.json", json.dumps(summary, indent=2, default=str))
    write_report(out, clips, summary, cfg.report_rows)
    return summary


def _config_dict(cfg: CurateConfig) -> dict:
    d = asdict(cfg)
    d["cuts"] = asdict(cfg.cuts)
    return d


def _prune(out: Path, keep: set[str]) -> None:
    """Remove clips left from earlier runs that this run no longer keeps (only inside ``out/clips``)."""
    clips_dir = out / "clips"
    if not clips_dir.is_dir():
        return
    for p in clips_dir.iterdir():
        if p.name.startswith("."):
            continue
        if f"clips/{p.name}" not in keep:
            log.info("removing %s (not kept by this run)", p)
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def _suffixes() -> tuple[str, ...]:
    return VIDEO_SUFFIXES
