"""The shapes world's commands: ``toy build`` (train every embedded model with the training engine) and
``eval toy`` (the embedded models against the shapes-world targets)."""

from __future__ import annotations

import argparse
import json
import sys

from motion_adapters.clips.eval_cli import EvalSuite, no_nan
from motion_adapters.errors import MotionAdapterError
from motion_adapters.shapes.build import STAGES, build, format_summary
from motion_adapters.shapes.eval_run import eval_toy, table, write_json


def cmd_toy_build(args) -> int:
    summary = build(out=args.out, work=args.work, quick=args.quick, stages=args.stage, force=args.force,
                    progress=not args.no_progress)
    print(format_summary(summary))
    return 0


def add_toy_parser(subparsers) -> None:
    p = subparsers.add_parser("toy", help="the shapes world: build the embedded models",
                              description="The embedded offline shapes world (docs/shapes-world.md).")
    sub = p.add_subparsers(dest="toy_command", required=True)
    b = sub.add_parser(
        "build", help="train every shapes-world model from scratch (~70 min on 2 CPU cores)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Stages: " + ", ".join(STAGES) + ". Configs under shapes/configs/. Each stage is skipped when "
        "WORK/STAGE/DONE.json exists and resumes from its newest checkpoint when interrupted; the export stage "
        "writes fp16 weights and manifest.json into OUT (default: the package's registry directory, "
        "shapes/assets/, or $MOTION_ADAPTERS_TOY_DIR).")
    b.add_argument("--out", default=None, help="where the exported models go (default: the registry directory; "
                   "with --quick: WORK/out)")
    b.add_argument("--work", default=None, help="datasets, runs and checkpoints (default runs/toy-build)")
    b.add_argument("--quick", action="store_true", help="tiny data and 2 steps per stage (a smoke test)")
    b.add_argument("--stage", action="append", choices=list(STAGES), default=None,
                   help="run only this stage (repeatable); finished stages are still skipped unless --force")
    b.add_argument("--force", action="store_true", help="re-run stages even when DONE.json exists")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.set_defaults(func=cmd_toy_build)


def add_eval_toy_arguments(g: argparse._ArgumentGroup) -> None:
    """The options of ``eval toy`` (the shapes world: ``motion-adapters eval toy --n 64 --json toy.json``)."""
    g.add_argument("--n", type=int, default=64, help="clips per arm (default 64; 24 gives error bars of ±10 %%)")
    g.add_argument("--steps", type=int, default=None, help="denoising steps (default: the models' registered ones)")
    g.add_argument("--seed", type=int, default=0, help="first seed (clip i uses seed + i)")
    g.add_argument("--models-dir", default=None, help="shapes-world models directory (default: the registry's)")
    g.add_argument("--save-clips", metavar="DIR", default=None, help="also write every generated clip as GIF")


def cmd_eval_toy(args) -> int:
    if len(args.clips) > 1:
        raise MotionAdapterError(f"eval toy: expected no clip arguments after 'toy', found {args.clips[1:]}")
    res = eval_toy(n=args.n, steps=args.steps, seed=args.seed, models_dir=args.models_dir, device=args.device,
                   save_clips=args.save_clips, progress=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json == "-":
        print(json.dumps(no_nan(res), indent=2, default=str))
        return 0
    print(table(res))
    if args.json:
        write_json(res, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


EVAL_TOY = EvalSuite(add_eval_toy_arguments, cmd_eval_toy,
                     example="motion-adapters eval toy --n 64 --json toy.json           # shapes world: embedded "
                     "models vs their targets")
