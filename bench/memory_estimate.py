"""Calibrates the generation memory estimate (``motion_adapters.inference.memory``) against measured peaks.

For the embedded shapes-world model (``VideoGenerator()``: the default base + motion module, CPU, fp32), each
grid point (frames, size, decode chunk, context windows, ``low_vram``, guidance) runs in a FRESH subprocess,
one at a time: load the generator, reset the peak-RSS counter (Linux ``/proc/self/clear_refs``), generate
with 1 step (memory check off), convert to uint8 and write a GIF as the CLI does, then read VmHWM. The
measured peak growth over the RSS after loading is compared with the estimate (which must never be below it
and should not be more than ~2× above). Points whose estimate exceeds ``--max-gb`` are skipped (the bench
shares the machine). Also times the refusal of a clip that cannot fit (``--frames 100000 --width 4096``):
it must come before any denoising step.

    python bench/memory_estimate.py [--max-gb 3]
    python bench/memory_estimate.py --reestimate   # new estimates for the measured grid (after a formula change)
    python bench/memory_estimate.py --new          # measure only the grid points not in the results yet

Writes ``bench/results/memory_estimate.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "memory_estimate.json"
# frames, size (WxH), decode chunk, context length, low_vram, guidance
GRID = [
    dict(num_frames=16, width=32, height=32),
    dict(num_frames=16, width=64, height=64),
    dict(num_frames=64, width=64, height=64),
    dict(num_frames=64, width=128, height=128),
    dict(num_frames=64, width=128, height=128, decode_chunk_size=4),
    dict(num_frames=64, width=128, height=128, decode_chunk_size=64),
    dict(num_frames=64, width=128, height=128, low_vram=True),
    dict(num_frames=64, width=128, height=128, context_length=16),
    dict(num_frames=64, width=128, height=128, guidance_scale=1.0),
    dict(num_frames=256, width=64, height=64),
    dict(num_frames=256, width=64, height=64, context_length=8, context_overlap=2),
    dict(num_frames=512, width=32, height=32),
    dict(num_frames=16, width=256, height=256),
    dict(num_frames=16, width=256, height=256, low_vram=True),
    dict(num_frames=24, width=160, height=96),
    dict(num_frames=8, width=384, height=384),
    # video to video (the input encoded first) and ControlNets (the shipped silhouette one; 2 = it and a copy)
    dict(num_frames=64, width=128, height=128, video=True),
    dict(num_frames=16, width=256, height=256, video=True),
    dict(num_frames=64, width=128, height=128, controlnets=1),
    dict(num_frames=64, width=128, height=128, controlnets=2),
    dict(num_frames=16, width=256, height=256, controlnets=1, video=True),
    # a picture at frame 0 through the shipped SparseCtrl encoder (its pipeline decodes every frame at once)
    dict(num_frames=16, width=128, height=128, sparsectrl=True),
    dict(num_frames=16, width=256, height=256, sparsectrl=True),
    dict(num_frames=8, width=384, height=384, sparsectrl=True),
]


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def child(point: dict, max_bytes: int) -> dict:
    """One grid point in this (fresh) process: the estimate, then the measured peak growth."""
    import torch

    from motion_adapters.clips.export import to_uint8, write_clip
    from motion_adapters.inference import VideoGenerator
    from motion_adapters.inference.options import GenerateOptions

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    point = dict(point)
    low_vram = point.pop("low_vram", False)
    gen = VideoGenerator(device="cpu", low_vram=low_vram)
    inputs, est_kw = _inputs(point, gen)
    kw = {"prompt": "a red circle moving left", "num_inference_steps": 1, "guidance_scale": 4.0, "seed": 0, **point}
    video = inputs.get("video") is not None
    opts = GenerateOptions.validate(**kw, max_seq=gen.motion_config["motion_max_seq_length"],
                                    sample_size=gen._default_size(), strength=1.0 if video else None)
    est = gen.estimate_memory(opts, **est_kw)
    row = dict(point=point | {"low_vram": low_vram, **_flags(est_kw)}, windows=opts.context_length,
               decode_chunk=opts.decode_chunk_size or (2 if low_vram else 16), estimate=est.needed,
               peak_phase=est.peak_phase, phases=est.phases)
    if est.needed > max_bytes:
        return row | {"skipped": f"estimate above {max_bytes / 1e9:g} GB"}
    denoise_peak = []
    decode = gen.pipe.vae.decode

    def timed_decode(*a, **k):  # the peak before the first VAE decode is the denoising phase's
        if not denoise_peak:
            denoise_peak.append(_rss("VmHWM") - base)
        return decode(*a, **k)

    gen.pipe.vae.decode = timed_decode
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    base = _rss("VmRSS")
    t0 = time.perf_counter()
    clip = gen.generate(**kw, **inputs, check_memory=False)
    generate_peak = _rss("VmHWM") - base
    with tempfile.TemporaryDirectory() as tmp:
        write_clip(to_uint8(clip.frames), Path(tmp) / "clip.gif", fps=8)
    measured = _rss("VmHWM") - base
    return row | dict(measured=measured, measured_denoise=denoise_peak[0], measured_generate=generate_peak, seconds=time.perf_counter() - t0,
                      ratio=round(est.needed / measured, 2))


def _flags(est_kw: dict) -> dict:
    """How a grid point records its inputs (controlnets, video, sparsectrl)."""
    sparse = est_kw.get("decode_all", False)
    return {"controlnets": est_kw["controlnets"] - sparse, "video": est_kw["video"] and not sparse,
            **({"sparsectrl": True} if sparse else {})}


def _estimate_kw(point: dict) -> dict:
    """The ``estimate_memory`` arguments of a grid point's inputs (popped from ``point``): a SparseCtrl encoder
    counts as a ControlNet whose keyframes are encoded first, decoding every frame at once."""
    n_cn, video, sparse = (int(point.pop("controlnets", 0)), bool(point.pop("video", False)),
                           bool(point.pop("sparsectrl", False)))
    return {"controlnets": n_cn + sparse, "video": video or sparse, "decode_all": sparse}


def _inputs(point: dict, gen) -> tuple[dict, dict]:
    """The point's video, ControlNets and SparseCtrl picture as ``generate`` arguments (popped from ``point``),
    and its ``estimate_memory`` arguments; the models are loaded now, so their weights count as loaded models,
    not as the generation's growth."""
    import shutil

    import numpy as np

    from motion_adapters.inference.controlnets import ControlInput
    from motion_adapters.registry import model_path

    est_kw = _estimate_kw(point)
    sparse = est_kw["decode_all"]
    n_cn, video = est_kw["controlnets"] - sparse, est_kw["video"] and not sparse
    frames = np.random.default_rng(0).random((point["num_frames"], point["height"], point["width"], 3),
                                             dtype=np.float32)
    models = ["shapes-silhouette-controlnet"]
    if n_cn > 1:
        copy = Path(tempfile.mkdtemp()) / "copy.safetensors"
        shutil.copyfile(model_path(models[0]), copy)
        models.append(str(copy))
    controls = [ControlInput(m, frames=frames) for m in models[:n_cn]]
    gen.set_controlnets([c.model for c in controls])
    if sparse:
        gen.set_sparsectrl("shapes-rgb-sparsectrl")
        return {"image": frames[0]}, est_kw
    return {"video": frames if video else None, "controlnets": controls or None}, est_kw


