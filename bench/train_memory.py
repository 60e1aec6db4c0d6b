"""Training-memory benchmark: fp32 AdamW vs bitsandbytes AdamW8bit, checkpointing off/on, and ``low_vram``.

``low_vram`` = AdamW8bit + gradient checkpointing + frozen weights stored in bf16 + bf16 autocast (trainable
motion modules stay fp32), i.e. what ``run.low_vram: true`` does on CPU.

A mid-size SD1.5-layout UNet (block_out (128, 256, 512, 512), ~100 M spatial params) with a full-size
motion module layout for those channels; task ``motion`` (only the motion modules train, as in AnimateDiff).
Each configuration runs in a FRESH subprocess: build the model (fp32, random weights), reset the peak-RSS
counter (Linux ``/proc/self/clear_refs``), run ``--warmup`` + ``--steps`` steps and read VmHWM, so the peak is
the training peak (weights + gradients + optimizer state + activations), not a build transient. Reports optimizer-state bytes, peak RSS (ru_maxrss) and the median step time, with
ratios against fp32 AdamW without checkpointing. Writes ``bench/results/train_memory.json``.

    python bench/train_memory.py [--frames 8 --size 32 --steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
MID_UNET = dict(block_out_channels=(128, 256, 512, 512), cross_attention_dim=768, attention_head_dim=8,
                norm_num_groups=32)
# name: (optimizer, gradient checkpointing, frozen weights in bf16 + bf16 autocast)
CONFIGS = {"adamw": ("adamw", False, False), "adamw+ckpt": ("adamw", True, False),
           "adamw8bit": ("adamw8bit", False, False), "adamw8bit+ckpt": ("adamw8bit", True, False),
           "low_vram": ("adamw8bit", True, True)}


def _rss(field: str) -> int:
    """VmRSS / VmHWM of this process in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5), so the peak covers training only."""
    Path("/proc/self/clear_refs").write_text("5")


def worker(name: str, frames: int, size: int, steps: int, warmup: int) -> dict:
    import torch
    from diffusers import MotionAdapter, UNetMotionModel

    from training.config import OptimConfig
    from training.optim import build_optimizer, optimizer_state_bytes

    torch.manual_seed(0)
    optimizer, ckpt, half = CONFIGS[name]
    from motion_adapters.swap import motion_unet_config
    from motion_adapters.synthetic import TINY_UNET

    adapter_cfg = dict(MotionAdapter(block_out_channels=(8, 8, 8, 8), motion_norm_num_groups=8).config)
    adapter_cfg.update(block_out_channels=MID_UNET["block_out_channels"], use_motion_mid_block=False)
    # built directly (no from_unet2d copy), so the build leaves no transient peak behind
    unet = UNetMotionModel.from_config(motion_unet_config({**TINY_UNET, **MID_UNET}, adapter_cfg))
    unet.freeze_unet2d_params()
    if half:  # what run.low_vram does (training.model.cast_frozen): frozen weights bf16, trainable stay fp32
        from training.model import cast_frozen

        cast_frozen(unet, torch.bfloat16)
    base_rss = _rss("VmRSS")
    _reset_peak()
    unet.train()
    if ckpt:
        unet.enable_gradient_checkpointing()
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = build_optimizer([{"params": params}], OptimConfig(), use_8bit=optimizer == "adamw8bit")
    h = size // 8
    x = torch.randn(1, 4, frames, h, h)
    emb = torch.randn(frames, 77, 768)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=half):
            out = unet(x, torch.tensor([500]), encoder_hidden_states=emb).sample
        loss = torch.nn.functional.mse_loss(out.float(), torch.randn_like(out, dtype=torch.float32))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {"config": name, "optimizer": optimizer, "gradient_checkpointing": ckpt,
            "frozen_dtype": "bfloat16" if half else "float32", "autocast": "bf16" if half else None,
            "trainable_params": sum(p.numel() for p in params),
            "total_params": sum(p.numel() for p in unet.parameters()),
            "optimizer_state_bytes": optimizer_state_bytes(opt),
            "model_rss_bytes": base_rss, "peak_rss_bytes": _rss("VmHWM"),
            "process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "step_seconds_median": statistics.median(times), "step_seconds": times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="pixel size (latent = size/8)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_memory.json"))
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.frames, a.size, a.steps, a.warmup)))
        return
    rows = []
    load_before = os.getloadavg()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in CONFIGS:
        cmd = [sys.executable, __file__, "--worker", name, "--frames", str(a.frames), "--size", str(a.size),
               "--steps", str(a.steps), "--warmup", str(a.warmup)]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{name:>15}: optimizer state {r['optimizer_state_bytes'] / 2**20:8.1f} MiB, peak RSS "
              f"{r['peak_rss_bytes'] / 2**20:8.1f} MiB, step {r['step_seconds_median']:.2f} s", flush=True)
    ref = rows[0]
    for r in rows:
        r["optimizer_state_ratio"] = r["optimizer_state_bytes"] / ref["optimizer_state_bytes"]
        r["peak_rss_ratio"] = r["peak_rss_bytes"] / ref["peak_rss_bytes"]
        r["step_time_ratio"] = r["step_seconds_median"] / ref["step_seconds_median"]
    by = {r["config"]: r for r in rows}
    load_after = os.getloadavg()
    summary = {"optimizer_state_ratio_8bit": by["adamw8bit"]["optimizer_state_ratio"],
               "peak_rss_ratio_8bit_plus_ckpt": by["adamw8bit+ckpt"]["peak_rss_ratio"],
               "peak_rss_ratio_low_vram": by["low_vram"]["peak_rss_ratio"],
               "step_time_ratio_low_vram": by["low_vram"]["step_time_ratio"],
               "targets": {"optimizer_state_ratio_8bit": "<= 0.30", "peak_rss_ratio_low_vram": "<= 0.60"},
               "timing_note": "step times are comparable only if the load average stayed below the core count "
                              f"({os.cpu_count()}); load was {load_before[0]:.2f} before, {load_after[0]:.2f} after"}
    for k, v in summary.items():
        if k not in ("targets", "timing_note"):
            print(f"{k}: {v:.3f}")
    out = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
                       "loadavg_before": load_before, "loadavg_after": load_after},
           "setup": {"unet": MID_UNET, "frames": a.frames, "size": a.size, "latent": a.size // 8, "batch": 1,
                     "steps": a.steps, "warmup": a.warmup, "trained": "motion modules (task motion)"},
           "results": rows, "summary": summary}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
