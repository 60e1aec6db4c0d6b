"""``motion-adapters curate``: the command-line front of :mod:`motion_adapters.clips.curate`."""

from __future__ import annotations

import argparse
import os

from motion_adapters.clips.curate import CurateConfig, curate
from motion_adapters.clips.scenes import CutParams

EXAMPLES = """examples:
  motion-adapters curate raw_videos/ --out data/clips                       # cuts + scores, keep everything long enough
  motion-adapters curate raw_videos/ --out data/clips --motion-pct 25 --dark-pct 5 --uniform-pct 5   # SVD-style
  motion-adapters curate webvid/ --out data/webvid --captions results_2M_val.csv   # WebVid videoid,name
  motion-adapters curate raw/ --out data/x --min-seconds 2 --max-seconds 10 --short-side 512 --workers 8
  motion-adapters curate raw/ --out data/x --min motion=0.5 --drop-top brightness=2

output (DATASET_DIR):
  metadata.csv   file_name,text + source, frame range, fps and scores of every kept clip (training format)
  scores.csv     every clip, kept or dropped: scores, kept, reasons
  clips/         the kept clips (mp4 or PNG frame folders)
  report/        contact_sheet.png and index.html (kept, dropped, unreadable)
  report.json    counts, thresholds used, unreadable files, settings
  .curate/       per-video caches; re-running the same command skips finished work
"""


