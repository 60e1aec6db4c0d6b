"""Does the shapes silhouette ControlNet put the object where the silhouette is? (per frame, no motion module)

For ``--n`` held-out silhouettes (shapes-world stills of every shape, colour and direction, from seeds the
training data never used) the shapes base generates one 32×32 image with the ControlNet at scale 1 and at
scale 0 (= without it), same seed; the evaluator's object mask gives the generated object's centroid, which
is compared with the silhouette's. Prompts are the still's own caption, and the caption with the opposite
direction (the control must win). Prints the mean centroid distance in px (a frame with no object found
counts as a miss) and writes ``--json``.

``--clips N`` adds the video check with the motion module (diffusers' ``AnimateDiffControlNetPipeline``):
silhouettes of a clip moving one way, the prompt saying the opposite way; the evaluator's motion call of
the generated clip follows the control (scale 1) or the prompt (scale 0).

    python bench/controlnet_check.py --controlnet shapes/assets/shapes-silhouette-controlnet.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AnimateDiffControlNetPipeline,
    ControlNetModel,
    MotionAdapter,
    StableDiffusionControlNetPipeline,
    UNet2DConditionModel,
)
from PIL import Image
from safetensors import safe_open

from motion_adapters.clips.controls import compute_maps
from motion_adapters.loading import KIND_MOTION, load_adapter
from motion_adapters.schedulers import make_scheduler
from motion_adapters.shapes.data import render_clip, render_image
from motion_adapters.shapes.evaluate import as_frames, estimate_background, evaluate_clip, object_masks
from motion_adapters.shapes.models import toy_dir
from motion_adapters.shapes.world import COLOURS, DIRECTIONS, SHAPES, Spec, caption

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def load_controlnet(path: Path, base: str) -> ControlNetModel:
    """Our ``.safetensors`` (the config from the header, diffusers keys), or a training checkpoint folder of
    the shapes stage (``trainable.safetensors``: the stage's architecture, from the base UNet)."""
    if path.is_dir():
        path = path / "trainable.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        sd = {k: f.get_tensor(k).float() for k in f.keys() if "::" not in k}  # noqa: SIM118 - no __iter__
    if "motion_adapters.config" in meta:
        model = ControlNetModel.from_config(json.loads(meta["motion_adapters.config"]))
    else:
        unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
        model = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96))
    model.load_state_dict(sd)
    return model.eval()


