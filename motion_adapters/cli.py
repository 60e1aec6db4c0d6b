"""The ``motion-adapters`` command line: the top of the package, dispatching to every subpackage's commands."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import traceback

from motion_adapters import __version__, registry
from motion_adapters.app.cli import add_app_parser
from motion_adapters.clips.curate_cli import add_curate_parser
from motion_adapters.clips.eval_cli import add_eval_parser
from motion_adapters.convert import convert
from motion_adapters.errors import MotionAdapterError
from motion_adapters.files import DiskFullError, free_bytes
from motion_adapters.inference.cli import add_generate_parser
from motion_adapters.loading import inspect_path
from motion_adapters.logs import setup_cli_logging
from motion_adapters.report import print_report
from motion_adapters.shapes.cli import EVAL_TOY, add_toy_parser
from motion_adapters.training.cli import add_train_parser


def cmd_inspect(args) -> int:
    for path in args.files:  # a file that is missing or not a model is an error naming it (exit status 2)
        report = inspect_path(path)
        if args.json:
            print(json.dumps(report, indent=2, default=str))
        else:
            print_report(report)
    return 0


def cmd_convert(args) -> int:
    out = convert(args.src, args.dst, args.to, config=args.config, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


def cmd_models(args) -> int:
    rows = registry.list_models()
    if args.json:
        print(json.dumps({"models": rows}, indent=2))
        return 0
    print("embedded models:")
    for r in rows:
        size = f"{r['size_bytes'] / 1e6:.1f} MB" if r["present"] else "not built"
        print(f"  {r['name']:<18} {r['kind']:<14} {size:>10}  {r['description']}")
        print(f"  {'':<18} {r['path']}")
    for hint in sorted({r["build_hint"] for r in rows if not r["present"] and r["build_hint"]}):
        print(hint)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="motion-adapters",
        description="AnimateDiff motion modules and LoRAs for any SD1.5 checkpoint: inspect, convert, generate, "
        "train, curate, evaluate, and the studio web UI (app). Every command explains its flags with --help.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logs")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of its one-line message")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="tell what a weight file or folder is",
                       description="Report kind (motion module / motion LoRA / spatial LoRA / ControlNet / SparseCtrl "
                       "encoder / IP-Adapter / SD checkpoint), source layout, version (v1/v2/v3/SDXL-beta), "
                       "channels, mid block, positional-encoding length, parameter count, dtype, LoRA rank, "
                       "ControlNet and SparseCtrl control kind (SparseCtrl: rgb or scribble) and conditioning "
                       "channels, IP-Adapter variant (plain / plus / plus-face / full-face), image tokens and "
                       "the image-encoder width it needs, and embedded metadata. Reads offline only; "
                       ".ckpt files are opened with torch.load(weights_only=True).")
    p.add_argument("files", nargs="+", help="weight files (.safetensors/.ckpt/.pt) or diffusers folders")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("convert", help="convert between our, original and diffusers layouts",
                       description="Read SRC in any supported layout and write DST. Motion modules: ours "
                       "(.safetensors with metadata), original (AnimateDiff layout with pos_encoder.pe, "
                       ".safetensors or .ckpt), diffusers (MotionAdapter folder). LoRAs: ours, original "
                       "(AnimateDiff processor layout), diffusers (PEFT layout), kohya (spatial LoRAs only). "
                       "SD checkpoints: original (single-file LDM) or diffusers (folder). ControlNets: ours, original "
                       "(lllyasviel layout, .safetensors or .pth) or diffusers (ControlNetModel folder). SparseCtrl "
                       "encoders: ours, original (AnimateDiff v3 layout with pos_encoder.pe, .safetensors or "
                       ".ckpt) or diffusers (SparseControlNetModel folder). IP-Adapters: ours or original (h94 "
                       "layout, .safetensors with image_proj./ip_adapter. keys).")
    p.add_argument("src", help="source file or folder")
    p.add_argument("dst", help="destination file (.safetensors/.ckpt) or folder (for --to diffusers)")
    p.add_argument("--to", required=True, choices=["ours", "original", "diffusers", "kohya"],
                   help="target layout")
    p.add_argument("--config", default=None,
                   help="architecture of SRC when the file cannot tell: a diffusers SD folder for a single-file "
                   "checkpoint that is not standard SD1.5, or a MotionAdapter / ControlNetModel / "
                   "SparseControlNetModel config.json or folder for a motion module, single-file ControlNet or "
                   "SparseCtrl encoder with non-default heads or groups")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing DST: a file, or a folder that is empty or a model folder (swapped in "
                   "atomically); another folder, or SRC itself, is never replaced")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("models", help="list the embedded (registered) models",
                       description="Short names usable wherever a model path is (--base, --motion, --lora, "
                       "VideoGenerator, training configs): kind, size and whether the weights are built.")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_models)


    add_generate_parser(sub)
    add_train_parser(sub)
    add_curate_parser(sub)
    add_eval_parser(sub, suites={"toy": EVAL_TOY})
    add_toy_parser(sub)
    add_app_parser(sub)
    return parser


EXIT_OS_ERROR, EXIT_BAD_INPUT, EXIT_BUG, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 1, 2, 70, 130, 141
_OS_ERRORS = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
              errno.EISDIR: "is a folder; expected a file", errno.ENOTDIR: "expected a folder, found a file",
              errno.ENOENT: "no such file or folder", errno.EROFS: "read-only file system",
              errno.ENAMETOOLONG: "file name too long", errno.EEXIST: "exists already"}


def describe_os_error(e: OSError) -> str:
    """One line for an OS error: disk full with the free space, or what happened to which path."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return str(DiskFullError(e.filename or "?", free_bytes(e.filename or ".")))
    what = _OS_ERRORS.get(e.errno, e.strerror or str(e) or type(e).__name__)
    return f"{e.filename}: {what}" if e.filename else what


def exit_status(e: BaseException) -> tuple[int, str]:
    """The exit status and the one line an error ends a command with."""
    if isinstance(e, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(e, MotionAdapterError):
        return (EXIT_OS_ERROR if isinstance(e, DiskFullError) else EXIT_BAD_INPUT), f"error: {e}"
    if isinstance(e, OSError):
        return EXIT_OS_ERROR, f"error: {describe_os_error(e)}"
    return EXIT_BUG, f"error: this is a bug in motion-adapters {__version__}; please report it with the traceback above"


def run_command(args) -> int:
    """Run a parsed command; the project's errors and OS errors become one line on stderr (a traceback
    only with ``--debug``, or for an error that is a bug)."""
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `... | head`: the reader has gone; leave quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (Exception, KeyboardInterrupt) as e:
        if args.debug:
            raise
        status, line = exit_status(e)
        if status == EXIT_BUG:
            traceback.print_exc()
        print(line, file=sys.stderr)
        return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    setup_cli_logging("-v" in argv or "--verbose" in argv)
    parser = build_parser()
    args = parser.parse_args([a for a in argv if a != "--debug"])  # --debug is accepted anywhere
    args.debug = "--debug" in argv
    return run_command(args)


if __name__ == "__main__":  # python -m motion_adapters.cli, as python -m motion_adapters
    sys.exit(main())
