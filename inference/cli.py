"""``motion-adapters generate``: every generation option, validated, with the recipe embedded in the output."""

from __future__ import annotations

import argparse
import logging
import re
import time
from pathlib import Path

from motion_adapters import registry
from motion_adapters.clips.controls import PREPROCESSORS, compute_maps
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
from motion_adapters.inference.controlnets import ControlInput, check_control_numbers, control_inputs
from motion_adapters.inference.generator import DEFAULT_STRENGTH, VideoGenerator
from motion_adapters.inference.inputs import Frames, read_frame_input, read_picture
from motion_adapters.inference.ip_adapters import check_ip_scale
from motion_adapters.inference.options import GenerateOptions, check_fps, check_loras, parse_lora
from motion_adapters.inference.prompts import load_prompt_file
from motion_adapters.inference.sparsectrl import place_keyframes, read_keyframes
from motion_adapters.kinds import KIND_CONTROLNET, KIND_IP_ADAPTER, KIND_SD, KIND_SPARSECTRL
from motion_adapters.loading import folder_kind
from motion_adapters.schedulers import SCHEDULERS

log = logging.getLogger(__name__)
DEFAULTS = dict(frames=16, steps=25, guidance=7.5, scheduler="ddim", fps=8.0, motion_strength=1.0, free_init=0)
# errors name every option by its flag (--frames, not the API's num_frames)
LABELS = {"prompt": "--prompt", "negative_prompt": "--negative-prompt", "num_frames": "--frames",
          "height": "--height", "width": "--width", "num_inference_steps": "--steps", "guidance_scale": "--guidance",
          "seed": "--seed", "scheduler": "--scheduler", "context_length": "--context-length",
          "context_overlap": "--context-overlap", "free_init_iters": "--free-init",
          "motion_strength": "--motion-strength", "decode_chunk_size": "--decode-chunk-size", "fps": "--fps",
          "lora": "--lora", "low_vram": "--low-vram", "skip_memory_check": "--skip-memory-check",
          "video": "--video", "strength": "--strength", "controlnets": "--controlnet", "image": "--image",
          "keyframes": "--keyframe", "sparsectrl": "--sparsectrl", "ip_adapter": "--ip-adapter",
          "ip_image": "--ip-image", "ip_scale": "--ip-scale", "ip_encoder": "--ip-encoder"}
