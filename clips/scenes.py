"""Scene-cut detection on decoded frames: a cascade of OpenCV detectors in the spirit of SVD's PySceneDetect one.

All detectors read per-frame features computed once on small frames (short side 64 px):

* **content** (PySceneDetect ``ContentDetector``): mean absolute difference of the H, S and V channels
  (OpenCV ranges, H 0–179) between consecutive frames; a cut where it reaches ``threshold`` (27, its default).
* **adaptive** (``AdaptiveDetector``): the content score divided by the mean of its neighbours within
  ``window`` frames on each side; a cut where the ratio reaches ``adaptive_ratio`` (3) and the score
  ``adaptive_min`` (15). It finds cuts between similar-looking shots that stay under the absolute threshold.
* **slow** (the cascade's lower frame rate): the same HSV difference between frames about half a second
  apart; a local maximum above ``slow_threshold`` (45) marks a dissolve, placed at its steepest frame.
* **fade** (``ThresholdDetector``): frames whose mean luma is below ``fade_threshold`` (12) are dark; a
  run of dark frames separates scenes and is left out of every clip.

Cuts closer than ``min_gap`` frames are merged (the one with the larger content score wins). A cut at
frame ``t`` means a new scene starts at ``t``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class CutParams:
    threshold: float = 27.0
    adaptive_ratio: float = 3.0
    adaptive_min: float = 15.0
    window: int = 2
    slow_threshold: float = 45.0
    fade_threshold: float = 12.0


def _hsv(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2HSV).astype(np.int16)


def hsv_distance(a: np.ndarray, b: np.ndarray) -> float:
    """PySceneDetect's content value: mean over H, S, V of the mean absolute difference."""
    return float(np.abs(a - b).mean())


@dataclass
class FrameFeatures:
    """Per-frame features collected while decoding (index 0 of the differences is 0)."""

    slow_step: int
    content: list[float] = field(default_factory=list)   # HSV distance to the previous frame
    slow: list[float] = field(default_factory=list)      # HSV distance to the frame slow_step back
    luma: list[float] = field(default_factory=list)      # mean luma 0–255
    contrast: list[float] = field(default_factory=list)  # std of luma 0–255
    _recent: deque = field(default_factory=deque)

    def push(self, frame: np.ndarray) -> None:
        """Add one RGB uint8 frame (already downscaled)."""
        hsv = _hsv(frame)
        luma = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        self.luma.append(float(luma.mean()))
        self.contrast.append(float(luma.std()))
        self.content.append(hsv_distance(hsv, self._recent[-1]) if self._recent else 0.0)
        self.slow.append(hsv_distance(hsv, self._recent[0]) if len(self._recent) == self.slow_step else 0.0)
        self._recent.append(hsv)
        if len(self._recent) > self.slow_step:
            self._recent.popleft()

    def __len__(self) -> int:
        return len(self.content)


def slow_step_for(fps: float) -> int:
    """Frames between the slow detector's comparisons (about 0.5 s, at least 2)."""
    return max(2, round(fps / 2))


def detect_cuts(feat: FrameFeatures, fps: float, params: CutParams = CutParams()) -> list[int]:
    """Frame indices where a new scene starts (hard cuts and dissolves; fades are handled by ``split``)."""
    c = np.asarray(feat.content, dtype=np.float64)
    n = len(c)
    if n < 2:
        return []
    cand: set[int] = set(np.flatnonzero(c >= params.threshold).tolist())
    if params.adaptive_ratio > 0:
        w = params.window
        for t in range(1, n):
            lo, hi = max(1, t - w), min(n, t + w + 1)
            nb = np.concatenate([c[lo:t], c[t + 1:hi]])
            if nb.size and c[t] >= params.adaptive_min and c[t] >= params.adaptive_ratio * max(nb.mean(), 1e-6):
                cand.add(t)
    if params.slow_threshold > 0:
        s = np.asarray(feat.slow, dtype=np.float64)
        k = feat.slow_step
        for t in np.flatnonzero(s >= params.slow_threshold):
            lo, hi = max(0, t - k), min(n, t + k + 1)
            if s[t] < s[lo:hi].max() or (s[lo:t] == s[t]).any():
                continue  # only the (first) local maximum of a run
            seg = c[t - k + 1: t + 1]
            cand.add(int(t - k + 1 + int(np.argmax(seg))))
    return merge_cuts(sorted(cand), c, max(2, round(fps / 4)))


def merge_cuts(cuts: list[int], content: np.ndarray, min_gap: int) -> list[int]:
    """Merge cuts closer than ``min_gap`` frames, keeping the one with the larger content score."""
    out: list[int] = []
    for t in cuts:
        if out and t - out[-1] < min_gap:
            if content[t] > content[out[-1]]:
                out[-1] = t
            continue
        out.append(t)
    return out


def split(n_frames: int, cuts: list[int], dark: np.ndarray | None = None,
          max_len: int = 0) -> list[tuple[int, int]]:
    """Scenes ``[start, end)`` between cuts, without dark (faded-out) frames, chunked to ``max_len`` frames."""
    bounds = [0, *[t for t in cuts if 0 < t < n_frames], n_frames]
    scenes: list[tuple[int, int]] = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        runs = [(a, b)]
        if dark is not None and dark[a:b].any():
            runs, start = [], None
            for t in range(a, b + 1):
                lit = t < b and not dark[t]
                if lit and start is None:
                    start = t
                elif not lit and start is not None:
                    runs.append((start, t))
                    start = None
        for s, e in runs:
            if max_len and e - s > max_len:
                scenes.extend((i, min(i + max_len, e)) for i in range(s, e, max_len))
            else:
                scenes.append((s, e))
    return scenes
