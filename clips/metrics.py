"""Weight-free video metrics: temporal flickering, optical-flow motion and dynamic degree, frame-to-frame
consistency (VBench's definitions where VBench has one, with Farnebäck flow in place of RAFT; the user-facing
table is docs/evaluation.md#metrics). CLIP scores live in :mod:`motion_adapters.clips.clip_metrics` (local
weights only).

All metrics take uint8 (F, H, W, 3) frames.

* ``temporal_flickering`` — VBench: ``(255 − mean_t MAE(frame_t, frame_t+1)) / 255`` on the full-resolution
  RGB frames (1 = no change at all; higher = less flicker). ``flicker_mae`` is the mean itself (0–255, lower
  is better). VBench applies it to *static* prompts, where every change is flicker; on moving clips motion
  lowers it too, so compare it between clips of the same prompt.
* ``motion_magnitude`` — mean ‖flow‖ of OpenCV Farnebäck flow (RAFT is not available offline) between frames
  ``step`` apart (VBench's ``round(fps/8)``), computed with the short side resized to 64–256 px and expressed in
  **pixels per step at a 256 px short side**, so clips of different sizes compare.
* ``coherent_motion`` — the same mean ‖flow‖ (same units) counting only pixels whose flow passes the
  forward–backward consistency check (Sundaram et al. 2010; :func:`motion_adapters.clips.flow.consistent_flow`), and
  ``flow_consistency`` — the share of moving pixels (‖flow‖ > 1 px at flow resolution) that pass it. Plain
  ``motion_magnitude`` rewards any change: independent frames (an image model without a motion module) or
  flicker score *higher* than smooth motion, because every pixel "moves". The consistency check keeps only
  motion that maps frame t onto frame t+1 and back, so a clip with a working motion module ranks above the
  same prompt without it (measured on the embedded models: docs/evaluation.md).
* ``dynamic`` / ``dynamic_pairs`` — VBench's dynamic degree rule with Farnebäck in place of RAFT: per pair,
  the mean of the top 5 % flow magnitudes (same 256 px units); a pair moves when it exceeds
  ``DYNAMIC_THRESHOLD`` = 6.0 (VBench's ``6.0·min(H, W)/256``); a clip is dynamic when at least
  ``round(4·N/16)`` of its N frames' pairs move. A run's ``dynamic_degree`` is the share of dynamic clips.
  Farnebäck underestimates large displacements compared with RAFT, so our dynamic degree is conservative.
* ``frame_ssim`` — mean SSIM (grayscale, Gaussian window σ = 1.5) of consecutive frames; ``frame_corr`` — mean
  Pearson correlation of consecutive frames' pixels. Both near 1 for smooth clips, lower for jumps, noise
  and structural flicker; both largely ignore a global brightness pulse, which ``flicker_mae`` catches.
"""

from __future__ import annotations

import math

import numpy as np

from motion_adapters.clips.flow import consistent_flow, resize_short, to_gray

FLOW_MIN_SIDE = 64
FLOW_MAX_SIDE = 256
DYNAMIC_THRESHOLD = 6.0
TOP_FRACTION = 0.05

#: name → (direction, description); direction +1 = higher is better, -1 = lower is better, 0 = neither
METRICS: dict[str, tuple[int, str]] = {
    "temporal_flickering": (1, "VBench (255 - mean consecutive-frame MAE) / 255"),
    "flicker_mae": (-1, "mean absolute difference of consecutive frames, 0-255"),
    "motion_magnitude": (0, "Farneback mean flow, px per step at 256 px short side"),
    "coherent_motion": (0, "mean flow passing the forward-backward check, same units"),
    "flow_consistency": (1, "share of moving pixels whose flow passes the forward-backward check"),
    "dynamic_pairs": (0, "share of frame pairs whose top-5% flow exceeds 6.0"),
    "dynamic": (0, "VBench dynamic-degree rule (run: share of dynamic clips)"),
    "frame_ssim": (1, "mean SSIM of consecutive frames"),
    "frame_corr": (1, "mean pixel correlation of consecutive frames"),
    "clip_score": (1, "CLIPSIM: mean over frames of max(100 cos(image, text), 0)"),
    "clip_frame_consistency": (1, "mean cos of consecutive frames' CLIP image embeddings"),
}


