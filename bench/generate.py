"""Generation benchmark: our VideoGenerator vs diffusers' AnimateDiffPipeline built the ordinary way.

Same weights, same seed, one run: frames must be identical (max abs diff ≤ 1e-4) and our time within 2 % of
diffusers' (median over alternating repeats); the same for video to video, one ControlNet, both together, a
SparseCtrl first frame and an IP-Adapter image prompt against diffusers' pipelines of those modes
(``--modes``). Then the peak memory of a long clip generated in one piece vs with FreeNoise context windows, each in a fresh subprocess. Models are random-weight SD1.5-layout UNets of a
"small" size (built locally, no download). Writes ``bench/results/generate.json``.
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
ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))  # the tiny-model builders are the test suite's (tests/tiny_models.py)
WORK = ROOT / "work" / "generate"
SMALL_UNET = dict(block_out_channels=(64, 128, 128, 128), cross_attention_dim=128, attention_head_dim=8,
                  norm_num_groups=32, sample_size=16)
SMALL_MOTION = dict(block_out_channels=(64, 128, 128, 128), motion_norm_num_groups=32, motion_num_attention_heads=8)


def build_models(max_seq_long: int) -> dict[str, Path]:
    """Write a small SD1.5-layout base and two motion modules (caps 32 and ``max_seq_long``)."""
    import torch
    from diffusers import MotionAdapter, UNet2DConditionModel

    from tests.tiny_models import TINY_UNET, TINY_VAE, save_sd_folder, tiny_sd_components

    paths = {"base": WORK / "base", "mm": WORK / "mm32", "mm_long": WORK / f"mm{max_seq_long}"}
    if all(p.exists() for p in paths.values()):
        return paths
    torch.manual_seed(0)
    comps = tiny_sd_components(0)
    comps.unet = UNet2DConditionModel(**{**TINY_UNET, **SMALL_UNET})
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.tiny_models import TINY_TEXT

    comps.vae = AutoencoderKL(**{**TINY_VAE, "block_out_channels": (32, 64, 64, 64)})
    comps.text_encoder = CLIPTextModel(CLIPTextConfig(**{**TINY_TEXT, "hidden_size": 128, "intermediate_size": 256,
                                                         "projection_dim": 128}))
    save_sd_folder(comps, paths["base"])
    for key, length in (("mm", 32), ("mm_long", max_seq_long)):
        torch.manual_seed(1)
        MotionAdapter(**SMALL_MOTION, motion_max_seq_length=length, use_motion_mid_block=False).save_pretrained(
            paths[key])
    return paths


def compare(paths: dict[str, Path], args) -> dict:
    import torch
    from diffusers import AnimateDiffPipeline, MotionAdapter, StableDiffusionPipeline

    from motion_adapters.inference import VideoGenerator

    call = dict(num_frames=args.frames, height=args.size, width=args.size, num_inference_steps=args.steps,
                guidance_scale=7.5)
    prompt = "a corgi running on the beach"
    ours = VideoGenerator(base=paths["base"], motion=paths["mm"], device="cpu")
    sd = StableDiffusionPipeline.from_pretrained(str(paths["base"]), safety_checker=None, local_files_only=True)
    theirs = AnimateDiffPipeline.from_pipe(sd, motion_adapter=MotionAdapter.from_pretrained(str(paths["mm"])))
    theirs.set_progress_bar_config(disable=True)

    def run_ours():
        return ours.generate(prompt, seed=0, **call).frames

    def run_theirs():
        return theirs(prompt, generator=torch.Generator("cpu").manual_seed(0), output_type="np", **call).frames[0]

    return {**_timed_pair(run_ours, run_theirs, args.repeats), "call": call}


def _timed_pair(run_ours, run_theirs, repeats: int) -> dict:
    """Equality and median times of two ways to make the same clip, alternating."""
    import numpy as np

    a, b = run_ours(), run_theirs()  # warm-up, and the equality check
    diff = float(np.abs(a - b).max())
    t_ours, t_theirs = [], []
    for _ in range(repeats):
        for fn, acc in ((run_theirs, t_theirs), (run_ours, t_ours)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    med_o, med_t = statistics.median(t_ours), statistics.median(t_theirs)
    return {"max_abs_diff": diff, "identical": diff <= 1e-4, "ours_s": t_ours, "diffusers_s": t_theirs,
            "ours_median_s": med_o, "diffusers_median_s": med_t, "time_ratio": med_o / med_t,
            "time_ratio_ok": med_o / med_t <= 1.02}


def compare_modes(paths: dict[str, Path], args) -> dict:
    """Video to video (strength 0.6), one ControlNet, and both: ours vs diffusers' pipeline of each mode."""
    import numpy as np
    import torch
    from diffusers import (
        AnimateDiffControlNetPipeline,
        AnimateDiffVideoToVideoControlNetPipeline,
        AnimateDiffVideoToVideoPipeline,
        ControlNetModel,
        MotionAdapter,
        StableDiffusionPipeline,
    )

    from motion_adapters.inference import VideoGenerator
    from motion_adapters.inference.controlnets import ControlInput

    size, frames, prompt = args.size, args.frames, "a corgi running on the beach"
    rng = np.random.default_rng(0)
    video = rng.random((frames, size, size, 3)).astype(np.float32)
    maps = (rng.random((frames, size, size, 3)) > 0.9).astype(np.float32)
    sd = StableDiffusionPipeline.from_pretrained(str(paths["base"]), safety_checker=None, local_files_only=True)
    adapter = MotionAdapter.from_pretrained(str(paths["mm"]))
    torch.manual_seed(2)
    controlnet = ControlNetModel.from_unet(sd.unet)
    with torch.no_grad():
        for p in controlnet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ours = VideoGenerator(base=paths["base"], motion=paths["mm"], device="cpu")
    common = dict(height=size, width=size, num_inference_steps=args.steps, guidance_scale=7.5)
    modes = {
        "video_to_video": (AnimateDiffVideoToVideoPipeline, {}, dict(video=video, strength=0.6),
                           dict(video=list(video), strength=0.6)),
        "controlnet": (AnimateDiffControlNetPipeline, dict(controlnet=controlnet),
                       dict(num_frames=frames, controlnets=[ControlInput(controlnet, maps)]),
                       dict(num_frames=frames, conditioning_frames=list(maps))),
        "video_to_video_controlnet": (AnimateDiffVideoToVideoControlNetPipeline, dict(controlnet=controlnet),
                                      dict(video=video, strength=0.6, controlnets=[ControlInput(controlnet, maps)]),
                                      dict(video=list(video), strength=0.6, conditioning_frames=list(maps))),
    }
    out = {}
    for name, (cls, extra, ours_kw, theirs_kw) in modes.items():
        theirs = cls.from_pipe(sd, motion_adapter=adapter, **extra)
        theirs.set_progress_bar_config(disable=True)
        out[name] = _timed_pair(
            lambda kw=ours_kw: ours.generate(prompt, seed=0, **common, **kw).frames,
            lambda p=theirs, kw=theirs_kw: p(prompt=prompt, generator=torch.Generator("cpu").manual_seed(0),
                                             output_type="np", **common, **kw).frames[0],
            args.repeats)
    out.update(compare_image_prompts(paths, args, sd, adapter, ours, common))
    out["call"] = {**common, "num_frames": frames}
    return out


