"""Caption carry-over: a CSV mapping source videos to captions (``file,caption``, WebVid ``videoid,name``, …)."""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

from motion_adapters.errors import MotionAdapterError

KEY_COLUMNS = ("file_name", "file", "filename", "path", "video", "videoid", "video_id", "id", "clip")
TEXT_COLUMNS = ("text", "caption", "name", "prompt", "description", "title")


def _pick(header: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, path: Path) -> str:
    lower = {h.strip().lower(): h for h in header}
    if wanted:
        if wanted in header:
            return wanted
        if wanted.lower() in lower:
            return lower[wanted.lower()]
        raise MotionAdapterError(f"--captions {path}: expected a column {wanted!r} ({what}), found {header}")
    for c in candidates:
        if c in lower:
            return lower[c]
    raise MotionAdapterError(f"--captions {path}: expected a {what} column (one of {', '.join(candidates)}; "
                             f"or name it with --caption-{'key' if what == 'file' else 'text'}-column), "
                             f"found {header}")


def load_captions(path: str | Path, key_column: str | None = None,
                  text_column: str | None = None) -> dict[str, str]:
    """Read a caption CSV into {key: caption}. WebVid's ``videoid,name`` is recognised (name is the caption)."""
    path = Path(path)
    if not path.is_file():
        raise MotionAdapterError(f"--captions {path}: expected a CSV file, found nothing at that path")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        lower = [h.strip().lower() for h in header]
        if not key_column and not text_column and "videoid" in lower and "name" in lower:
            key_column, text_column = header[lower.index("videoid")], header[lower.index("name")]
        key = _pick(header, key_column, KEY_COLUMNS, "file", path)
        text = _pick(header, text_column, tuple(c for c in TEXT_COLUMNS if c != key.lower()), "caption", path)
        out: dict[str, str] = {}
        for row in reader:
            k = (row.get(key) or "").strip()
            if k:
                out[k.replace("\\", "/")] = (row.get(text) or "").strip()
    return out


def caption_for(captions: dict[str, str], rel: str) -> str | None:
    """The caption of source video ``rel`` (relative path): matched by path, path without suffix, name or stem."""
    p = PurePosixPath(rel)
    for k in (str(p), str(p.with_suffix("")), p.name, p.stem):
        if k in captions:
            return captions[k]
    return None
