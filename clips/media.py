"""Reading frames from videos (.mp4/.webm/.mov/.gif), frame folders and images, plus resize + centre crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class MediaError(Exception):
    """A file is unreadable or unusable (counted and skipped by the dataset)."""


def media_kind(path: Path) -> str:
    """``video`` (file or frame folder) or ``image``."""
    if path.is_dir():
        return "video"
    s = path.suffix.lower()
    if s in IMAGE_SUFFIXES:
        return "image"
    if s in VIDEO_SUFFIXES:
        return "video"
    raise MediaError(f"unsupported file type {s!r} (expected one of {VIDEO_SUFFIXES + IMAGE_SUFFIXES})")


def _frame_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MediaError("a frame folder without images")
    return files


def count_frames(path: Path) -> int:
    """Number of frames (1 for an image)."""
    try:
        if path.is_dir():
            return len(_frame_files(path))
        s = path.suffix.lower()
        if s in IMAGE_SUFFIXES:
            return 1
        if s == ".gif":
            with Image.open(path) as im:
                return int(getattr(im, "n_frames", 1))
        import imageio_ffmpeg

        n, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
        return int(n)
    except MediaError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure means "broken file"
        raise MediaError(f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e


def read_frames(path: Path, indices: list[int]) -> list[np.ndarray]:
    """The requested frames (uint8 HxWx3), in the order of ``indices`` (repeats allowed)."""
    wanted = sorted(set(indices))
    got: dict[int, np.ndarray] = {}
    try:
        if path.is_dir():
            files = _frame_files(path)
            for i in wanted:
                got[i] = np.asarray(Image.open(files[i]).convert("RGB"))
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            got[0] = np.asarray(Image.open(path).convert("RGB"))
        elif path.suffix.lower() == ".gif":
            with Image.open(path) as im:
                for i in wanted:
                    im.seek(i)
                    got[i] = np.asarray(im.convert("RGB"))
        else:
            import imageio.v3 as iio

            last = wanted[-1]
            for i, frame in enumerate(iio.imiter(str(path), plugin="FFMPEG")):
                if i in wanted:
                    got[i] = np.asarray(frame)[..., :3]
                if i >= last:
                    break
    except Exception as e:  # noqa: BLE001
        raise MediaError(f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    missing = [i for i in wanted if i not in got]
    if missing:
        raise MediaError(f"frame {missing[0]} could not be decoded (truncated file?)")
    return [got[i] for i in indices]


def resize_center_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """Resize the short side to ``size`` (bicubic, antialiased) and crop the centre square."""
    im = Image.fromarray(frame)
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)))


def clip_indices(n: int, num_frames: int, stride: int, start_fraction: float | None) -> list[int]:
    """AnimateDiff sampling: span ``min(n, (F−1)·stride+1)`` frames from a (random) start, F evenly spaced.

    ``start_fraction`` in [0, 1) picks the start (None: from the first frame). Short videos are sampled more
    densely (frames repeat when n < F), exactly as the official dataset does.
    """
    clip_length = min(n, (num_frames - 1) * stride + 1)
    start = 0 if start_fraction is None else int(start_fraction * (n - clip_length + 1))
    return [int(x) for x in np.linspace(start, start + clip_length - 1, num_frames, dtype=int)]
