"""Decoding and encoding videos with the ffmpeg that ships with imageio-ffmpeg (one decoder for every pass)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# "frame size for reading differs from the source size" is what we ask for when scaling
logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)

#: suffixes ``curate`` looks for (case-insensitive)
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")


class VideoReadError(RuntimeError):
    """A video that ffmpeg cannot open or decode."""


@dataclass
class VideoStream:
    """Decoded frames (uint8 RGB, (H, W, 3)) plus what ffmpeg says about the source."""

    fps: float
    size: tuple[int, int]          # (width, height) of the frames yielded
    source_size: tuple[int, int]   # (width, height) of the file
    duration: float
    frames: Iterator[np.ndarray]


def list_videos(root: str | Path) -> list[Path]:
    """Video files under ``root`` (recursive, hidden files and folders skipped), sorted."""
    root = Path(root)
    out = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            out.append(p)
    return sorted(out)


def _scale_filter(short_side: int | None, even: bool) -> list[str]:
    if not short_side:
        return ["-vf", "crop=trunc(iw/2)*2:trunc(ih/2)*2"] if even else []
    s = int(short_side)
    # short side = min(s, native), long side keeps the aspect ratio rounded to an even number
    w = f"if(gt(iw,ih),-2,2*trunc(min({s},iw)/2))"
    h = f"if(gt(iw,ih),2*trunc(min({s},ih)/2),-2)"
    return ["-vf", f"scale='{w}':'{h}':flags=area"]


def open_video(path: str | Path, short_side: int | None = None, even: bool = False) -> VideoStream:
    """Decode ``path`` frame by frame, optionally scaled so its short side is ``short_side`` (never upscaled).

    Raises :class:`VideoReadError` naming the file when ffmpeg cannot read it.
    """
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path}: expected a video file, found nothing at that path")
    try:
        gen = imageio_ffmpeg.read_frames(str(path), output_params=_scale_filter(short_side, even))
        meta = next(gen)
    except (OSError, RuntimeError, StopIteration) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VideoReadError(f"{path}: expected a video ffmpeg can decode, found an unreadable file ({first})") from None
    w, h = meta["size"]
    fps = float(meta.get("fps") or 0.0)
    if not fps or fps != fps or fps > 1000:
        fps = 25.0

    def frames() -> Iterator[np.ndarray]:
        n = 0
        try:
            for buf in gen:
                if len(buf) != w * h * 3:
                    raise VideoReadError(f"{path}: frame {n}: expected {w * h * 3} bytes, found {len(buf)}")
                yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
                n += 1
        except (OSError, RuntimeError) as e:
            if isinstance(e, VideoReadError):
                raise
            raise VideoReadError(f"{path}: decoding failed after {n} frames ({str(e).strip()[:200]})") from None
        finally:
            gen.close()

    return VideoStream(fps, (w, h), tuple(meta.get("source_size") or (w, h)), float(meta.get("duration") or 0.0),
                       frames())


class Mp4Writer:
    """Write frames to ``path`` with libx264 (yuv420p, ``crf``) through a temporary file; ``close`` commits."""

    def __init__(self, path: str | Path, fps: float, crf: int = 16):
        import imageio_ffmpeg

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        self.fps, self.crf = fps, crf
        self._gen = None
        self._ffmpeg = imageio_ffmpeg
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        frame = frame[: h - h % 2, : w - w % 2]  # yuv420p needs even sizes
        if self._gen is None:
            h, w = frame.shape[:2]
            self._gen = self._ffmpeg.write_frames(
                str(self.tmp), (w, h), fps=self.fps, codec="libx264", quality=None, macro_block_size=1,
                pix_fmt_out="yuv420p", output_params=["-crf", str(self.crf), "-preset", "medium"],
                ffmpeg_log_level="error")
            self._gen.send(None)
        self._gen.send(np.ascontiguousarray(frame))
        self.count += 1

    def close(self) -> Path:
        if self._gen is None:
            raise ValueError(f"{self.path}: expected at least one frame, found none")
        self._gen.close()
        if not self.tmp.is_file() or self.tmp.stat().st_size == 0:
            self.tmp.unlink(missing_ok=True)
            raise OSError(f"{self.path}: expected ffmpeg to write an mp4, found an empty file")
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._gen is not None:
            try:
                self._gen.close()
            except Exception:  # noqa: BLE001 - already failing; the temporary file is removed below
                pass
        self.tmp.unlink(missing_ok=True)


def write_mp4(frames: Iterable[np.ndarray], path: str | Path, fps: float, crf: int = 16) -> Path:
    """Write an iterable of uint8 (H, W, 3) frames (even H and W) to an mp4, atomically."""
    w = Mp4Writer(path, fps, crf)
    try:
        for f in frames:
            w.write(f)
        return w.close()
    except BaseException:
        w.abort()
        raise
