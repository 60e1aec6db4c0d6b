"""``motion-adapters app``: the studio web UI (needs the ``app`` extra: gradio)."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import signal
import sys
from pathlib import Path

from motion_adapters.app.config import StudioConfig
from motion_adapters.app.server import launch
from motion_adapters.errors import MotionAdapterError

EXAMPLES = """examples:
  motion-adapters app                                   # http://127.0.0.1:7860, models in ./models
  motion-adapters app --models-dir ~/sd/models --models-dir /data/loras --port 8000
  motion-adapters app --host 0.0.0.0 --auth-file ~/.studio-users   # reachable from the network, with passwords
  motion-adapters app --host 0.0.0.0 --no-auth          # reachable from the network WITHOUT a password
"""
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name (or 0.0.0.0 / ::, which are addresses): reachable from outside
        return False


def parse_credential(text: str, where: str) -> tuple[str, str]:
    """``USER:PASS`` (split at the first colon) as a tuple; errors name ``where`` and never show the password."""
    user, colon, password = text.partition(":")
    user = user.strip()
    if not colon:
        raise MotionAdapterError(f"{where}: expected USER:PASS (a user name, a colon, a password), found a value "
                                 "without a colon")
    if not user:
        raise MotionAdapterError(f"{where}: expected USER:PASS with a user name before the colon, found none")
    if not password:
        raise MotionAdapterError(f"{where}: expected USER:PASS with a password after the colon, found an empty "
                                 f"password for user {user!r}")
    return user, password


def read_auth_file(path: str) -> list[tuple[str, str]]:
    """One ``USER:PASS`` a line; blank lines and ``#`` comments are ignored. Warns when others may read it."""
    f = Path(path).expanduser()
    if not f.is_file():
        raise MotionAdapterError(f"--auth-file {path}: expected a file of USER:PASS lines, found "
                                 + ("a folder" if f.is_dir() else "no such file"))
    if os.name == "posix" and f.stat().st_mode & 0o077:
        print(f"warning: --auth-file {path} is readable by other users (mode {f.stat().st_mode & 0o777:03o}); "
              f"chmod 600 {path}", file=sys.stderr)
    out = []
    for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(parse_credential(line, f"--auth-file {path} line {i}"))
    if not out:
        raise MotionAdapterError(f"--auth-file {path}: expected at least one USER:PASS line, found none")
    return out


def auth_from_args(args) -> list[tuple[str, str]] | None:
    """The accounts of ``--auth`` and ``--auth-file``; refuses to serve beyond this machine without them unless
    ``--no-auth`` says so (then warns)."""
    accounts = [parse_credential(v, "--auth") for v in (args.auth or [])]
    if args.auth_file:
        accounts += read_auth_file(args.auth_file)
    if accounts and args.no_auth:
        raise MotionAdapterError("--no-auth: expected either --no-auth or --auth/--auth-file, found both")
    public = not is_loopback(args.host) or args.share
    what = f"--host {args.host}" if not is_loopback(args.host) else "--share"
    if public and not accounts and not args.no_auth:
        raise MotionAdapterError(f"{what}: serving beyond this machine expected --auth USER:PASS, --auth-file FILE "
                                 "or --no-auth (anyone who reaches it may generate, train and write models), "
                                 "found none")
    if public and args.no_auth:
        print(f"warning: {what} with --no-auth: anyone who can reach the studio can use it without a password "
              "(generate, train, write into the models directory)", file=sys.stderr)
    return accounts or None


def start_line(host: str, port: int, url: str, share_url: str | None, users: int) -> str:
    """Who can reach the server, truthfully: this machine only, the network, or anyone with a public link."""
    guard = (f"password-protected ({users} user{'s' if users != 1 else ''})" if users
             else "WITHOUT a password (--no-auth)")
    if share_url:
        where = f"public link {share_url} (anyone with the link), {guard}; locally at {url}"
    elif is_loopback(host):
        where = f"{url} (this machine only" + (f", {guard}" if users else "") + ")"
    else:
        shown = f"[{host}]" if ":" in host else host
        at = (f"on port {port} of every address of this machine" if host in ("0.0.0.0", "::")
              else f"at http://{shown}:{port}")
        where = f"{url}, reachable from the network {at}, {guard}"
    return f"studio running at {where} — Ctrl+C stops it"


def cmd_app(args) -> int:
    accounts = auth_from_args(args)  # bad flags are refused before anything starts
    if importlib.util.find_spec("gradio") is None:
        raise MotionAdapterError('app: expected gradio (the web UI extra), found it not installed; '
                                 'pip install "motion-adapters[app]"')
    cfg = StudioConfig(models_dirs=args.models_dir or ["models"], output_dir=args.output_dir, device=args.device,
                       dtype=args.dtype, low_vram=bool(args.low_vram), queue_size=args.queue_size,
                       max_upload_mb=args.max_upload_mb, keep_outputs=args.keep_outputs)
    print(f"models: {', '.join(map(str, cfg.models_dirs))} (+ embedded); outputs: {cfg.output_dir}")
    demo, url, studio = launch(cfg, host=args.host, port=args.port, share=args.share, block=False, quiet=True,
                               auth=accounts)
    print(start_line(args.host, args.port, url, getattr(demo, "share_url", None), len(accounts or [])), flush=True)

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
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only); any other address needs --auth, "
                   "--auth-file or --no-auth")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--models-dir", action="extend", nargs="+", metavar="DIR",
                   help="where models are found (one or more; repeatable; default ./models, created if missing)")
    p.add_argument("--output-dir", metavar="DIR", help="where clips are written (default: a new temporary folder)")
    p.add_argument("--share", action="store_true",
                   help="also open a public gradio.live link (off by default; needs --auth, --auth-file or --no-auth)")
    p.add_argument("--auth", action="append", metavar="USER:PASS",
                   help="require this user name and password in the browser and the API (repeatable)")
    p.add_argument("--auth-file", metavar="FILE",
                   help="users and passwords, one USER:PASS a line (blank lines and # comments ignored; keep it "
                   "chmod 600)")
    p.add_argument("--no-auth", action="store_true",
                   help="serve beyond this machine (--host, --share) WITHOUT a password, on purpose")
    p.add_argument("--queue-size", type=int, default=16, help="requests that may wait; more are refused (default 16)")
    p.add_argument("--max-upload-mb", type=float, default=200.0, help="largest accepted upload (default 200 MB)")
    p.add_argument("--keep-outputs", type=int, default=200,
                   help="generations kept in the output folder, oldest removed first (default 200)")
    p.add_argument("--device", help="cuda, cuda:1, cpu … (default: cuda when available)")
    p.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], help="default fp16 on CUDA, fp32 on CPU")
    p.add_argument("--low-vram", action="store_true", help="model CPU offload (CUDA), VAE slicing and tiling")
    p.set_defaults(func=cmd_app)
