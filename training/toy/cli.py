"""``motion-adapters toy build``: train every embedded shapes-world model with the training engine."""

from __future__ import annotations

import argparse

from .build import STAGES


def cmd_toy_build(args) -> int:
    from .build import build, format_summary

    summary = build(out=args.out, work=args.work, quick=args.quick, stages=args.stage, force=args.force,
                    progress=not args.no_progress)
    print(format_summary(summary))
    return 0


def add_toy_parser(subparsers) -> None:
    p = subparsers.add_parser("toy", help="the shapes world: build the embedded models",
                              description="The embedded offline shapes world (see README 'Shapes world').")
    sub = p.add_subparsers(dest="toy_command", required=True)
    b = sub.add_parser(
        "build", help="train every shapes-world model from scratch (~60 min on 2 CPU cores)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Stages: " + ", ".join(STAGES) + ". Configs under configs/toy/. Each stage is skipped when "
        "WORK/STAGE/DONE.json exists and resumes from its newest checkpoint when interrupted; the export stage "
        "writes fp16 weights and manifest.json into OUT (default: the package's registry directory, "
        "motion_adapters/assets/toy/, or $MOTION_ADAPTERS_TOY_DIR).")
    b.add_argument("--out", default=None, help="where the exported models go (default: the registry directory; "
                   "with --quick: WORK/out)")
    b.add_argument("--work", default=None, help="datasets, runs and checkpoints (default runs/toy-build)")
    b.add_argument("--quick", action="store_true", help="tiny data and 2 steps per stage (a smoke test)")
    b.add_argument("--stage", action="append", choices=list(STAGES), default=None,
                   help="run only this stage (repeatable); finished stages are still skipped unless --force")
    b.add_argument("--force", action="store_true", help="re-run stages even when DONE.json exists")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.set_defaults(func=cmd_toy_build)
