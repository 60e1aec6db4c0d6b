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

On a GPU (``--device cuda``) the peak is ``torch.cuda.max_memory_allocated`` after the build, the half dtype is
bf16 (fp16 where the GPU has no bf16) and ``--unet sd15`` builds the full SD1.5 UNet + v3 motion-module layout
(1.28 B params, 417 M trainable), i.e. AnimateDiff's own training setting at ``--frames 16 --size 256``.
Writes ``bench/results/train_memory_cuda.json`` there.
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
sys.path.insert(0, str(ROOT))  # the tiny-model builders are the test suite's (tests/tiny_models.py)
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


def _unet_config(unet: str) -> dict:
    """UNetMotionModel config: the mid-size layout, or SD1.5's UNet with the v3 motion-module layout."""
    from diffusers import MotionAdapter

    from motion_adapters.swap import motion_unet_config
    from tests.tiny_models import TINY_UNET

    if unet == "sd15":
        assets = ROOT / "motion_adapters" / "assets"
        base = json.loads((assets / "sd15" / "unet" / "config.json").read_text())
        adapter_cfg = json.loads((assets / "motion" / "v3" / "config.json").read_text())
        return motion_unet_config({k: v for k, v in base.items() if not k.startswith("_")},
                                  {k: v for k, v in adapter_cfg.items() if not k.startswith("_")})
    adapter_cfg = dict(MotionAdapter(block_out_channels=(8, 8, 8, 8), motion_norm_num_groups=8).config)
    adapter_cfg.update(block_out_channels=MID_UNET["block_out_channels"], use_motion_mid_block=False)
    return motion_unet_config({**TINY_UNET, **MID_UNET}, adapter_cfg)


def worker(name: str, frames: int, size: int, steps: int, warmup: int, device: str = "cpu",
           unet_layout: str = "mid") -> dict:
    import torch
    from diffusers import UNetMotionModel

    from motion_adapters.training.config import OptimConfig
    from motion_adapters.training.optim import build_optimizer, optimizer_state_bytes

    torch.manual_seed(0)
    optimizer, ckpt, half = CONFIGS[name]
    cuda = device == "cuda"
    half_dtype = torch.bfloat16 if not cuda or torch.cuda.is_bf16_supported() else torch.float16
    # built directly (no from_unet2d copy), so the build leaves no transient peak behind
    with torch.device(device):
        unet = UNetMotionModel.from_config(_unet_config(unet_layout))
    unet.freeze_unet2d_params()
    if half:  # what run.low_vram does (training.model.cast_frozen): frozen weights bf16, trainable stay fp32
        from motion_adapters.training.model import cast_frozen

        cast_frozen(unet, half_dtype)
    if cuda:
        torch.cuda.synchronize()
        base_rss = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base_rss = _rss("VmRSS")
        _reset_peak()
    unet.train()
    if ckpt:
        unet.enable_gradient_checkpointing()
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = build_optimizer([{"params": params}], OptimConfig(), use_8bit=optimizer == "adamw8bit")
    h = size // 8
    x = torch.randn(1, 4, frames, h, h, device=device)
    emb = torch.randn(frames, 77, 768, device=device)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=half_dtype, enabled=half):
            out = unet(x, torch.tensor([500], device=device), encoder_hidden_states=emb).sample
        loss = torch.nn.functional.mse_loss(out.float(), torch.randn_like(out, dtype=torch.float32))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if cuda else _rss("VmHWM")
    half_name = str(half_dtype).removeprefix("torch.")
    return {"config": name, "optimizer": optimizer, "gradient_checkpointing": ckpt, "device": device,
            "frozen_dtype": half_name if half else "float32", "autocast": half_name if half else None,
            "trainable_params": sum(p.numel() for p in params),
            "total_params": sum(p.numel() for p in unet.parameters()),
            "optimizer_state_bytes": optimizer_state_bytes(opt),
            "model_rss_bytes": base_rss, "peak_rss_bytes": peak,
            "process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "step_seconds_median": statistics.median(times), "step_seconds": times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="pixel size (latent = size/8)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cpu: peak RSS; cuda: peak torch.cuda.max_memory_allocated")
    ap.add_argument("--unet", choices=["mid", "sd15"], default="mid",
                    help="mid: 209 M-param SD1.5-layout UNet; sd15: the real SD1.5 + v3 motion-module sizes")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/train_memory[_cuda].json)")
    a = ap.parse_args()
    if a.out is None:
        suffix = "_cuda" if a.device == "cuda" else ""
        a.out = str(ROOT / "bench" / "results" / f"train_memory{suffix}.json")
    if a.worker:
        print(json.dumps(worker(a.worker, a.frames, a.size, a.steps, a.warmup, a.device, a.unet)))
        return
    rows = []
    load_before = os.getloadavg()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    for name in CONFIGS:
        cmd = [sys.executable, __file__, "--worker", name, "--frames", str(a.frames), "--size", str(a.size),
               "--steps", str(a.steps), "--warmup", str(a.warmup), "--device", a.device, "--unet", a.unet]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            sys.exit(f"bench/train_memory.py: configuration {name} failed:\n{res.stderr[-3000:]}")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{name:>15}: optimizer state {r['optimizer_state_bytes'] / 2**20:8.1f} MiB, peak "
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
    machine = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
               "loadavg_before": load_before, "loadavg_after": load_after}
    if a.device == "cuda":
        import torch

        machine.update(gpu=torch.cuda.get_device_name(0), torch=torch.__version__,
                       memory="peak_rss_bytes/model_rss_bytes are torch.cuda max/allocated bytes")
    out = {"machine": machine,
           "setup": {"unet": a.unet if a.unet == "sd15" else MID_UNET, "device": a.device, "frames": a.frames, "size": a.size, "latent": a.size // 8, "batch": 1,
                     "steps": a.steps, "warmup": a.warmup, "trained": "motion modules (task motion)"},
           "results": rows, "summary": summary}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