EXAMPLES = """examples:
  motion-adapters generate --base toonyou.safetensors --motion mm_sd_v15_v2.ckpt \\
      --prompt "a corgi running on the beach" --frames 16 --seed 42 --out corgi.mp4
  motion-adapters generate ... --lora v2_lora_ZoomIn.ckpt:0.8 --lora my_style.safetensors:0.6
  motion-adapters generate ... --frames 64 --context-length 16 --context-overlap 4      # long clip
  motion-adapters generate ... --frames 32 --prompt "0: a bud" --prompt "24: a blooming rose"   # travel
  motion-adapters generate ... --free-init 3 --motion-strength 1.2 --scheduler dpmpp_2m
  motion-adapters generate --from corgi.mp4 --out corgi_again.mp4                        # re-run a recipe
  motion-adapters generate ... --video dance.mp4 --strength 0.6 --prompt "a watercolor dancer"   # restyle
  motion-adapters generate ... --video dance.mp4 --strength 0.8 \
      --controlnet control_v11p_sd15_canny.pth:0.8 --control canny --save-maps              # + edges
  motion-adapters generate ... --controlnet cn_pose/ --control-video pose_maps/ \
      --controlnet control_v11f1p_sd15_depth.pth:0.5 --control-video depth.mp4            # two ControlNets
  motion-adapters generate ... --image first.png --sparsectrl v3_sd15_sparsectrl_rgb.ckpt \
      --prompt "a red square moving right"                                             # animate a picture
  motion-adapters generate ... --image start.png --keyframe last:end.png --sparsectrl ... # first + last
  motion-adapters generate ... --ip-adapter models/ip-adapter_sd15.bin --ip-image style.png --ip-scale 0.6
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
    g = p.add_argument_group("video to video and ControlNets")
    g.add_argument("--video", metavar="PATH", help="restyle this clip (a video file, a folder of frames, or an image): "
                   "video to video; its frames are resampled evenly to --frames (default: all of them) and resized "
                   "to --width x --height (default: the base's size), each change noted")
    g.add_argument("--strength", type=float, help="with --video: how far from the input to go, 0 = the input back "
                   "through the VAE, 1 = from noise (default 0.8); runs about strength x --steps steps")
    g.add_argument("--controlnet", action="append", metavar="PATH[:SCALE]",
                   help="a ControlNet the clip follows (diffusers folder, lllyasviel .pth/.safetensors, ours, or a "
                   "registered name), scale default 1.0; repeatable, each with its own --control-video or --control")
    g.add_argument("--control-video", action=_ControlSource, dest="controls", metavar="PATH",
                   help="control maps for the next --controlnet in order (a video or a folder of images), used as "
                   "they are; resampled and resized like --video")
    g.add_argument("--control", action=_ControlSource, dest="controls", metavar="NAME",
                   help="compute the next --controlnet's maps from --video: " + ", ".join(PREPROCESSORS)
                   + " (no download; depth, pose … need a model: give their maps with --control-video)")
    g.add_argument("--control-start", action="append", type=float, metavar="F",
                   help="fraction of the steps at which the ControlNet starts acting (default 0); once for all, or "
                   "once per --controlnet")
    g.add_argument("--control-end", action="append", type=float, metavar="F",
                   help="fraction of the steps at which it stops (default 1); once for all, or once per --controlnet")
    g.add_argument("--save-maps", action="store_true", help="also write each ControlNet's control maps beside --out "
                   "(NAME.control1.gif …), as the ControlNet saw them")
    g = p.add_argument_group("image prompts")
    g.add_argument("--image", metavar="PATH", help="animate this picture: the clip starts from it. With a SparseCtrl "
                   "RGB encoder (--sparsectrl, default: the one registered with an embedded base) it conditions frame "
                   "0; without one it is animated by video to video of the still picture at --strength")
    g.add_argument("--keyframe", action="append", metavar="INDEX:PATH",
                   help="a picture (or, for a scribble encoder, a line map) for frame INDEX, needing a SparseCtrl "
                   "encoder; INDEX counts from 0, 'last' (or --keyframe=-1:PATH) is the last frame; repeatable "
                   "(--image A --keyframe last:B goes from A to B)")
    g.add_argument("--sparsectrl", metavar="PATH[:SCALE]",
                   help="SparseCtrl encoder for --image/--keyframe (AnimateDiff v3's rgb or scribble .ckpt, a diffusers "
                   "folder, ours, or a registered name), scale default 1.0")
    g.add_argument("--ip-adapter", metavar="PATH", help="IP-Adapter for an image prompt (h94's ip-adapter_sd15, -plus, "
                   "-plus-face, -full-face, .bin or .safetensors); its CLIP image encoder is the image_encoder/ folder "
                   "beside it or in its parent folder, or --ip-encoder")
    g.add_argument("--ip-image", metavar="PATH", help="the image prompt (style or subject) for --ip-adapter; stacks "
                   "with the text prompt, LoRAs, ControlNets, --video and --image")
    g.add_argument("--ip-scale", type=float, metavar="S", help="how much the image prompt weighs beside the text, "
                   "0 to 2 (default 0.6; 1 = as trained, where the text barely counts)")
    g.add_argument("--ip-encoder", metavar="DIR", help="the IP-Adapter's CLIP image encoder folder (default: "
                   "image_encoder/ beside the IP-Adapter or in its parent folder)")
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


class _ControlSource(argparse.Action):
    """--control-video PATH and --control NAME, kept in command-line order: the i-th goes with the i-th
    --controlnet."""

    def __call__(self, parser, namespace, value, option_string=None):
        kind = "video" if option_string == "--control-video" else "preprocessor"
        items = list(getattr(namespace, self.dest, None) or [])
        items.append((kind, value, option_string))
        setattr(namespace, self.dest, items)


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
    _inputs_from_recipe(args, recipe)
    _warn_changed_models(recipe)


def _inputs_from_recipe(args, recipe: dict) -> None:
    """The video and the ControlNets (with their maps) of a recipe, unless given on the command line; an input
    that was an in-memory array cannot be re-read and is an error naming it."""
    video = recipe.get("video")
    if args.video is None and video:
        args.video = _recipe_input_path(video, "video", "--video")
        if args.strength is None:
            args.strength = recipe.get("strength")
    if args.controlnet is None and recipe.get("controlnets"):
        args.controlnet, args.controls, args.control_start, args.control_end = [], [], [], []
        for i, cn in enumerate(recipe["controlnets"], 1):
            args.controlnet.append(f"{cn['path']}:{cn.get('scale', 1.0)}")
            control = cn.get("control") or {}
            if control.get("preprocessor"):
                args.controls.append(("preprocessor", control["preprocessor"], "--control"))
            else:
                path = _recipe_input_path(control, f"ControlNet {i}'s control video", "--control-video")
                args.controls.append(("video", path, "--control-video"))
            args.control_start.append(cn.get("start", 0.0))
            args.control_end.append(cn.get("end", 1.0))
    _image_inputs_from_recipe(args, recipe)


def _image_inputs_from_recipe(args, recipe: dict) -> None:
    """The pictures, SparseCtrl encoder and image prompt of a recipe, unless given on the command line."""
    if args.image is None and recipe.get("image"):
        args.image = _recipe_input_path(recipe["image"], "image", "--image")
        if args.strength is None and args.sparsectrl is None and not recipe.get("sparsectrl"):
            args.strength = recipe.get("strength")
    if args.keyframe is None and recipe.get("keyframes"):
        args.keyframe = [f"{k['index']}:" + _recipe_input_path(k, f"keyframe {k['index']}", "--keyframe")
                         for k in recipe["keyframes"]]
    sc = recipe.get("sparsectrl")
    if args.sparsectrl is None and sc:
        args.sparsectrl = f"{sc.get('path') or sc.get('name')}:{sc.get('scale', 1.0)}"
    ip = recipe.get("ip_adapter")
    if args.ip_adapter is None and ip:
        args.ip_adapter = ip.get("path") or ip.get("name")
        if args.ip_image is None:
            args.ip_image = _recipe_input_path(ip.get("image") or {}, "IP-Adapter image", "--ip-image")
        if args.ip_scale is None:
            args.ip_scale = ip.get("scale")
        if args.ip_encoder is None:
            args.ip_encoder = ip.get("image_encoder")


def _recipe_input_path(entry: dict, what: str, flag: str) -> str:
    path = entry.get("path")
    if not path:
        raise MotionAdapterError(f"--from: the recipe's {what} was an in-memory array, not a file; give it with {flag}")
    if not Path(path).exists():
        raise MotionAdapterError(f"--from: the recipe's {what} {path}: expected an existing file, found nothing at "
                                 f"that path (give it with {flag})")
    if entry.get("sha256") and file_hash(path) != entry["sha256"]:
        log.warning("%s changed since the recipe was made (sha256 differs): frames will differ", path)
    return path


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
    _check_model_path("--base", base, KIND_SD, "an SD checkpoint", "a model path or registered name")


def _check_model_path(flag: str, src: str, kind: str, what: str, expected: str) -> None:
    """A model given by path exists, and a file's header says it is a ``kind`` (``what`` in the error)."""
    path = Path(src)
    if not path.exists():
        raise MotionAdapterError(f"{flag} {src}: expected {expected}, found nothing at that path")
    if path.is_dir():
        found = folder_kind(path)
        if found != kind:
            name = found.replace("_", " ").removeprefix("unsupported: ")
            raise MotionAdapterError(f"{flag} {src}: expected {what}, found a folder of {name}")
    else:
        try:
            found = file_kind(path)
        except AdapterFormatError as e:
            raise MotionAdapterError(f"{flag} {e}") from e
        if found != kind:
            name = found.replace("_", " ")
            raise MotionAdapterError(f"{flag} {src}: expected {what}, found "
                                     f"{name if name.startswith('unsupported') else f'a {name} file'}")


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