def compare_image_prompts(paths: dict[str, Path], args, sd, adapter, ours, common: dict) -> dict:
    """A picture at frame 0 through a SparseCtrl RGB encoder, and an image prompt through an IP-Adapter: ours vs
    diffusers' SparseCtrl pipeline / ``load_ip_adapter`` (torch's global seed set before each of theirs, as their
    SparseCtrl VAE sampling needs)."""
    import copy

    import numpy as np
    import torch
    from diffusers import AnimateDiffPipeline, AnimateDiffSparseControlNetPipeline, SparseControlNetModel
    from PIL import Image

    from tests.tiny_models import tiny_image_encoder, tiny_ip_adapter

    size, frames, prompt = args.size, args.frames, "a corgi running on the beach"
    rng = np.random.default_rng(1)
    picture = Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8))
    unet = copy.deepcopy(sd.unet)
    unet.register_to_config(down_block_types=list(unet.config.down_block_types))  # from_unet edits it in place
    torch.manual_seed(3)
    encoder = SparseControlNetModel.from_unet(unet, conditioning_channels=4)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ip_dir = WORK / "ip" / "models"
    tiny_image_encoder(5).save_pretrained(str(ip_dir / "image_encoder"))
    torch.save(tiny_ip_adapter(sd.unet, "plain", seed=6), ip_dir / "ip-adapter_sd15.bin")
    sparse = AnimateDiffSparseControlNetPipeline.from_pipe(sd, motion_adapter=adapter, controlnet=encoder)
    ip = AnimateDiffPipeline.from_pipe(sd, motion_adapter=adapter)
    ip.load_ip_adapter(str(ip_dir.parent), subfolder="models", weight_name="ip-adapter_sd15.bin",
                       image_encoder_folder="image_encoder")
    ip.set_ip_adapter_scale(0.6)
    for pipe in (sparse, ip):
        pipe.set_progress_bar_config(disable=True)

    def theirs_sparse():
        torch.manual_seed(0)
        return sparse(prompt=prompt, generator=torch.Generator("cpu").manual_seed(0), output_type="np",
                      num_frames=frames, conditioning_frames=[picture], controlnet_frame_indices=[0],
                      **common).frames[0]

    def theirs_ip():
        return ip(prompt=prompt, generator=torch.Generator("cpu").manual_seed(0), output_type="np", num_frames=frames,
                  ip_adapter_image=picture, **common).frames[0]

    out = {"sparsectrl_first_frame": _timed_pair(
        lambda: ours.generate(prompt, seed=0, num_frames=frames, image=picture, sparsectrl=encoder, **common).frames,
        theirs_sparse, args.repeats)}
    ours.set_sparsectrl(None)
    out["ip_adapter"] = _timed_pair(
        lambda: ours.generate(prompt, seed=0, num_frames=frames, ip_adapter=ip_dir / "ip-adapter_sd15.bin",
                              ip_image=picture, **common).frames,
        theirs_ip, args.repeats)
    return out


