"""Building the page (three tabs) and serving it: localhost unless told otherwise, a bounded queue, uploads
limited in size, files served only from the output folder, no analytics and no share link unless asked."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from motion_adapters.app.config import StudioConfig
from motion_adapters.app.generate_tab import build_generate_tab
from motion_adapters.app.library_tab import build_library_tab, library_table
from motion_adapters.app.models import KINDS
from motion_adapters.app.studio import Studio
from motion_adapters.app.train_tab import build_train_tab
from motion_adapters.app.ui import Dropdowns, status_markdown

log = logging.getLogger(__name__)
TITLE = "motion-adapters studio"
INTRO = ("Text-to-video with AnimateDiff motion modules on any SD1.5 base. Changing a model swaps its weights into "
         "the running pipeline (no rebuild); one job uses the device at a time, the others wait in the queue.")

AUTH_MESSAGE = "This studio is password-protected: sign in with the user name and password its operator gave you."


def quiet_gradio() -> None:
    """No analytics, no version check, no telemetry: the studio never calls home."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def build_demo(studio: Studio):
    """The gradio Blocks of a studio (not launched)."""
    quiet_gradio()
    import gradio as gr

    drops = Dropdowns(studio.library)
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        gr.Markdown(f"## {TITLE}\n{INTRO}")
        with gr.Tab("Generate", id="generate"):
            gen = build_generate_tab(studio, drops)
        with gr.Tab("Train", id="train"):
            follow_training, training_outputs = build_train_tab(studio, drops)
        with gr.Tab("Library", id="library") as library:
            table = build_library_tab(studio, drops)
        # a model written meanwhile (a training run, another page) is in the table when the tab is opened
        library.select(lambda: library_table(studio), outputs=table, queue=False, api_name=False)

        def status() -> dict:
            """Pipeline builds (1 after any number of swaps), loaded models, device and what holds it."""
            return studio.status()

        def models() -> dict:
            """The discovered models by kind: base, motion, lora, controlnet, dataset."""
            return {k: studio.library.names(k) for k in KINDS}

        gr.api(status, api_name="status", concurrency_limit=None)
        gr.api(models, api_name="models", concurrency_limit=None)
        # a page opened later sees the current lists (training or conversions may have added models)
        demo.load(lambda: (status_markdown(studio.status()), *drops.updates(drops.components)),
                  outputs=[gen.status, *drops.components], api_visibility="private", concurrency_limit=None)
        demo.load(follow_training, outputs=training_outputs, api_visibility="private", concurrency_limit=None,
                  show_progress="hidden")
    return demo


def blocked_paths(cfg: StudioConfig) -> list[str]:
    """The models directories: never served as files (defence in depth: no event returns a path there), unless
    one of them holds the output folder or gradio's upload folder."""
    from gradio.utils import get_upload_folder

    keep = [cfg.output_dir, Path(get_upload_folder()).resolve()]
    return [str(d) for d in cfg.models_dirs if not any(d == k or d in k.parents for k in keep)]


def launch(cfg: StudioConfig, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           block: bool = True, quiet: bool = False, auth: list[tuple[str, str]] | None = None):
    """Build and serve a studio; returns ``(demo, local_url, studio)`` (with ``block=False`` the server runs in
    a background thread: tests). ``auth``: (user, password) pairs the page and the API ask for."""
    quiet_gradio()
    studio = Studio(cfg)
    demo = build_demo(studio)
    demo.queue(max_size=cfg.queue_size, default_concurrency_limit=1)
    _, url, share_url = demo.launch(
        server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
        auth=list(auth) if auth else None, auth_message=AUTH_MESSAGE if auth else None,
        max_file_size=cfg.max_upload_bytes, allowed_paths=[str(cfg.output_dir)], blocked_paths=blocked_paths(cfg),
        show_error=True, quiet=quiet,
        footer_links=["api"], run_history=False, enable_monitoring=False, ssr_mode=False, mcp_server=False,
        pwa=False, inbrowser=False)
    if share_url:
        log.warning("public share link: %s (anyone with it can use this server)", share_url)
    return demo, url, studio
