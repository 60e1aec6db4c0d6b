"""Dense optical flow (OpenCV Farnebäck) and the SVD motion score.

SVD (App. C) scores a clip by the mean ‖flow‖ over time and pixels, with Farnebäck flow at 2 fps on frames
downscaled to a short side of 16 px. The Farnebäck parameters are not given in the paper; we use OpenCV's
common defaults ``pyr_scale 0.5, levels 3, winsize 15, iterations 3, poly_n 5, poly_sigma 1.2`` on
grayscale. Magnitudes are in pixels *of the downscaled frame* per sampled step, so they are only comparable
between runs with the same ``short_side`` and sampling rate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def _cv2():
    try:
        import cv2
    except ImportError:  # pragma: no cover - depends on the install
        raise ImportError("optical flow needs OpenCV: pip install 'motion-adapters[curate]' "
                          "(opencv-python-headless)") from None
    cv2.setNumThreads(1)
    return cv2


def to_gray(frame: np.ndarray) -> np.ndarray:
    """uint8 (H, W) luma (BT.601) of an RGB uint8 frame; a 2-D frame is returned as is."""
    if frame.ndim == 2:
        return frame
    return _cv2().cvtColor(np.ascontiguousarray(frame), _cv2().COLOR_RGB2GRAY)


def resize_short(frame: np.ndarray, short_side: int) -> np.ndarray:
    """Resize (area filter) so that the short side is ``short_side``, keeping the aspect ratio."""
    h, w = frame.shape[:2]
    if min(h, w) == short_side:
        return frame
    scale = short_side / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    cv2 = _cv2()
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(frame), size, interpolation=interp)


def farneback(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Flow (H, W, 2) from gray uint8 ``prev`` to ``nxt``."""
    return _cv2().calcOpticalFlowFarneback(prev, nxt, None, **FARNEBACK)


def consistent_flow(prev: np.ndarray, nxt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward flow (H, W, 2) and the mask of pixels where it passes the forward–backward check
    (Sundaram et al. 2010): ``|w_f + w_b(x + w_f)|² < 0.01 (|w_f|² + |w_b(x + w_f)|²) + 0.5``. Smooth motion
    passes it; flicker and independent frames give large flows that do not invert."""
    cv2 = _cv2()
    fwd, bwd = farneback(prev, nxt), farneback(nxt, prev)
    h, w = prev.shape[:2]
    xx, yy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    back = cv2.remap(bwd, xx + fwd[..., 0], yy + fwd[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    err = ((fwd + back) ** 2).sum(-1)
    ok = err < 0.01 * ((fwd ** 2).sum(-1) + (back ** 2).sum(-1)) + 0.5
    return fwd, ok


def flow_magnitudes(gray: Sequence[np.ndarray]) -> list[np.ndarray]:
    """‖flow‖ (H, W) for each consecutive pair of gray frames."""
    return [np.linalg.norm(farneback(a, b), axis=-1) for a, b in zip(gray[:-1], gray[1:], strict=True)]


def sample_indices(start: int, end: int, fps: float, rate: float = 2.0) -> list[int]:
    """Frame indices in ``[start, end)`` at about ``rate`` fps (at least two when the range has two frames)."""
    n = end - start
    if n <= 1:
        return [start] if n == 1 else []
    step = max(1, round(fps / rate)) if fps > 0 else 1
    step = min(step, n - 1)
    return list(range(start, end, step))


def motion_score(gray: Sequence[np.ndarray]) -> float:
    """SVD motion score: mean ‖flow‖ over pairs and pixels of already sampled, downscaled gray frames."""
    if len(gray) < 2:
        return float("nan")
    return float(np.mean([m.mean() for m in flow_magnitudes(gray)]))