def memory_worker(paths: dict[str, Path], frames: int, context: int | None, size: int, steps: int) -> None:
    """Peak RSS above the loaded-model baseline while generating (sampled every 5 ms in a thread)."""
    import threading

    import psutil

    from motion_adapters.inference import VideoGenerator

    gen = VideoGenerator(base=paths["base"], motion=paths["mm_long"], device="cpu")
    proc = psutil.Process()
    baseline = proc.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            done.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    gen.generate("a corgi running", num_frames=frames, height=size, width=size, num_inference_steps=steps,
                 seed=0, context_length=context, context_overlap=(context // 4) if context else None)
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    print(json.dumps({"generation_peak_mib": (peak[0] - baseline) / 2**20, "baseline_rss_mib": baseline / 2**20,
                      "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "seconds": seconds}))


def memory(paths, args) -> dict:
    out = {}
    for label, ctx in (("one_piece", None), ("context_windows", args.context)):
        cmd = [sys.executable, __file__, "--worker", str(ctx or 0), "--long-frames", str(args.long_frames),
               "--size", str(args.long_size), "--steps", "2"]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[label] = json.loads(res.stdout.strip().splitlines()[-1])
    out["peak_ratio_windows_vs_one_piece"] = (out["context_windows"]["generation_peak_mib"]
                                              / out["one_piece"]["generation_peak_mib"])
    out["frames"] = args.long_frames
    out["context_length"] = args.context
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=16, help="frames in the timing comparison (default 16)")
    p.add_argument("--size", type=int, default=128, help="pixel size of the timing comparison (default 128)")
    p.add_argument("--steps", type=int, default=4, help="denoising steps in the timing comparison (default 4)")
    p.add_argument("--repeats", type=int, default=5, help="alternating timed runs of each side (default 5)")
    p.add_argument("--long-frames", type=int, default=64, help="frames of the long clip (default 64)")
    p.add_argument("--long-size", type=int, default=128, help="pixel size of the long clip (default 128)")
    p.add_argument("--context", type=int, default=16, help="context window length for the long clip (default 16)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "generate.json", help="where the JSON goes")
    p.add_argument("--modes", action="store_true", help="only the mode rows (video to video, ControlNets, SparseCtrl, IP-Adapter), merged into --out")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count() or 2)
    paths = build_models(max(64, args.long_frames))
    if args.worker is not None:
        memory_worker(paths, args.long_frames, args.worker or None, args.size, args.steps)
        return
    import diffusers

    if args.modes:
        result = json.loads(args.out.read_text()) if args.out.exists() else {}
        result["modes"] = compare_modes(paths, args)
        for name, r in result["modes"].items():
            if name != "call":
                print(f"{name}: identical {r['identical']} ({r['max_abs_diff']:.2e}), ours {r['ours_median_s']:.2f}s vs "
                      f"diffusers {r['diffusers_median_s']:.2f}s -> ratio {r['time_ratio']:.3f}")
        result.setdefault("machine", {})["modes_date"] = time.strftime("%Y-%m-%d")
        args.out.write_text(json.dumps(result, indent=2))
        return
    result = {"compare": compare(paths, args), "long_clip_memory": memory(paths, args)}

    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                         "diffusers": diffusers.__version__, "date": time.strftime("%Y-%m-%d")}
    c, m = result["compare"], result["long_clip_memory"]
    print(f"frames identical: {c['identical']} (max abs diff {c['max_abs_diff']:.2e})")
    print(f"time: ours {c['ours_median_s']:.2f}s vs diffusers {c['diffusers_median_s']:.2f}s "
          f"-> ratio {c['time_ratio']:.3f} ({'PASS' if c['time_ratio_ok'] else 'FAIL'} ≤ 1.02)")
    print(f"long clip {m['frames']} frames: generation peak (above the loaded models) one piece "
          f"{m['one_piece']['generation_peak_mib']:.0f} MiB, windows of {m['context_length']} "
          f"{m['context_windows']['generation_peak_mib']:.0f} MiB "
          f"(ratio {m['peak_ratio_windows_vs_one_piece']:.2f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
