"""The curate report: ``report/contact_sheet.png`` (a sample of kept and dropped clips) and ``report/index.html``
(every clip with its thumbnails, scores and reasons, plus the unreadable files)."""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROW_GAP = 6
LABEL_WIDTH = 420
MAX_STRIP_WIDTH = 420
LINE = 15


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _spread(clips: list[dict], n: int) -> list[dict]:
    """Up to ``n`` clips spread evenly over the motion range (lowest and highest included)."""
    ordered = sorted(clips, key=lambda c: (_num(c.get("motion")), c["clip_id"]))
    if len(ordered) <= n:
        return ordered
    idx = np.unique(np.linspace(0, len(ordered) - 1, n).round().astype(int))
    return [ordered[i] for i in idx]


def _num(v) -> float:
    return -1.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _scores_text(c: dict, names: list[str]) -> str:
    parts = []
    for k in names:
        v = c.get(k)
        parts.append(f"{k} {v:.3g}" if isinstance(v, float) and not math.isnan(v) else f"{k} -")
    return "  ".join(parts)


def _score_names(clips: list[dict]) -> list[str]:
    skip = {"clip_id", "source", "start_frame", "end_frame", "frames", "fps", "start_s", "end_s", "width", "height",
            "text", "reasons", "kept", "file_name"}
    return [k for k in (clips[0] if clips else {}) if k not in skip]


