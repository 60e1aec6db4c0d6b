"""``motion-adapters app``: the studio web UI (needs the ``app`` extra: gradio)."""

from __future__ import annotations

import argparse
import importlib.util
import signal

from motion_adapters.app.config import StudioConfig
from motion_adapters.app.server import launch
from motion_adapters.errors import MotionAdapterError

EXAMPLES = """examples:
  motion-adapters app                                   # http://127.0.0.1:7860, models in ./models
  motion-adapters app --models-dir ~/sd/models --models-dir /data/loras --port 8000
  motion-adapters app --host 0.0.0.0 --queue-size 8     # reachable from the network (no authentication!)
"""


def cmd_app(args) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise MotionAdapterError('app: expected gradio (the web UI extra), found it not installed; '
                                 'pip install "motion-adapters[app]"')
    cfg = StudioConfig(models_dirs=args.models_dir or ["models"], output_dir=args.output_dir, device=args.device,
                       dtype=args.dtype, low_vram=bool(args.low_vram), queue_size=args.queue_size,
                       max_upload_mb=args.max_upload_mb, keep_outputs=args.keep_outputs)
    print(f"models: {', '.join(map(str, cfg.models_dirs))} (+ embedded); outputs: {cfg.output_dir}")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the studio")
    demo, url, studio = launch(cfg, host=args.host, port=args.port, share=args.share, block=False, quiet=True)
    print(f"studio running at {url}" + ("" if args.share else " (this machine only; --share for a public link)")
          + " — Ctrl+C stops it", flush=True)
    def stop(_signum, _frame):  # a service manager's SIGTERM: the same clean stop as Ctrl+C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        demo.block_thread()
    finally:
        studio.runner.cancel()  # a training child runs in its own process group: do not leave it behind
        demo.close()
    return 0


def add_app_parser(subparsers) -> None:
    """Register the ``app`` subcommand (gradio is imported only when it runs)."""
    p = subparsers.add_parser(
        "app", help="the studio: web UI for generation (hot-swap), training and the model library",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve the studio in the browser. Models are discovered in the models directories (bases, "
        "motion modules, LoRAs and dataset folders, recognised from their contents) plus the embedded ones; "
        "trained adapters, conversions and uploads are written to the first models directory. One job uses the "
        "device at a time; requests wait in a bounded queue. Needs: pip install \"motion-adapters[app]\".")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--models-dir", action="extend", nargs="+", metavar="DIR",
                   help="where models are found (one or more; repeatable; default ./models, created if missing)")
    p.add_argument("--output-dir", metavar="DIR", help="where clips are written (default: a new temporary folder)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--queue-size", type=int, default=16, help="requests that may wait; more are refused (default 16)")
    p.add_argument("--max-upload-mb", type=float, default=200.0, help="largest accepted upload (default 200 MB)")
    p.add_argument("--keep-outputs", type=int, default=200,
                   help="generations kept in the output folder, oldest removed first (default 200)")
    p.add_argument("--device", help="cuda, cuda:1, cpu … (default: cuda when available)")
    p.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], help="default fp16 on CUDA, fp32 on CPU")
    p.add_argument("--low-vram", action="store_true", help="model CPU offload (CUDA), VAE slicing and tiling")
    p.set_defaults(func=cmd_app)
