"""``motion-adapters generate``: every generation option, validated, with the recipe embedded in the output."""

from __future__ import annotations

import argparse
import logging
import re
import time
from pathlib import Path

from motion_adapters import registry
from motion_adapters.clips.export import (
    check_output_path,
    is_frame_folder,
    read_recipe,
    sidecar_path,
    write_clip,
)
from motion_adapters.clips.recipe import file_hash
from motion_adapters.errors import AdapterFormatError, MotionAdapterError
from motion_adapters.files import check_destination
from motion_adapters.headers import file_kind
from motion_adapters.inference.generator import VideoGenerator
from motion_adapters.inference.options import GenerateOptions, check_fps, check_loras, parse_lora
from motion_adapters.inference.prompts import load_prompt_file
from motion_adapters.kinds import KIND_SD
from motion_adapters.schedulers import SCHEDULERS

log = logging.getLogger(__name__)
DEFAULTS = dict(frames=16, steps=25, guidance=7.5, scheduler="ddim", fps=8.0, motion_strength=1.0, free_init=0)
# errors name every option by its flag (--frames, not the API's num_frames)
LABELS = {"prompt": "--prompt", "negative_prompt": "--negative-prompt", "num_frames": "--frames",
          "height": "--height", "width": "--width", "num_inference_steps": "--steps", "guidance_scale": "--guidance",
          "seed": "--seed", "scheduler": "--scheduler", "context_length": "--context-length",
          "context_overlap": "--context-overlap", "free_init_iters": "--free-init",
          "motion_strength": "--motion-strength", "decode_chunk_size": "--decode-chunk-size", "fps": "--fps",
          "lora": "--lora", "low_vram": "--low-vram", "skip_memory_check": "--skip-memory-check"}
EXAMPLES = """examples:
  motion-adapters generate --base toonyou.safetensors --motion mm_sd_v15_v2.ckpt \\
      --prompt "a corgi running on the beach" --frames 16 --seed 42 --out corgi.mp4
  motion-adapters generate ... --lora v2_lora_ZoomIn.ckpt:0.8 --lora my_style.safetensors:0.6
  motion-adapters generate ... --frames 64 --context-length 16 --context-overlap 4      # long clip
  motion-adapters generate ... --frames 32 --prompt "0: a bud" --prompt "24: a blooming rose"   # travel
  motion-adapters generate ... --free-init 3 --motion-strength 1.2 --scheduler dpmpp_2m
  motion-adapters generate --from corgi.mp4 --out corgi_again.mp4                        # re-run a recipe
"""