def centroid(mask: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(mask)
    return None if len(xs) == 0 else np.array([xs.mean(), ys.mean()])


def generated_centroids(images: np.ndarray) -> list[np.ndarray | None]:
    out = []
    for img in images:
        f = as_frames(img)
        bg, noise = estimate_background(f)
        mask, _, _ = object_masks(f, bg, noise)
        out.append(centroid(mask[0]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--controlnet", required=True)
    ap.add_argument("--base", default=str(toy_dir() / "shapes-base"))
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=10_000)
    ap.add_argument("--json", default=None)
    ap.add_argument("--clips", type=int, default=0, help="also the video check on this many clips")
    ap.add_argument("--motion", default=str(toy_dir() / "shapes-motion.safetensors"))
    args = ap.parse_args()
    torch.manual_seed(0)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(args.base, controlnet=load_controlnet(Path(args.controlnet), args.base),
                                                             safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = make_scheduler("ddim")
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(args.seed)
    specs, maps, targets = [], [], []
    for i in range(args.n):
        spec = Spec(SHAPES[i % 3], list(COLOURS)[(i // 3) % 4], DIRECTIONS[(i // 12) % 4])
        img = render_image(spec, int(rng.integers(2**31 - 1)) + 1_000_000).astype(np.float32) / 255.0
        m = compute_maps(img[None], "silhouette")[0]
        specs.append(spec)
        maps.append(torch.from_numpy(m).permute(2, 0, 1))
        targets.append(centroid(m[..., 0] > 0.5))
    results = {}
    for prompt_kind in ("own caption", "opposite direction"):
        prompts = [caption(s if prompt_kind == "own caption" else s.with_(motion=OPPOSITE[s.motion])) for s in specs]
        for scale in (1.0, 0.0):
            found = []
            for start in range(0, args.n, 16):
                sl = slice(start, start + 16)
                gens = [torch.Generator().manual_seed(args.seed + j) for j in range(start, min(start + 16, args.n))]
                out = pipe(prompt=prompts[sl], image=torch.stack(maps[sl]), height=32, width=32,
                           num_inference_steps=args.steps, guidance_scale=args.guidance,
                           controlnet_conditioning_scale=scale, generator=gens, output_type="np")
                found += generated_centroids(np.asarray(out.images))
            d = [float(np.linalg.norm(g - t)) for g, t in zip(found, targets, strict=True) if g is not None]
            key = f"{prompt_kind}, scale {scale:g}"
            results[key] = {"mean_px": float(np.mean(d)) if d else float("nan"),
                            "median_px": float(np.median(d)) if d else float("nan"),
                            "within_3px": float(np.mean(np.array(d) <= 3.0)) if d else 0.0,
                            "missed": args.n - len(d), "n": args.n}
            print(f"{key}: mean {results[key]['mean_px']:.2f} px, median {results[key]['median_px']:.2f} px, "
                  f"≤3 px {results[key]['within_3px']:.0%}, no object {results[key]['missed']}/{args.n}", flush=True)
    if args.clips:
        results.update(video_check(pipe, args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def video_check(image_pipe: StableDiffusionControlNetPipeline, args) -> dict:
    """Silhouettes moving one way, prompt the opposite way: which one does the generated clip follow?"""
    mm = load_adapter(args.motion, expect=KIND_MOTION)
    adapter = MotionAdapter(**mm.config)
    missing, unexpected = adapter.load_state_dict(mm.state_dict, strict=False)
    assert not unexpected and all(k.endswith(".pe") for k in missing), (missing[:3], unexpected[:3])
    c = image_pipe.components
    pipe = AnimateDiffControlNetPipeline(vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"],
                                         unet=c["unet"], motion_adapter=adapter, controlnet=c["controlnet"],
                                         scheduler=make_scheduler("ddim"))
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(args.seed + 1)
    out = {}
    for scale in (1.0, 0.0):
        follows_control, follows_prompt = 0, 0
        for i in range(args.clips):
            spec = Spec(SHAPES[i % 3], list(COLOURS)[(i // 3) % 4], DIRECTIONS[i % 4])
            clip = render_clip(spec, int(rng.integers(2**31 - 1)) + 2_000_000).astype(np.float32) / 255.0
            maps = compute_maps(clip, "silhouette")
            frames_in = [Image.fromarray((m * 255).astype(np.uint8)) for m in maps]
            prompt = caption(spec.with_(motion=OPPOSITE[spec.motion]))
            res = pipe(prompt=prompt, conditioning_frames=frames_in, num_frames=len(frames_in), height=32, width=32,
                       num_inference_steps=args.steps, guidance_scale=args.guidance,
                       controlnet_conditioning_scale=scale, generator=torch.Generator().manual_seed(args.seed + i),
                       output_type="np")
            frames = np.asarray(res.frames[0], dtype=np.float32)
            called = evaluate_clip(frames, spec)["motion_pred"]
            follows_control += called == spec.motion
            follows_prompt += called == OPPOSITE[spec.motion]
        key = f"video, prompt opposite to the control, scale {scale:g}"
        out[key] = {"follows_control": follows_control / args.clips, "follows_prompt": follows_prompt / args.clips,
                    "n": args.clips}
        print(f"{key}: follows the control {follows_control}/{args.clips}, the prompt {follows_prompt}/"
              f"{args.clips}", flush=True)
    return out


if __name__ == "__main__":
    main()