def _pair(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SCORE=NUMBER (e.g. motion=25), found {text!r}") from None


def add_curate_parser(sub) -> None:
    """Register ``curate`` on the main parser's subparsers."""
    p = sub.add_parser(
        "curate", help="turn a folder of raw videos into a training dataset", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Find scene cuts, split videos into clips, score each clip (SVD optical-flow motion score, "
        "brightness, contrast), filter by absolute or relative thresholds, carry captions over from a CSV, and "
        "write the dataset in the training engine's format with a CSV of every score and a report of kept and "
        "dropped clips. Unreadable videos are reported and skipped; an interrupted run resumes.")
    p.add_argument("videos_dir", metavar="VIDEOS_DIR", help="folder searched recursively for videos "
                   "(.mp4 .mov .mkv .webm .avi .m4v .gif .mpg .mpeg .ts .flv .wmv)")
    p.add_argument("--out", required=True, metavar="DATASET_DIR", help="dataset folder to create or resume")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="videos processed in parallel (processes; default min(4, CPUs)); 1 = in this process")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    g = p.add_argument_group("clips")
    g.add_argument("--min-frames", type=int, default=16, help="drop clips shorter than this many frames (default 16, "
                   "AnimateDiff's clip length)")
    g.add_argument("--min-seconds", type=float, default=0.0, help="drop clips shorter than this (default 0: off)")
    g.add_argument("--max-seconds", type=float, default=0.0,
                   help="split scenes longer than this into consecutive clips (default 0: keep whole scenes)")

    g = p.add_argument_group("cut detection (a cascade; see README)")
    g.add_argument("--cut-threshold", type=float, default=27.0,
                   help="content detector: mean HSV difference of consecutive frames (0-255) that marks a cut "
                   "(default 27, PySceneDetect's)")
    g.add_argument("--adaptive-ratio", type=float, default=3.0,
                   help="adaptive detector: cut where the difference is this many times its neighbours' mean "
                   "(default 3; 0 disables)")
    g.add_argument("--adaptive-min", type=float, default=15.0,
                   help="adaptive detector: minimum HSV difference for such a cut (default 15)")
    g.add_argument("--slow-threshold", type=float, default=45.0,
                   help="dissolve detector: HSV difference between frames ~0.5 s apart (default 45; 0 disables)")
    g.add_argument("--fade-threshold", type=float, default=12.0,
                   help="frames with mean luma below this (0-255) are fade-to-black and left out; they split scenes "
                   "(default 12; 0 disables)")

    g = p.add_argument_group("scores")
    g.add_argument("--flow-size", type=int, default=16,
                   help="short side (px, 16-64) of the frames Farneback flow runs on (default 16, as in SVD)")
    g.add_argument("--flow-fps", type=float, default=2.0, help="frame rate the motion score samples at (default 2)")
    g.add_argument("--score", action="append", default=[], metavar="NAME",
                   help="also compute a registered extra scorer (plug-ins: see training/scorers.py); repeatable")

    g = p.add_argument_group("filters (relative ones are computed over all clips long enough to keep)")
    g.add_argument("--motion-pct", type=float, default=0.0, metavar="N",
                   help="drop the N%% of clips with the lowest motion score (SVD drops 25; default 0)")
    g.add_argument("--dark-pct", type=float, default=0.0, metavar="N",
                   help="drop the N%% darkest clips (mean luma; default 0)")
    g.add_argument("--uniform-pct", type=float, default=0.0, metavar="N",
                   help="drop the N%% most uniform clips (lowest luma contrast: blank frames, title cards; default 0)")
    g.add_argument("--drop-bottom", type=_pair, action="append", default=[], metavar="SCORE=PCT",
                   help="drop the PCT%% lowest clips by any score in scores.csv; repeatable")
    g.add_argument("--drop-top", type=_pair, action="append", default=[], metavar="SCORE=PCT",
                   help="drop the PCT%% highest clips by a score (e.g. a text-area scorer); repeatable")
    g.add_argument("--min", type=_pair, action="append", default=[], metavar="SCORE=VALUE", dest="min_values",
                   help="drop clips whose score is below VALUE (absolute); repeatable")
    g.add_argument("--max", type=_pair, action="append", default=[], metavar="SCORE=VALUE", dest="max_values",
                   help="drop clips whose score is above VALUE (absolute); repeatable")

    g = p.add_argument_group("captions")
    g.add_argument("--captions", metavar="CSV", help="captions per source video; columns found by name "
                   "(file_name/file/path/video/videoid/id and text/caption/name/prompt; WebVid videoid,name) and "
                   "matched by relative path, path without suffix, file name or stem")
    g.add_argument("--caption-key-column", metavar="COL", help="column of --captions naming the video")
    g.add_argument("--caption-text-column", metavar="COL", help="column of --captions holding the caption")
    g.add_argument("--default-caption", default="", metavar="TEXT",
                   help="caption of clips whose video has none (default: empty)")
    g.add_argument("--drop-uncaptioned", action="store_true", help="drop clips whose video has no caption")

    g = p.add_argument_group("output")
    g.add_argument("--format", choices=["mp4", "png"], default="mp4",
                   help="mp4: libx264 yuv420p at --crf (default); png: lossless frame folders (large)")
    g.add_argument("--crf", type=int, default=16, help="x264 quality for mp4 clips, 0-51, lower is better "
                   "(default 16: visually lossless)")
    g.add_argument("--short-side", type=int, default=0, metavar="PX",
                   help="resize written clips so their short side is PX (never upscales; default 0: native)")
    g.add_argument("--report-rows", type=int, default=24,
                   help="kept and dropped clips shown on the contact sheet each (default 24)")
    p.set_defaults(func=cmd_curate)


def cmd_curate(args) -> int:
    cfg = CurateConfig(
        flow_size=args.flow_size, flow_fps=args.flow_fps,
        cuts=CutParams(threshold=args.cut_threshold, adaptive_ratio=args.adaptive_ratio, adaptive_min=args.adaptive_min,
                       slow_threshold=args.slow_threshold, fade_threshold=args.fade_threshold),
        max_seconds=args.max_seconds, scores=tuple(args.score), min_frames=args.min_frames,
        min_seconds=args.min_seconds,
        drop_bottom=tuple([("motion", args.motion_pct)] * (args.motion_pct > 0)
                          + [("brightness", args.dark_pct)] * (args.dark_pct > 0)
                          + [("contrast", args.uniform_pct)] * (args.uniform_pct > 0) + args.drop_bottom),
        drop_top=tuple(args.drop_top), min_values=tuple(args.min_values), max_values=tuple(args.max_values),
        captions=args.captions, caption_key_column=args.caption_key_column,
        caption_text_column=args.caption_text_column, default_caption=args.default_caption,
        drop_uncaptioned=args.drop_uncaptioned, format=args.format, crf=args.crf, short_side=args.short_side,
        report_rows=args.report_rows)
    s = curate(args.videos_dir, args.out, cfg, workers=args.workers, progress=not args.no_progress)
    print(f"{s['videos']} videos ({s['analysed']} analysed, {s['cached']} cached, {s['unreadable']} unreadable): "
          f"{s['clips']} clips, {s['kept']} kept, {s['dropped']} dropped; {s['written']} written, "
          f"{s['reused']} already there")
    for k, v in s["thresholds"].items():
        print(f"  threshold {k}: {v}")
    for e in s["errors"]:
        print(f"  skipped {e['source']} ({e['stage']}): {e['error']}")
    print(f"dataset: {os.path.join(args.out, 'metadata.csv')}  report: {os.path.join(args.out, 'report', 'index.html')}")
    return 0
