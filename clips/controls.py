"""Control maps computed from video frames without any download: Canny edges (OpenCV) and silhouettes.

Every preprocessor takes frames as float32 ``(F, H, W, 3)`` in [0, 1] and returns maps of the same shape
(white lines or regions on black, as ControlNets are trained on). Maps the user already has (a folder of
images or a video) are used as they are and need no preprocessor.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from motion_adapters.errors import MotionAdapterError

CANNY_LOW, CANNY_HIGH = 100, 200  # the thresholds lllyasviel's canny ControlNets were trained with
#: preprocessors that need a model this toolkit does not ship (and never downloads)
NEEDS_A_MODEL = {
    "depth": "a depth estimator (MiDaS / DPT / Depth Anything)",
    "normal": "a normal-map estimator (BAE)",
    "openpose": "a pose estimator (OpenPose / DWPose)",
    "pose": "a pose estimator (OpenPose / DWPose)",
    "mlsd": "a line-segment detector (M-LSD)",
    "lineart": "a line-art model",
    "softedge": "an edge model (HED / PiDiNet)",
    "hed": "an edge model (HED)",
    "scribble": "an edge model (HED / PiDiNet)",
    "seg": "a segmentation model (UperNet / OneFormer)",
}


def _uint8(frames: np.ndarray) -> np.ndarray:
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def canny(frames: np.ndarray, low: int = CANNY_LOW, high: int = CANNY_HIGH) -> np.ndarray:
    """Canny edges of each frame: white edges on black, 3 channels."""
    import cv2

    edges = [cv2.Canny(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), low, high) for f in _uint8(frames)]
    return np.repeat(np.stack(edges)[..., None], 3, axis=-1).astype(np.float32) / 255.0


def silhouette(frames: np.ndarray, threshold: float = 0.12, ratio: float = 0.45, noise_k: float = 3.0) -> np.ndarray:
    """The foreground of each frame in white on black.

    A pixel is foreground when its colour differs from the frame's background (the median colour of its border)
    by more than ``max(threshold, noise_k · border noise, ratio · peak)`` (largest channel difference; border
    noise: the 80th percentile of the border's differences; peak: the frame's 99th percentile). The relative
    term keeps faint overlays out (motion trails, drop shadows, reflections, at most ~40 % of the object's
    contrast), the noise term keeps textured backgrounds (paper grain, fibres) out. Made for plain or lightly
    textured backgrounds (the shapes world, studio footage); anything busier needs a segmentation model."""
    f = np.asarray(frames, dtype=np.float32)
    border = np.concatenate([f[:, 0], f[:, -1], f[:, 1:-1, 0], f[:, 1:-1, -1]], axis=1)  # (F, 2H+2W-4, 3)
    bg = np.median(border, axis=1)
    dist = np.abs(f - bg[:, None, None, :]).max(axis=-1)
    noise = np.percentile(np.abs(border - bg[:, None, :]).max(axis=-1), 80, axis=1)
    peak = np.percentile(dist.reshape(len(f), -1), 99, axis=1)
    thr = np.maximum(np.maximum(threshold, noise_k * noise), ratio * peak)
    mask = dist > thr[:, None, None]
    return np.repeat(mask[..., None], 3, axis=-1).astype(np.float32)


PREPROCESSORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"canny": canny, "silhouette": silhouette}


def compute_maps(frames: np.ndarray, name: str, label: str = "--control") -> np.ndarray:
    """Maps of ``frames`` by the preprocessor ``name``; a clear error for one that needs a model."""
    key = name.strip().lower()
    if key in PREPROCESSORS:
        return PREPROCESSORS[key](frames)
    if key in NEEDS_A_MODEL:
        raise MotionAdapterError(
            f"{label} {name}: expected a preprocessor that runs without a model ({', '.join(PREPROCESSORS)}), "
            f"found one that needs {NEEDS_A_MODEL[key]}, which this machine does not have; make the maps with "
            "that tool and give them as a video or a folder of images")
    raise MotionAdapterError(f"{label} {name}: expected one of {', '.join(PREPROCESSORS)} (or maps given as a video "
                             "or folder), found an unknown preprocessor")