def check_frames(frames: np.ndarray, source: str = "clip") -> np.ndarray:
    a = np.asarray(frames)
    if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
        raise ValueError(f"{source}: expected uint8 frames (F, H, W, 3), found {a.dtype} {a.shape}")
    return a


def temporal_flicker(frames: np.ndarray) -> dict[str, float]:
    """VBench temporal flickering score and the mean consecutive-frame MAE."""
    f = check_frames(frames)
    if len(f) < 2:
        return dict(flicker_mae=math.nan, temporal_flickering=math.nan)
    mae = float(np.mean([np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() for a, b in zip(f[:-1], f[1:],
                                                                                             strict=True)]))
    return dict(flicker_mae=mae, temporal_flickering=(255.0 - mae) / 255.0)


def flow_side(short_side: int) -> int:
    return int(min(max(short_side, FLOW_MIN_SIDE), FLOW_MAX_SIDE))


def motion(frames: np.ndarray, fps: float = 8.0) -> dict[str, float]:
    """Farnebäck motion magnitude (all flow, and forward–backward consistent flow), share of moving pairs and
    the VBench dynamic flag."""
    f = check_frames(frames)
    step = max(1, round(fps / 8.0))
    idx = list(range(0, len(f), step))
    if len(idx) < 2:
        return dict(motion_magnitude=math.nan, coherent_motion=math.nan, flow_consistency=math.nan,
                    dynamic_pairs=math.nan, dynamic=math.nan)
    side = flow_side(min(f.shape[1:3]))
    unit = 256.0 / side
    gray = [resize_short(to_gray(f[i]), side) for i in idx]
    means, tops, coherent, consistent = [], [], [], []
    for a, b in zip(gray[:-1], gray[1:], strict=True):
        flow, ok = consistent_flow(a, b)
        mag, ok = np.linalg.norm(flow, axis=-1).ravel() * unit, ok.ravel()
        k = max(1, int(len(mag) * TOP_FRACTION))
        means.append(float(mag.mean()))
        coherent.append(float((mag * ok).mean()))
        moved = mag > unit
        if moved.any():
            consistent.append(float(ok[moved].mean()))
        tops.append(float(np.partition(mag, -k)[-k:].mean()))
    moving = sum(t > DYNAMIC_THRESHOLD for t in tops)
    need = round(4 * len(idx) / 16.0)
    return dict(motion_magnitude=float(np.mean(means)), coherent_motion=float(np.mean(coherent)),
                flow_consistency=float(np.mean(consistent)) if consistent else 1.0, dynamic_pairs=moving / len(tops),
                dynamic=float(moving >= max(1, need)))


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    import cv2

    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda x: cv2.GaussianBlur(x, (11, 11), 1.5)  # noqa: E731
    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma * ma, blur(b * b) - mb * mb, blur(a * b) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return float(s.mean())


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float(x @ x) * float(y @ y))
    return 1.0 if den == 0 else float(x @ y) / den


def consistency(frames: np.ndarray) -> dict[str, float]:
    """Mean SSIM and pixel correlation of consecutive frames."""
    f = check_frames(frames)
    if len(f) < 2:
        return dict(frame_ssim=math.nan, frame_corr=math.nan)
    g = [to_gray(x) for x in f]
    pairs = list(zip(g[:-1], g[1:], strict=True))
    return dict(frame_ssim=float(np.mean([_ssim(a, b) for a, b in pairs])),
                frame_corr=float(np.mean([_corr(a, b) for a, b in pairs])))


def evaluate_frames(frames: np.ndarray, fps: float = 8.0) -> dict[str, float]:
    """Every weight-free metric of one clip."""
    f = check_frames(frames)
    return dict(frames=len(f), height=int(f.shape[1]), width=int(f.shape[2]), fps=fps,
                **temporal_flicker(f), **motion(f, fps), **consistency(f))


def summarize(clips: list[dict]) -> dict[str, float]:
    """Mean of every metric over clips (NaNs skipped); ``dynamic_degree`` = share of dynamic clips."""
    out: dict[str, float] = {}
    for name in METRICS:
        vals = [c[name] for c in clips if isinstance(c.get(name), (int, float)) and not math.isnan(c[name])]
        if vals:
            out[name] = float(np.mean(vals))
    if "dynamic" in out:
        out["dynamic_degree"] = out.pop("dynamic")
    return out