def contact_sheet(out: Path, clips: list[dict], summary: dict, rows: int = 24) -> Path:
    """Write ``out/report/contact_sheet.png``."""
    thumbs = out / "report" / "thumbs"
    font, bold = _font(12), _font(14)
    names = _score_names(clips)
    kept = _spread([c for c in clips if c["kept"]], rows)
    dropped = _spread([c for c in clips if not c["kept"]], rows)
    errors = summary.get("errors", [])
    head = (f"{summary['videos']} videos, {summary['clips']} clips: {summary['kept']} kept, {summary['dropped']} "
            f"dropped, {summary['unreadable']} unreadable")
    sections = [(f"KEPT ({len(kept)} of {summary['kept']} shown, spread over the motion range)", kept, (20, 120, 40)),
                (f"DROPPED ({len(dropped)} of {summary['dropped']} shown)", dropped, (180, 40, 40))]
    strips = {c["clip_id"]: _load_strip(thumbs / f"{c['clip_id']}.png") for c in kept + dropped}
    heights = [max(3 * LINE, s.height) for s in strips.values()]
    row_h = max(heights) if heights else 3 * LINE
    strip_w = max([s.width for s in strips.values()] + [160])
    n_err = min(len(errors), 10)
    height = 2 * LINE + 10 + sum(LINE + 8 + max(1, len(r)) * (row_h + ROW_GAP) for _, r, _ in sections)
    height += (LINE + 8 + (n_err + (len(errors) > n_err)) * LINE) if errors else 0
    sheet = Image.new("RGB", (strip_w + LABEL_WIDTH + 24, height + 10), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = 6
    draw.text((8, y), "motion-adapters curate report", fill=(0, 0, 0), font=bold)
    y += LINE + 2
    draw.text((8, y), head, fill=(60, 60, 60), font=font)
    y += LINE + 10
    for title, rows_, colour in sections:
        draw.text((8, y), title, fill=colour, font=bold)
        y += LINE + 8
        if not rows_:
            draw.text((8, y), "(none)", fill=(120, 120, 120), font=font)
            y += row_h + ROW_GAP
        for c in rows_:
            strip = strips[c["clip_id"]]
            if strip.width:
                sheet.paste(strip, (8, y))
            x = strip_w + 20
            draw.text((x, y), f"{c['clip_id']}  [{c['start_s']:.1f}-{c['end_s']:.1f}s, {c['frames']} f]",
                      fill=(0, 0, 0), font=font)
            draw.text((x, y + LINE), _scores_text(c, names), fill=(60, 60, 60), font=font)
            why = ", ".join(c["reasons"]) if c["reasons"] else (c.get("text") or "")[:60]
            draw.text((x, y + 2 * LINE), why, fill=colour if c["reasons"] else (90, 90, 90), font=font)
            y += row_h + ROW_GAP
    if errors:
        draw.text((8, y), f"UNREADABLE / FAILED ({len(errors)})", fill=(180, 40, 40), font=bold)
        y += LINE + 8
        for e in errors[:n_err]:
            text = e["error"] if e["source"] in e["error"] else f"{e['source']}: {e['error']}"
            draw.text((8, y), text[: max(40, sheet.width // 7)], fill=(60, 60, 60), font=font)
            y += LINE
        if len(errors) > n_err:
            draw.text((8, y), f"... and {len(errors) - n_err} more (report.json)", fill=(60, 60, 60), font=font)
    path = out / "report" / "contact_sheet.png"
    sheet.save(path, optimize=True)
    return path


def _load_strip(path: Path) -> Image.Image:
    if not path.is_file():
        return Image.new("RGB", (0, 0))
    im = Image.open(path).convert("RGB")
    if im.width > MAX_STRIP_WIDTH:
        im = im.resize((MAX_STRIP_WIDTH, max(1, round(im.height * MAX_STRIP_WIDTH / im.width))), Image.BILINEAR)
    return im


def html_report(out: Path, clips: list[dict], summary: dict) -> Path:
    """Write ``out/report/index.html``: every clip (kept first), the thresholds and the unreadable files."""
    names = _score_names(clips)
    e = html.escape
    parts = ["<!doctype html><meta charset='utf-8'><title>curate report</title>",
             "<style>body{font:13px sans-serif;margin:20px}td,th{padding:3px 6px;border-bottom:1px solid #ddd;"
             "text-align:left;vertical-align:middle}.drop{color:#b22}.keep{color:#185}</style>",
             f"<h1>curate report</h1><p>{e(summary['videos_dir'])} &rarr; {e(summary['out'])}<br>"
             f"{summary['videos']} videos ({summary['analysed']} analysed, {summary['cached']} from cache, "
             f"{summary['unreadable']} unreadable); {summary['clips']} clips: <b class=keep>{summary['kept']} kept"
             f"</b>, <b class=drop>{summary['dropped']} dropped</b>.</p>"]
    if summary.get("thresholds"):
        parts.append("<p>Relative thresholds: " + ", ".join(
            f"{e(k)} = {v:.4g}" if isinstance(v, float) else f"{e(k)} = {v}" for k, v in summary["thresholds"].items())
            + "</p>")
    if summary.get("errors"):
        parts.append(f"<h2 class=drop>Unreadable or failed ({len(summary['errors'])})</h2><ul>")
        parts += [f"<li>{e(x['source'])} ({e(x['stage'])}): {e(x['error'])}</li>" for x in summary["errors"]]
        parts.append("</ul>")
    for title, sel, cls in (("Kept", True, "keep"), ("Dropped", False, "drop")):
        rows = sorted((c for c in clips if c["kept"] == sel), key=lambda c: c["clip_id"])
        parts.append(f"<h2 class={cls}>{title} ({len(rows)})</h2><table><tr><th>frames</th><th>clip</th>"
                     + "".join(f"<th>{e(n)}</th>" for n in names) + "<th>reasons / caption</th></tr>")
        for c in rows:
            cells = "".join(f"<td>{_num(c.get(n)):.4g}</td>" for n in names)
            why = e(", ".join(c["reasons"])) if c["reasons"] else e(c.get("text") or "")
            parts.append(f"<tr><td><img src='thumbs/{e(c['clip_id'])}.png' height=48></td><td>{e(c['clip_id'])}"
                         f"<br><small>{e(c['source'])} {c['start_s']:.2f}-{c['end_s']:.2f}s</small></td>{cells}"
                         f"<td class={cls}>{why}</td></tr>")
        parts.append("</table>")
    path = out / "report" / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def write_report(out: Path, clips: list[dict], summary: dict, rows: int = 24) -> tuple[Path, Path]:
    (out / "report").mkdir(parents=True, exist_ok=True)
    return contact_sheet(out, clips, summary, rows), html_report(out, clips, summary)