def _controls(args, video: Frames | None) -> list[ControlInput]:
    """The ControlNets of the command line, each with its maps (read now) or preprocessor, scale and step
    fractions, all checked before any model loads."""
    nets = [parse_lora(x, "--controlnet", "SCALE") for x in args.controlnet or []]
    sources = list(args.controls or [])
    if sources and not nets:
        raise MotionAdapterError(f"{sources[0][2]}: expected a --controlnet for it to steer, found none")
    if len(sources) != len(nets):
        raise MotionAdapterError(f"--controlnet: expected one --control-video or --control for each of the {len(nets)} "
                                 f"ControlNets (in order), found {len(sources)}")
    starts = _per_controlnet(args.control_start, len(nets), "--control-start", 0.0)
    ends = _per_controlnet(args.control_end, len(nets), "--control-end", 1.0)
    out = []
    for i, ((model, scale), (kind, value, flag)) in enumerate(zip(nets, sources, strict=True)):
        maps = read_frame_input(value, flag) if kind == "video" else None
        if kind == "preprocessor":
            _check_preprocessor(value, video)
        _check_controlnet(model)
        out.append(ControlInput(model, maps, scale, starts[i], ends[i], preprocessor=None if maps else value))
    return control_inputs(out, label="--controlnet")


def _check_preprocessor(name: str, video: Frames | None) -> None:
    if video is None:
        raise MotionAdapterError(f"--control {name}: computes maps from --video; expected --video, found none "
                                 "(or give the maps with --control-video)")
    if name.strip().lower() not in PREPROCESSORS:
        compute_maps(video.frames[:0], name, "--control")  # raises the preprocessor's own error