def reestimate() -> None:
    """Recompute the estimates of the recorded grid and the refusal with the current formula (the
    measurements stay)."""
    from motion_adapters.inference import VideoGenerator
    from motion_adapters.inference.options import GenerateOptions

    data = json.loads(OUT.read_text())
    gens = {}
    for row in data["grid"]:
        point = dict(row["point"])
        low_vram = point.pop("low_vram")
        est_kw = _estimate_kw(point)
        gen = gens.get(low_vram) or gens.setdefault(low_vram, VideoGenerator(device="cpu", low_vram=low_vram))
        kw = {"prompt": "a red circle moving left", "num_inference_steps": 1, "guidance_scale": 4.0, "seed": 0,
              **point}
        opts = GenerateOptions.validate(**kw, max_seq=gen.motion_config["motion_max_seq_length"],
                                        sample_size=gen._default_size(),
                                        strength=1.0 if est_kw["video"] and not est_kw["decode_all"] else None)
        est = gen.estimate_memory(opts, **est_kw)
        row.update(estimate=est.needed, peak_phase=est.peak_phase, phases=est.phases)
        if "measured" in row:
            row["ratio"] = round(est.needed / row["measured"], 2)
    ratios = [r["ratio"] for r in data["grid"] if "ratio" in r]
    data.update(min_ratio=min(ratios), max_ratio=max(ratios), refusal=refusal_time())
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"ratios {min(ratios):.2f}–{max(ratios):.2f}; wrote {OUT}")


