"""``motion-adapters train CONFIG.yaml [--set key=value ...] [--resume latest]``."""

from __future__ import annotations

import argparse

import yaml

from motion_adapters.training.config import PRESET_DIR, load_config
from motion_adapters.training.trainer import train


def cmd_train(args) -> int:
    cfg = load_config(args.config, overrides=args.set)
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return 0
    train(cfg, resume=args.resume)
    return 0


def add_train_parser(subparsers) -> None:
    """Register the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train", help="train a motion module, MotionLoRA, spatial LoRA, spatial finetune, ControlNet, text-to-image "
        "base or VAE",
        description="Train from one YAML config (a path, or a preset name: motion, motion_lora, spatial_lora, "
        "spatial_full, joint, motiondirector, controlnet, shipped in " + str(PRESET_DIR) + "; tasks t2i and vae: "
        "docs/training.md). "
        "Runs under accelerate: single process, or multi-GPU / multi-node with `accelerate launch --config_file "
        + str(PRESET_DIR / "accelerate" / "ddp.yaml") + " -m motion_adapters train ...` "
        "or torchrun. Checkpoints go to OUTPUT_DIR/checkpoints (atomic); adapters to OUTPUT_DIR.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="YAML config file or preset name")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=5e-5 --set run.max_steps=2000 (repeatable)")
    p.add_argument("--resume", default=None, metavar="latest|DIR",
                   help="continue from the newest complete checkpoint ('latest') or a checkpoint folder")
    p.add_argument("--print-config", action="store_true", help="print the validated config and exit")
    p.set_defaults(func=cmd_train)