def _per_controlnet(values: list[float] | None, n: int, flag: str, default: float) -> list[float]:
    """One value for every ControlNet, or one per ControlNet."""
    values = list(values or [])
    if len(values) in (0, 1):
        return (values or [default]) * n
    if len(values) != n:
        raise MotionAdapterError(f"{flag}: expected one value for all ControlNets or one for each of the {n}, found "
                                 f"{len(values)}")
    return values


def _check_controlnet(model: str) -> None:
    """A ControlNet given as a file is one (told from its header, before anything loads)."""
    _check_kind("--controlnet", model, KIND_CONTROLNET, "a ControlNet")


def _keyframes(args) -> dict[int, str]:
    """--keyframe INDEX:PATH values by index ('last' is -1), checked before anything loads."""
    out: dict[int, str] = {}
    for text in args.keyframe or []:
        index, sep, path = text.partition(":")
        word = index.strip().lower()
        if not sep or not path or not (word == "last" or word.lstrip("-").isdigit()):
            raise MotionAdapterError(f"--keyframe {text}: expected INDEX:PATH (a frame number, or 'last'), found "
                                     f"{text!r}")
        at = -1 if word == "last" else int(word)
        if at in out:
            raise MotionAdapterError(f"--keyframe {text}: frame {index} already has a picture; expected one per frame")
        out[at] = path
    return out


def _image_prompt_args(args, num_frames: int) -> dict:
    """The image-prompt arguments of ``generate``, every picture read and every file and number checked before a
    model loads."""
    pictures = read_keyframes(args.image, _keyframes(args), LABELS)
    place_keyframes(pictures, num_frames, LABELS)
    sparsectrl, scale = parse_lora(args.sparsectrl, "--sparsectrl", "SCALE") if args.sparsectrl else (None, 1.0)
    check_control_numbers("--sparsectrl", scale, 0.0, 1.0)
    if args.ip_scale is not None:
        check_ip_scale("--ip-scale", args.ip_scale)
    if sparsectrl is not None:
        _check_kind("--sparsectrl", sparsectrl, KIND_SPARSECTRL, "a SparseCtrl encoder")
    if args.ip_adapter is not None:
        _check_kind("--ip-adapter", args.ip_adapter, KIND_IP_ADAPTER, "an IP-Adapter")
        if args.ip_image is None:
            raise MotionAdapterError(f"--ip-adapter {args.ip_adapter}: expected an image prompt (--ip-image) for it, "
                                     "found none")
    else:
        for flag, value in (("--ip-image", args.ip_image), ("--ip-scale", args.ip_scale),
                            ("--ip-encoder", args.ip_encoder)):
            if value is not None:
                raise MotionAdapterError(f"{flag}: an image prompt needs an IP-Adapter; expected --ip-adapter, found "
                                         "none")
    return dict(image=pictures.pop(0, None) if args.image else None, keyframes=pictures or None,
                sparsectrl=sparsectrl, sparsectrl_scale=scale, ip_adapter=args.ip_adapter,
                ip_image=read_picture(args.ip_image, "--ip-image") if args.ip_image else None,
                ip_scale=args.ip_scale, ip_encoder=args.ip_encoder)