def add_generate_parser(sub) -> None:
    p = sub.add_parser(
        "generate", help="make a clip (text to video)", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Generate a video clip with an SD1.5 base and an AnimateDiff motion module. The recipe "
        "(prompts, seed, sampler, model names and hashes, sizes, toolkit version) is embedded in the output "
        "file and written beside it as JSON; --from re-runs it.")
    g = p.add_argument_group("prompt")
    g.add_argument("--prompt", action="append", metavar="TEXT",
                   help="the prompt; repeat as 'FRAME: text' for prompt travel (e.g. --prompt '0: a bud' "
                   "--prompt '24: a rose'); prompts over 77 tokens are encoded in chunks")
    g.add_argument("--prompt-file", metavar="YAML", help="prompt travel as a YAML map {frame: prompt}")
    g.add_argument("--negative-prompt", metavar="TEXT", help="what to steer away from (default: none)")
    g = p.add_argument_group("models")
    g.add_argument("--base", help="SD1.5 base: diffusers folder, single-file .safetensors/.ckpt, a registered "
                   "name (`motion-adapters models`), or a Hub id (online only); default: the embedded default "
                   "base when built")
    g.add_argument("--base-config", metavar="DIR", help="diffusers folder describing a single-file base that is "
                   "not standard SD1.5")
    g.add_argument("--motion", help="motion module: any AnimateDiff layout (v1/v2/v3, .ckpt/.safetensors, "
                   "diffusers folder) or a registered name; 'none' = no motion module (independent frames); "
                   "default with an embedded base: the motion module registered with it")
    g.add_argument("--lora", action="append", metavar="PATH[:WEIGHT]", default=None,
                   help="motion or spatial LoRA (recognised from the file), weight default 1.0; repeatable")
    g = p.add_argument_group("clip")
    g.add_argument("--frames", type=int, help=f"number of frames (default {DEFAULTS['frames']}); more than the "
                   "motion module's cap turns on context windows")
    g.add_argument("--height", type=int, help="height in pixels, a multiple of 8 (default: the base's size)")
    g.add_argument("--width", type=int, help="width in pixels, a multiple of 8 (default: the base's size)")
    g.add_argument("--fps", type=float, help=f"frames per second of the output (default {DEFAULTS['fps']:g})")
    g.add_argument("--out", help="output: .gif, .mp4, .webm, .webp, or a folder for PNG frames "
                   "(default: outputs/<seed>-<prompt>.gif, numbered so no earlier clip is replaced); an existing "
                   "file or folder is refused unless --overwrite")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --out (a PNG-frame folder is "
                   "replaced whole; a folder holding other files never is)")
    g = p.add_argument_group("sampling")
    g.add_argument("--steps", type=int, help=f"denoising steps (default {DEFAULTS['steps']})")
    g.add_argument("--guidance", type=float, help=f"classifier-free guidance scale (default {DEFAULTS['guidance']})")
    g.add_argument("--seed", type=int, help="random seed (default: a random one, printed and recorded)")
    g.add_argument("--scheduler", metavar="NAME", help="sampler (default ddim, AnimateDiff's linear betas): "
                   + "; ".join(f"{k} = {v}" for k, v in SCHEDULERS.items()))
    g.add_argument("--motion-strength", type=float, help="scale of the motion modules' residual: 0 = "
                   "independent frames, 1 = as trained (default), >1 exaggerates")
    g.add_argument("--free-init", type=int, metavar="N", help="FreeInit iterations (0 = off, default); costs N× time")
    g = p.add_argument_group("long clips")
    g.add_argument("--context-length", type=int, help="frames per context window (FreeNoise; default 16 or the "
                   "module's cap when --frames exceeds it)")
    g.add_argument("--context-overlap", type=int, help="frames shared by neighbouring windows (default 1/4 of "
                   "the context length)")
    g = p.add_argument_group("device and memory")
    g.add_argument("--device", help="cuda, cuda:1, cpu … (default: cuda when available)")
    g.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], help="default fp16 on CUDA, fp32 on CPU")
    g.add_argument("--low-vram", action="store_true", default=None,
                   help="model CPU offload (CUDA), VAE slicing/tiling, decode 2 frames at a time")
    g.add_argument("--decode-chunk-size", type=int, help="frames decoded by the VAE at once (default 16)")
    g.add_argument("--skip-memory-check", action="store_true",
                   help="start even when the memory estimate says the clip will not fit (the check refuses, "
                   "before any step, a clip that needs more memory than the device has available)")
    g = p.add_argument_group("reproduce")
    g.add_argument("--from", dest="from_file", metavar="FILE",
                   help="re-run the recipe of a clip (or its .json); flags given here override it")
    p.set_defaults(func=cmd_generate)


def _from_recipe(args, recipe: dict) -> None:
    """Fill every option not given on the command line from a recipe."""
    def take(attr, value):
        if getattr(args, attr) is None and value is not None:
            setattr(args, attr, value)

    prompt = recipe.get("prompt")
    if args.prompt is None and args.prompt_file is None and prompt is not None:
        args.prompt = [f"{k}: {v}" for k, v in prompt.items()] if isinstance(prompt, dict) else [prompt]
    take("negative_prompt", recipe.get("negative_prompt"))
    take("base", (recipe.get("base") or {}).get("path"))
    take("motion", (recipe.get("motion") or {}).get("path"))
    if args.lora is None and recipe.get("loras"):
        args.lora = [f"{lo['path']}:{lo['weight']}" for lo in recipe["loras"]]
    for attr, key in [("frames", "num_frames"), ("height", "height"), ("width", "width"), ("fps", "fps"),
                      ("steps", "num_inference_steps"), ("guidance", "guidance_scale"), ("seed", "seed"),
                      ("scheduler", "scheduler"), ("motion_strength", "motion_strength"),
                      ("free_init", "free_init_iters"), ("context_length", "context_length"),
                      ("context_overlap", "context_overlap"), ("device", "device"),
                      ("decode_chunk_size", "decode_chunk_size")]:
        take(attr, recipe.get(key))
    if args.dtype is None and recipe.get("dtype"):
        args.dtype = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}.get(recipe["dtype"])
    _warn_changed_models(recipe)


def _warn_changed_models(recipe: dict) -> None:
    entries = [recipe.get("base"), recipe.get("motion"), *(recipe.get("loras") or [])]
    for e in filter(None, entries):
        if e.get("sha256") and Path(e["path"]).exists() and file_hash(e["path"]) != e["sha256"]:
            log.warning("%s changed since the recipe was made (sha256 differs): frames will differ", e["path"])


def _default_out(seed: int, prompt) -> Path:
    text = prompt if isinstance(prompt, str) else next(iter(prompt.values()))
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "clip"
    return Path("outputs") / f"{seed}-{slug}.gif"


