"""Small pieces shared by the tabs: errors shown in the page, the status line, dropdowns that follow the library."""

from __future__ import annotations

import functools
import html
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from motion_adapters import registry
from motion_adapters.app.models import (
    BASE,
    CONTROLNET,
    DATASET,
    IP_ADAPTER,
    LORA,
    MOTION,
    NO_MOTION,
    SPARSECTRL,
    ModelLibrary,
)
from motion_adapters.errors import MotionAdapterError

if TYPE_CHECKING:
    import gradio as gr

log = logging.getLogger(__name__)
DEVICE = "device"   # the concurrency group of everything that runs models: one at a time, in queue order
NONE_LORA = ""      # an empty LoRA slot
NONE_CONTROLNET = ""  # an empty ControlNet slot
AUTO_SPARSECTRL = ""  # the SparseCtrl dropdown's "the base's default encoder"
NONE_IP_ADAPTER = ""  # no IP-Adapter


def page_errors(fn: Callable) -> Callable:
    """Show every failure in the page as an error message; the server keeps serving."""
    import gradio as gr  # the app extra: loaded when a page is built, not when the CLI starts

    def report(e: Exception):
        if isinstance(e, gr.Error):
            e.message = hide_upload_paths(str(e.message))
            return e
        if isinstance(e, MotionAdapterError):
            return gr.Error(html.escape(hide_upload_paths(str(e)), quote=False), print_exception=False)
        log.exception("studio: %s failed", fn.__name__)
        text = hide_upload_paths(f"{fn.__name__.replace('_', ' ')} failed: {type(e).__name__}: {str(e)[:500]}")
        return gr.Error(html.escape(text, quote=False))

    if _is_generator(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:
                raise report(e) from e

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise report(e) from e

    return wrapper


def upload_roots() -> list[str]:
    """gradio's upload (cache) folder, as configured and resolved."""
    from gradio.utils import get_upload_folder

    folder = str(get_upload_folder())
    return sorted({folder.rstrip("/\\"), str(Path(folder).resolve())}, key=len, reverse=True)


def hide_upload_paths(text: str) -> str:
    """``text`` with every path in gradio's upload folder shortened to the file's own name: what the page shows
    never reveals where the server keeps uploads (``/tmp/gradio/3f…/model.ckpt`` → ``model.ckpt``)."""
    for root in upload_roots():
        # the root, then its folders (gradio's hash folders: no spaces), up to the last separator before the name
        text = re.sub(re.escape(root) + r"(?:[/\\][^/\\\s'\"`]+)*[/\\]", "", text)
        text = text.replace(root, "(upload folder)")
    return text


def _is_generator(fn: Callable) -> bool:
    import inspect

    return inspect.isgeneratorfunction(fn)


def status_markdown(status: dict) -> str:
    """One line: builds (stays 1 across swaps), loaded models (a SparseCtrl encoder or IP-Adapter only while one
    is loaded), device, what holds it."""
    loras = ", ".join(f"`{n}` × {w:g}" for n, w in status["loras"].items()) or "none"
    controlnets = ", ".join(f"`{n}`" for n in status.get("controlnets", [])) or "none"
    training = status.get("training")
    busy = status["busy"] or "idle"
    held = [f"{label}: `{status[k]}`" for k, label in (("sparsectrl", "SparseCtrl"), ("ip_adapter", "IP-Adapter"))
            if status.get(k)]  # shown while loaded: kept from one generation to the next
    parts = [f"**Pipeline** builds: {status['builds']}",
             f"base: `{status['base'] or '(not loaded)'}`",
             f"motion: `{status['motion'] or '(not loaded)'}`",
             f"LoRAs: {loras}",
             f"ControlNets: {controlnets}",
             *held,
             f"{status['device']} {status['dtype']}",
             f"device: {busy}",
             f"generations: {status['generations']}"]
    if training:
        parts.append(f"training `{training['name']}`: {training['state']}")
    return " · ".join(parts)


def is_upload(path: str | None) -> bool:
    """Whether a file path came from a gradio upload (its upload folder), never a path typed by someone."""
    if not path:
        return False
    from gradio.utils import get_upload_folder

    root = Path(get_upload_folder()).resolve()
    p = Path(path).resolve()
    return root in p.parents


def check_uploads(paths: list[str] | str | None, label: str) -> list[str]:
    import gradio as gr

    if paths is None:
        return []
    items = [paths] if isinstance(paths, str) else list(paths)
    out = []
    for p in items:
        p = getattr(p, "name", p)  # gr.File may hand over file objects in some versions
        if not is_upload(p):
            raise gr.Error(f"{label}: expected an uploaded file, found a path that was not uploaded")
        out.append(str(p))
    return out


class Dropdowns:
    """Every model dropdown of the page, by kind, so a rescan can refresh all of them at once."""

    def __init__(self, library: ModelLibrary):
        self.library = library
        self.items: list[tuple[gr.Dropdown, str]] = []

    def choices(self, kind: str) -> list[tuple[str, str]]:
        lib = self.library
        if kind == MOTION:
            names = lib.names(MOTION) + [NO_MOTION]
        elif kind == LORA:
            return [("(none)", NONE_LORA)] + [(n, n) for n in lib.names(LORA)]
        elif kind == CONTROLNET:
            return [("(none)", NONE_CONTROLNET)] + [(n, n) for n in lib.names(CONTROLNET)]
        elif kind == SPARSECTRL:
            return [("(automatic)", AUTO_SPARSECTRL)] + [(n, n) for n in lib.names(SPARSECTRL)]
        elif kind == IP_ADAPTER:
            return [("(none)", NONE_IP_ADAPTER)] + [(n, n) for n in lib.names(IP_ADAPTER)]
        elif kind == DATASET:
            return [("(uploaded clips)", "")] + [(n, n) for n in lib.names(DATASET)]
        elif kind == "any":
            names = lib.names()
        else:
            names = lib.names(kind)
        return [(n, n) for n in names]

    def add(self, kind: str, **kwargs) -> gr.Dropdown:
        import gradio as gr

        dd = gr.Dropdown(choices=self.choices(kind), allow_custom_value=True, **kwargs)
        self.items.append((dd, kind))
        return dd

    @property
    def components(self) -> list[gr.Dropdown]:
        return [dd for dd, _ in self.items]

    def updates(self, components: list[gr.Dropdown] | None = None) -> list:
        """New choices for ``components`` (default: every dropdown so far), values kept. An event must pass the
        list it was wired with: dropdowns added by later tabs are not among its outputs."""
        import gradio as gr

        kinds = dict((id(dd), kind) for dd, kind in self.items)
        return [gr.update(choices=self.choices(kinds[id(dd)])) for dd in (components or self.components)]


def default_models(library: ModelLibrary) -> tuple[str | None, str]:
    """The initial base and motion module: the registered defaults when present, else the first found."""

    bases, motions = library.names(BASE), library.names(MOTION)
    default_base = registry.default("base")
    base = default_base if default_base in bases else (bases[0] if bases else None)
    default_motion = registry.default_motion_for(base) if base else None
    if default_motion in motions:
        return base, default_motion
    return base, next((m for m in motions if not registry.is_registered(m)), NO_MOTION)


def generation_defaults(library: ModelLibrary, base: str | None) -> dict:
    """Size, frames, steps, guidance and fps for a base: the embedded world's own, else SD1.5's."""
    entry = None
    try:
        entry = library.resolve(BASE, base) if base else None
    except MotionAdapterError:
        pass
    if entry is not None and entry.registered:

        return registry.generation_defaults(entry.registered)
    return {"height": 512, "width": 512, "num_frames": 16, "num_inference_steps": 25, "guidance_scale": 7.5,
            "fps": 8.0}
