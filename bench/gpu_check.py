"""GPU check: run every CUDA code path once and record what it measured (``bench/results/gpu_check.json``).

1. ``toy_generate``: the embedded shapes world on CUDA in fp16 (the default there) vs fp32 vs the CPU; the
   held-out direction accuracy of ``--n`` clips on CUDA fp16; ``low_vram`` (model CPU offload) output and peak.
2. ``toy_train``: the motion trainer on CUDA: fp16 mixed precision + bitsandbytes AdamW8bit + gradient
   checkpointing, and ``run.low_vram`` (bf16); s/step, final loss, frozen base bitwise unchanged.
3. ``sd15_generate``: a random-weight SD1.5-size base (860 M UNet, SD VAE) + v3-size motion module through
   ``VideoGenerator``: 16 frames, 512², 25 DDIM steps, CFG, fp16 + SDPA; time and peak VRAM, with and without
   ``low_vram``.

The training-memory table at SD1.5 size is ``bench/train_memory.py --device cuda --unet sd15``.

    python bench/gpu_check.py [--n 32] [--out bench/results/gpu_check.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MiB = 2**20


def _peak_reset():
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def _peak_mib() -> float:
    import torch

    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / MiB


def env() -> dict:
    import torch

    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0),
           "bf16": torch.cuda.is_bf16_supported()}
    for name in ("diffusers", "transformers", "peft", "accelerate", "bitsandbytes", "xformers"):
        try:
            out[name] = __import__(name).__version__
        except Exception as e:  # noqa: BLE001 - recorded, not fatal
            out[name] = f"missing ({type(e).__name__})"
    return out


def toy_generate(n: int) -> dict:
    import numpy as np
    import torch

    from motion_adapters.inference import VideoGenerator
    from motion_adapters.shapes.eval_run import prompts_for, run_arm
    from motion_adapters.shapes.evaluate import evaluate_clip, summarize
    from motion_adapters.shapes.world import DIRECTIONS

    prompt = "a red circle moving right"
    out: dict = {}
    frames = {}
    for label, device, dtype in (("cpu_fp32", "cpu", "fp32"), ("cuda_fp32", "cuda", "fp32"), ("cuda_fp16", "cuda", None)):
        gen = VideoGenerator(device=device, dtype=dtype)
        gen.generate(prompt, seed=0)  # warm-up
        t0 = time.perf_counter()
        res = gen.generate(prompt, seed=0)
        out[f"{label}_seconds"] = time.perf_counter() - t0
        frames[label] = res.frames
        out[f"{label}_dtype"] = str(gen.pipe.unet.dtype)
        out[f"{label}_eval"] = {k: v for k, v in evaluate_clip((np.clip(res.frames, 0, 1) * 255).astype(np.uint8),
                                                               prompt).items()
                                if k in ("colour_pred", "colour_ok", "motion_pred", "motion_ok", "dx", "dy")}
    out["max_abs_diff_cuda_fp32_vs_cpu"] = float(np.abs(frames["cuda_fp32"] - frames["cpu_fp32"]).max())
    out["mean_abs_diff_cuda_fp16_vs_cpu"] = float(np.abs(frames["cuda_fp16"] - frames["cpu_fp32"]).mean())
    gen = VideoGenerator(device="cuda")
    t0 = time.perf_counter()
    s = summarize(run_arm(gen, prompts_for(DIRECTIONS, n), 0, look="light", hq=False))
    out["heldout_direction_cuda_fp16"] = {"n": n, "direction": s["direction"]["acc"], "colour": s["colour"]["acc"],
                                          "seconds": time.perf_counter() - t0}
    del gen
    try:
        _peak_reset()
        gen = VideoGenerator(device="cuda", low_vram=True)
        res = gen.generate(prompt, seed=0)
        out["low_vram_peak_mib"] = _peak_mib()
        out["low_vram_mean_abs_diff_vs_fp16"] = float(np.abs(res.frames - frames["cuda_fp16"]).mean())
    except Exception as e:  # noqa: BLE001 - keep the numbers above
        out["low_vram_error"] = f"{type(e).__name__}: {e}"
    torch.cuda.empty_cache()
    return out


def toy_train(steps: int) -> dict:
    import torch
    from safetensors.torch import load_file

    from motion_adapters.registry import model_path
    from motion_adapters.shapes.build import CONFIG_DIR
    from motion_adapters.shapes.data import write_dataset
    from motion_adapters.training.config import load_config
    from motion_adapters.training.trainer import train

    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    clips = write_dataset(work / "clips", kind="clips", n=64, seed=0, motions=("left", "right", "up", "down"))
    base = model_path("shapes-base")
    unet_file = base / "unet" / "diffusion_pytorch_model.safetensors"
    before = load_file(str(unet_file))
    out = {}
    variants = {
        "fp16+adamw8bit+ckpt": ["run.mixed_precision=fp16", "optim.optimizer=adamw8bit",
                                "run.gradient_checkpointing=true"],
        "low_vram": ["run.low_vram=true"],
        "fp32": [],
    }
    for name, extra in variants.items():
        values = {"data": {"path": str(clips.parent)}, "model": {"base": str(base)},
                  "run": {"output_dir": str(work / name.replace("+", "_"))}}
        cfg = load_config(CONFIG_DIR / "motion.yaml", values=values,
                          overrides=["run.device=cuda", f"run.max_steps={steps}", "run.checkpoint_every=100000",
                                     "run.progress=false", *extra])
        _peak_reset()
        t0 = time.perf_counter()
        summary = train(cfg)
        seconds = time.perf_counter() - t0
        log = [json.loads(x) for x in (Path(cfg.run.output_dir) / "log.jsonl").read_text().splitlines()]
        tail = [r["loss"] for r in log[-10:] if "loss" in r]
        step_s = sorted(r["seconds"] for r in log if "seconds" in r)
        out[name] = {"seconds": seconds, "step_seconds_median": step_s[len(step_s) // 2] if step_s else None,
                     "loss_first": log[0].get("loss"), "loss_last10_mean": sum(tail) / len(tail),
                     "peak_mib": _peak_mib(), "memory": summary.get("memory")}
    after = load_file(str(unet_file))
    out["frozen_base_bitwise_unchanged"] = all(torch.equal(before[k], after[k]) for k in before)
    return out


def sd15_generate(frames: int, size: int, steps: int) -> dict:
    import torch
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.tiny_models import TINY_TEXT, SDComponents, save_sd_folder

    assets = ROOT / "motion_adapters" / "assets"
    work = Path(tempfile.mkdtemp(prefix="gpu_sd15_"))
    torch.manual_seed(0)
    with torch.device("cuda"):
        unet = UNet2DConditionModel.from_config(json.loads((assets / "sd15/unet/config.json").read_text()))
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            sample_size=512)
        text = CLIPTextModel(CLIPTextConfig(**{**TINY_TEXT, "hidden_size": 768, "intermediate_size": 3072,
                                               "num_attention_heads": 12, "num_hidden_layers": 12,
                                               "projection_dim": 768}))
        adapter = MotionAdapter.from_config(json.loads((assets / "motion/v3/config.json").read_text()))
    comps = SDComponents(unet.cpu().eval(), vae.cpu().eval(), text.cpu().eval())
    save_sd_folder(comps, work / "base")
    adapter.cpu().save_pretrained(str(work / "mm"))
    out = {"unet_params_m": sum(p.numel() for p in unet.parameters()) / 1e6,
           "motion_params_m": sum(p.numel() for p in adapter.parameters()) / 1e6,
           "frames": frames, "size": size, "steps": steps}
    del unet, vae, text, adapter, comps
    for label, low in (("fp16", False), ("fp16_low_vram", True)):
        try:
            out[label] = _sd15_row(work, frames, size, steps, low)
        except Exception as e:  # noqa: BLE001 - keep the other row
            out[label] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
    return out


def _sd15_row(work: Path, frames: int, size: int, steps: int, low_vram: bool) -> dict:
    """Time and peak VRAM of one SD1.5-size clip through VideoGenerator (after a 2-step warm-up)."""
    import torch

    from motion_adapters.inference import VideoGenerator

    gen = VideoGenerator(base=work / "base", motion=work / "mm", device="cuda", low_vram=low_vram)
    gen.generation_defaults = {"num_frames": frames, "height": size, "width": size,
                               "num_inference_steps": steps, "guidance_scale": 7.5}
    gen.generate("a red circle", seed=0, num_inference_steps=2)
    _peak_reset()
    t0 = time.perf_counter()
    gen.generate("a red circle", seed=0)
    torch.cuda.synchronize()
    processors = gen.pipe.unet.attn_processors
    return {"seconds": time.perf_counter() - t0, "peak_mib": _peak_mib(),
            "attention": type(next(iter(processors.values()))).__name__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32, help="held-out clips for the CUDA direction check (default 32)")
    ap.add_argument("--train-steps", type=int, default=200, help="steps per CUDA training variant (default 200)")
    ap.add_argument("--sd15-frames", type=int, default=16, help="frames of the SD1.5-size clip (default 16)")
    ap.add_argument("--sd15-size", type=int, default=512, help="pixel size of the SD1.5-size clip (default 512)")
    ap.add_argument("--sd15-steps", type=int, default=25, help="denoising steps of the SD1.5-size clip (default 25)")
    ap.add_argument("--only", action="append", choices=["toy_generate", "toy_train", "sd15_generate"], default=None,
                    help="run only these checks (repeatable)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_check.json")
    a = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("bench/gpu_check.py: expected a CUDA GPU, found none (torch.cuda.is_available() is False)")
    result = {"env": env()}
    checks = {"toy_generate": lambda: toy_generate(a.n), "toy_train": lambda: toy_train(a.train_steps),
              "sd15_generate": lambda: sd15_generate(a.sd15_frames, a.sd15_size, a.sd15_steps)}
    for name, fn in checks.items():
        if a.only and name not in a.only:
            continue
        t0 = time.perf_counter()
        try:
            result[name] = fn()
        except Exception as e:  # noqa: BLE001 - every check reports, one failure does not hide the others
            result[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        result[name]["check_seconds"] = time.perf_counter() - t0
        print(name, json.dumps(result[name], indent=1, default=str)[:3000], flush=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
