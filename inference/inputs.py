"""Frame inputs of a generation (the video of video-to-video, a ControlNet's control maps, the pictures of image
prompts): read from a video file, a folder of frames, an image or an array, then fitted to the clip's frame count
and size, with a note in the log whenever frames are repeated or dropped or the picture is stretched."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from motion_adapters.clips.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, MediaError, count_frames, read_frames
from motion_adapters.clips.recipe import file_hash
from motion_adapters.errors import MotionAdapterError

log = logging.getLogger(__name__)
ASPECT_NOTE = 0.01  # an aspect change beyond 1 % is noted in the log
FrameInput = str | Path | np.ndarray
PictureInput = str | Path | np.ndarray | Image.Image


@dataclass
class Frames:
    """Frames as read (float32 ``(F, H, W, 3)`` in [0, 1]), where they came from and their SHA-256."""

    frames: np.ndarray
    label: str                 # how errors and notes name the input ("--video", "video", "controlnets[1]" …)
    path: str | None = None    # None for an array
    sha256: str = ""

    def entry(self) -> dict:
        """The input's recipe entry: path (None for an array), SHA-256 and frame count as read."""
        return {"path": self.path, "sha256": self.sha256, "frames": int(len(self.frames))}

    def fitted(self, num_frames: int, width: int, height: int) -> np.ndarray:
        """These frames resampled evenly to ``num_frames`` and resized to ``width`` x ``height``."""
        return fit_frames(self.frames, num_frames, width, height, self.label)


def read_frame_input(src: FrameInput | Frames, label: str) -> Frames:
    """Frames from a video file (.mp4 .webm .mov .mkv .avi .gif), a folder of images, one image, or an array
    (``(F, H, W, 3|4)`` or ``(F, H, W)``, uint8 or float in [0, 1]); a clear error naming ``label`` otherwise."""
    if isinstance(src, Frames):
        return src
    if isinstance(src, np.ndarray) or (not isinstance(src, (str, Path)) and hasattr(src, "__array__")):
        frames = _as_float_frames(np.asarray(src), label)
        return Frames(frames, label, None, hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest())
    path = Path(src)
    if not path.exists():
        raise MotionAdapterError(f"{label} {path}: expected a video file or a folder of frames, found nothing at "
                                 "that path")
    if path.is_file() and path.suffix.lower() not in VIDEO_SUFFIXES + IMAGE_SUFFIXES:
        raise MotionAdapterError(f"{label} {path}: expected a video ({' '.join(VIDEO_SUFFIXES)}), an image or a folder "
                                 f"of images, found a {path.suffix or 'suffix-less'} file")
    try:
        n = count_frames(path)
        if n < 1:
            raise MediaError("no frames")
        frames = np.stack(read_frames(path, list(range(n))))
    except MediaError as e:
        raise MotionAdapterError(f"{label} {path}: expected frames that decode, found {e}") from None
    return Frames(_as_float_frames(frames, label, path), label, str(path), file_hash(path) or "")


def read_picture(src: PictureInput | Frames, label: str) -> Frames:
    """One picture (an image file, a PIL image, or an array ``(H, W, 3|4)`` / ``(H, W)``, uint8 or float in
    [0, 1]) as a one-frame :class:`Frames`; a clear error naming ``label`` otherwise."""
    if isinstance(src, Frames):
        return src
    if isinstance(src, Image.Image):
        src = np.asarray(src.convert("RGB"))
    if isinstance(src, np.ndarray) or (not isinstance(src, (str, Path)) and hasattr(src, "__array__")):
        a = np.asarray(src)
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
            raise MotionAdapterError(f"{label}: expected a picture shaped (H, W, 3), found shape {tuple(a.shape)}")
        return read_frame_input(a[None], label)
    path = Path(src)
    if path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES:
        raise MotionAdapterError(f"{label} {path}: expected an image ({' '.join(IMAGE_SUFFIXES)}), found a "
                                 f"{path.suffix or 'suffix-less'} file")
    if not path.is_file():
        what = "a folder" if path.is_dir() else "nothing at that path"
        raise MotionAdapterError(f"{label} {path}: expected an image file, found {what}")
    return read_frame_input(path, label)


def _as_float_frames(a: np.ndarray, label: str, path: Path | None = None) -> np.ndarray:
    name = f"{label} {path}" if path is not None else label
    if a.ndim == 3:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 4 or a.shape[-1] not in (3, 4):
        raise MotionAdapterError(f"{name}: expected frames shaped (F, H, W, 3), found shape {tuple(a.shape)}")
    if a.shape[0] == 0:
        raise MotionAdapterError(f"{name}: expected at least one frame, found 0")
    a = a[..., :3]
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
        raise MotionAdapterError(f"{name}: expected uint8 or float frames, found {a.dtype}")
    f = a.astype(np.float32)
    if not np.isfinite(f).all():
        raise MotionAdapterError(f"{name}: expected values in [0, 1] (or uint8), found NaN or infinite values")
    if f.min() < 0 or f.max() > 1:
        raise MotionAdapterError(f"{name}: expected values in [0, 1] (or uint8), found a range "
                                 f"{float(f.min()):g}…{float(f.max()):g}")
    return f


def frame_indices(n: int, num_frames: int) -> np.ndarray:
    """``num_frames`` indices spread evenly over ``n`` frames (first and last kept)."""
    if num_frames == 1 or n == 1:
        return np.zeros(num_frames, dtype=int)
    return np.round(np.linspace(0, n - 1, num_frames)).astype(int)


def fit_frames(frames: np.ndarray, num_frames: int, width: int, height: int, label: str) -> np.ndarray:
    """``frames`` resampled evenly to ``num_frames`` (frames repeat when there are fewer) and resized to
    ``width`` x ``height`` (area averaging down, bicubic up); each change is noted in the log."""
    n, h, w = frames.shape[:3]
    if n != num_frames:
        how = "repeating frames" if n < num_frames else "dropping frames evenly"
        log.warning("%s: %d frames resampled to %d (%s)", label, n, num_frames, how)
        frames = frames[frame_indices(n, num_frames)]
    if (w, h) == (width, height):
        return np.ascontiguousarray(frames, dtype=np.float32)
    if abs((w / h) / (width / height) - 1) > ASPECT_NOTE:
        log.warning("%s: %dx%d frames stretched to %dx%d (the aspect ratio changes from %.3g to %.3g)", label, w, h,
                    width, height, w / h, width / height)
    filt = Image.BOX if width <= w and height <= h else Image.BICUBIC
    out = [np.asarray(Image.fromarray(f).resize((width, height), filt), dtype=np.float32)
           for f in (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)]
    return np.stack(out) / 255.0