def refusal_time() -> dict:
    """How long the refusal of a clip that cannot fit takes (after loading), and its message."""
    from motion_adapters.errors import MotionAdapterError
    from motion_adapters.inference import VideoGenerator

    gen = VideoGenerator(device="cpu")
    calls = []
    gen.pipe.unet.register_forward_pre_hook(lambda *a: calls.append(1))
    out = {}
    for name, kw in {"frames": dict(num_frames=100_000, width=64, height=64),
                     "size": dict(num_frames=16, width=2048, height=2048)}.items():
        t0 = time.perf_counter()
        try:
            gen.generate("a red circle", num_inference_steps=1, **kw)
            msg = None
        except MotionAdapterError as e:
            msg = str(e)
        out[name] = dict(seconds=round(time.perf_counter() - t0, 4), message=msg, unet_calls=len(calls))
    return out


def _point_key(point: dict) -> tuple:
    """A grid point without its default flags (as GRID writes it and as the results record it)."""
    defaults = {"low_vram": False, "controlnets": 0, "video": False, "sparsectrl": False}
    return tuple(sorted((k, v) for k, v in point.items() if defaults.get(k, object()) != v))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-gb", type=float, default=3.0, help="skip grid points estimated above this")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--refusal", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--reestimate", action="store_true", help="recompute the estimates of the recorded grid")
    ap.add_argument("--new", action="store_true", help="measure only the grid points the results do not have yet "
                    "and add them")
    args = ap.parse_args()
    if args.reestimate:
        reestimate()
        return
    if args.child:
        print(json.dumps(child(json.loads(args.child), int(args.max_gb * 1e9))))
        return
    if args.refusal:
        print(json.dumps(refusal_time()))
        return
    import torch

    old = json.loads(OUT.read_text())["grid"] if args.new and OUT.exists() else []
    known = [_point_key(r["point"]) for r in old]
    rows = list(old)
    for point in (p for p in GRID if _point_key(p) not in known):
        res = subprocess.run([sys.executable, __file__, "--child", json.dumps(point), "--max-gb", str(args.max_gb)],
                             capture_output=True, text=True)
        if res.returncode:
            sys.exit(f"grid point {point} failed:\n{res.stderr[-3000:]}")
        row = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps({k: row.get(k) for k in ("point", "estimate", "measured", "ratio", "peak_phase", "phases",
                                                  "measured_denoise", "measured_generate", "skipped")}),
              flush=True)
    res = subprocess.run([sys.executable, __file__, "--refusal"], capture_output=True, text=True, check=True)
    refusal = json.loads(res.stdout.strip().splitlines()[-1])
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(dict(
        what="peak RSS growth of one generation + uint8 conversion + GIF write (fresh process per point, 1 "
             "step, shapes-world default base + motion module, CPU fp32) vs the estimate of "
             "motion_adapters.inference.memory",
        machine=dict(cpu=cpu, cores=os.cpu_count(), threads=int(os.environ.get("OMP_NUM_THREADS", "2")),
                     torch=torch.__version__, python=platform.python_version()),
        min_ratio=min(ratios), max_ratio=max(ratios), grid=rows, refusal=refusal), indent=1) + "\n")
    print(f"ratios {min(ratios):.2f}–{max(ratios):.2f}; refusal {refusal}; wrote {OUT}")


if __name__ == "__main__":
    main()