def _base(args) -> str:
    """The base from the flags: the registered default when built."""
    if args.base is not None:
        return args.base
    default = registry.default("base")
    if default is None or not registry.is_available(default):
        hint = f" (the embedded default {default} is not built: {registry.get(default).build_hint})" \
            if default else ""
        raise MotionAdapterError(f"--base: expected a model path or registered name, found none{hint}")
    return default


def _motion(args, base: str) -> str | None:
    """The motion module from the flags (``--motion none`` → None), else the one registered with the base;
    a base given as a path is checked first, so a wrong --base is not blamed on --motion."""
    if not registry.is_registered(base):
        _check_base(base)
    motion = args.motion
    if motion is None:
        motion = registry.default_motion_for(base)
        if motion is None or not registry.is_available(motion):
            raise MotionAdapterError(f"--motion: expected a motion module for the base {base} (a path, a registered "
                                     "name, or 'none' for independent frames), found none: only embedded bases "
                                     "come with a default")
    return None if motion == "none" else motion


def _check_base(base: str) -> None:
    """A base given as a path is a model file or folder, told from its header (before anything loads)."""
    path = Path(base)
    if not path.exists():
        raise MotionAdapterError(f"--base {base}: expected a model path or registered name, found nothing at that "
                                 "path")
    if path.is_file():
        try:
            kind = file_kind(path)
        except AdapterFormatError as e:
            raise MotionAdapterError(f"--base {e}") from e
        if kind != KIND_SD:
            raise MotionAdapterError(f"--base {base}: expected an SD checkpoint, found a {kind.replace('_', ' ')} "
                                     "file")


def _output(args, opts: GenerateOptions) -> Path:
    """The output path, checked before anything loads: a new name unless --overwrite (a PNG-frame folder is
    replaced whole, never mixed with older frames); the default name never replaces an earlier clip."""
    if args.out:
        out = check_output_path(args.out)
        check_destination(out, overwrite=args.overwrite, label="--out", want_dir=out.suffix == "",
                          replaceable=is_frame_folder)
        return out
    out = _default_out(opts.seed, opts.prompt)
    n = 1
    while out.exists() or sidecar_path(out).exists():
        n += 1
        out = out.with_name(f"{_default_out(opts.seed, opts.prompt).stem}-{n}.gif")
    return out


def _given(value, default):
    return value if value is not None else default


def cmd_generate(args) -> int:
    if args.from_file:
        _from_recipe(args, read_recipe(args.from_file))
    if args.prompt_file:
        prompt = load_prompt_file(args.prompt_file, "--prompt-file")
    elif args.prompt:
        prompt = args.prompt
    else:
        raise MotionAdapterError("--prompt: expected a prompt (or --prompt-file / --from), found none")
    base = _base(args)
    reg = registry.generation_defaults(base)
    opts = GenerateOptions.check(
        prompt=prompt, negative_prompt=args.negative_prompt,
        num_frames=_given(args.frames, reg.get("num_frames", DEFAULTS["frames"])),
        height=_given(args.height, reg.get("height")), width=_given(args.width, reg.get("width")),
        num_inference_steps=_given(args.steps, reg.get("num_inference_steps", DEFAULTS["steps"])),
        guidance_scale=_given(args.guidance, reg.get("guidance_scale", DEFAULTS["guidance"])),
        seed=args.seed, scheduler=args.scheduler or DEFAULTS["scheduler"], context_length=args.context_length,
        context_overlap=args.context_overlap, free_init_iters=args.free_init or 0,
        motion_strength=_given(args.motion_strength, DEFAULTS["motion_strength"]),
        decode_chunk_size=args.decode_chunk_size, labels=LABELS)
    fps = check_fps(_given(args.fps, reg.get("fps", DEFAULTS["fps"])), labels=LABELS)
    out = _output(args, opts)
    loras = check_loras([parse_lora(x, "--lora") for x in (args.lora or [])], labels=LABELS)
    motion = _motion(args, base)
    t0 = time.perf_counter()
    gen = VideoGenerator(base=base, motion=motion, device=args.device, dtype=args.dtype,
                         base_config=args.base_config, low_vram=bool(args.low_vram))
    if loras:
        gen.set_loras(loras)
    t1 = time.perf_counter()
    result = gen.generate(**opts.as_kwargs(), progress=True, check_memory=not args.skip_memory_check,
                          labels=LABELS)
    recipe = {**result.recipe, "fps": fps}
    write_clip(result.frames, out, fps=fps, recipe=recipe)
    t2 = time.perf_counter()
    print(f"wrote {out} ({result.frames.shape[0]} frames, {result.frames.shape[2]}x{result.frames.shape[1]}, "
          f"seed {opts.seed}) in {t2 - t0:.1f}s (load {t1 - t0:.1f}s, generate {t2 - t1:.1f}s)")
    return 0