def _check_kind(flag: str, model: str, kind: str, what: str) -> None:
    """A model given as a registered name or a file is of ``kind`` (told from its header, before anything loads)."""
    if registry.is_registered(model):
        found = registry.get(model).kind
        if found != kind:
            raise MotionAdapterError(f"{flag} {model}: expected {what}, found the registered "
                                     f"{found.replace('_', ' ')} {model}")
        return
    _check_model_path(flag, model, kind, what, f"{what} path or registered name")


def _map_paths(args, out: Path, n: int) -> list[Path]:
    """Where --save-maps writes each ControlNet's maps: beside --out, checked like it."""
    if not args.save_maps:
        return []
    if n == 0:
        raise MotionAdapterError("--save-maps: expected a --controlnet whose maps to save, found none")
    paths = [out.with_name(f"{out.stem}.control{i}{out.suffix}") for i in range(1, n + 1)]
    for p in paths:
        check_destination(p, overwrite=args.overwrite, label="--save-maps", want_dir=p.suffix == "",
                          replaceable=is_frame_folder)
    return paths


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
    video = read_frame_input(args.video, "--video") if args.video else None
    frames_default = len(video.frames) if video is not None else reg.get("num_frames", DEFAULTS["frames"])
    opts = GenerateOptions.check(
        prompt=prompt, negative_prompt=args.negative_prompt,
        num_frames=_given(args.frames, frames_default),
        height=_given(args.height, reg.get("height")), width=_given(args.width, reg.get("width")),
        num_inference_steps=_given(args.steps, reg.get("num_inference_steps", DEFAULTS["steps"])),
        guidance_scale=_given(args.guidance, reg.get("guidance_scale", DEFAULTS["guidance"])),
        seed=args.seed, scheduler=args.scheduler or DEFAULTS["scheduler"], context_length=args.context_length,
        context_overlap=args.context_overlap, free_init_iters=args.free_init or 0,
        motion_strength=_given(args.motion_strength, DEFAULTS["motion_strength"]),
        decode_chunk_size=args.decode_chunk_size, labels=LABELS,
        strength=_given(args.strength, DEFAULT_STRENGTH) if video is not None else args.strength)
    if opts.strength is not None and video is None and args.image is None:
        raise MotionAdapterError("--strength: applies to video to video; expected --video (or --image without a "
                                 "SparseCtrl encoder) with it, found none")
    controls = _controls(args, video)
    image_args = _image_prompt_args(args, opts.num_frames)
    fps = check_fps(_given(args.fps, reg.get("fps", DEFAULTS["fps"])), labels=LABELS)
    out = _output(args, opts)
    map_paths = _map_paths(args, out, len(controls))
    loras = check_loras([parse_lora(x, "--lora") for x in (args.lora or [])], labels=LABELS)
    motion = _motion(args, base)
    t0 = time.perf_counter()
    gen = VideoGenerator(base=base, motion=motion, device=args.device, dtype=args.dtype,
                         base_config=args.base_config, low_vram=bool(args.low_vram))
    if loras:
        gen.set_loras(loras)
    t1 = time.perf_counter()
    result = gen.generate(**opts.as_kwargs(), video=video, controlnets=controls, **image_args, progress=True,
                          check_memory=not args.skip_memory_check, labels=LABELS)
    recipe = {**result.recipe, "fps": fps}
    write_clip(result.frames, out, fps=fps, recipe=recipe)
    for path, maps, entry in zip(map_paths, result.control_maps, recipe["controlnets"], strict=False):
        write_clip(maps, path, fps=fps, recipe={"control_maps_of": str(out), "controlnet": entry})
    t2 = time.perf_counter()
    print(f"wrote {out} ({result.frames.shape[0]} frames, {result.frames.shape[2]}x{result.frames.shape[1]}, "
          f"seed {opts.seed}) in {t2 - t0:.1f}s (load {t1 - t0:.1f}s, generate {t2 - t1:.1f}s)")
    return 0
