"""The Generate tab's image input area: the picture a clip starts from (and, optionally, the one it ends on), the
SparseCtrl encoder that holds them, and an IP-Adapter with its image prompt and scale."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from motion_adapters.app import config as C
from motion_adapters.app.models import IP_ADAPTER, SPARSECTRL, ModelLibrary
from motion_adapters.app.requests import LABELS, ImageInput
from motion_adapters.app.ui import AUTO_SPARSECTRL, NONE_IP_ADAPTER, Dropdowns, check_uploads

if TYPE_CHECKING:
    import gradio as gr


@dataclass
class ImageInputs:
    """The area's components, in the order the generate event takes them."""

    first: gr.Image
    last: gr.Image
    sparsectrl: gr.Dropdown
    ip_adapter: gr.Dropdown
    ip_image: gr.Image
    ip_scale: gr.Slider

    @property
    def inputs(self) -> list:
        return [self.first, self.last, self.sparsectrl, self.ip_adapter, self.ip_image, self.ip_scale]

    @property
    def reuse_outputs(self) -> list:
        """What "reuse recipe" fills: the SparseCtrl encoder, the IP-Adapter and its scale (not the uploads)."""
        return [self.sparsectrl, self.ip_adapter, self.ip_scale]


def build_image_input(drops: Dropdowns) -> ImageInputs:
    import gradio as gr  # the app extra: loaded when a page is built, not when the CLI starts

    with gr.Accordion("Image input (first / last frame, IP-Adapter)", open=False, elem_id="gen-image-input"):
        gr.Markdown("A *First frame* makes the clip start from that picture, and a *Last frame* makes it end on "
                    "another: a SparseCtrl encoder holds them (*automatic*: the base's own). Without any encoder the "
                    "first frame alone is animated by video to video at *Strength* (in the video input). An "
                    "IP-Adapter steers every frame by an image prompt (*IP image*) as much as *IP scale* says; it "
                    "needs no first frame.")
        with gr.Row():
            first = _picture("First frame", "gen-first-frame")
            last = _picture("Last frame", "gen-last-frame")
        sparsectrl = drops.add(SPARSECTRL, value=AUTO_SPARSECTRL, label="SparseCtrl", elem_id="gen-sparsectrl",
                               info="the encoder that holds the frames (automatic: the base's default); loaded "
                                    "at the next generation")
        with gr.Group():
            with gr.Row():
                ip_adapter = drops.add(IP_ADAPTER, value=NONE_IP_ADAPTER, label="IP-Adapter", scale=3,
                                       elem_id="gen-ip-adapter", info="loaded at the next generation")
                ip_scale = gr.Slider(0.0, C.MAX_IP_SCALE, value=C.DEFAULT_IP_SCALE, step=0.05, label="IP scale",
                                     scale=2, elem_id="gen-ip-scale", info="0 = the image prompt has no effect")
            ip_image = _picture("IP image", "gen-ip-image")
    return ImageInputs(first, last, sparsectrl, ip_adapter, ip_image, ip_scale)


def _picture(label: str, elem_id: str) -> gr.Image:
    """An upload-only picture, handed over as the uploaded file itself (its name kept for the recipe)."""
    import gradio as gr

    return gr.Image(label=label, type="filepath", image_mode=None, sources=["upload"], height=160,
                    elem_id=elem_id)


def image_request(first, last, sparsectrl, ip_adapter, ip_image, ip_scale) -> dict:
    """The ``GenerateRequest`` field of the area's values; only uploaded files are accepted."""
    first, last, ip_image = (next(iter(check_uploads(v, LABELS[k])), None)
                             for k, v in (("image", first), ("keyframes", last), ("ip_image", ip_image)))
    return {"images": ImageInput(first=first, last=last, sparsectrl=sparsectrl or AUTO_SPARSECTRL,
                                 ip_adapter=ip_adapter or NONE_IP_ADAPTER, ip_image=ip_image,
                                 ip_scale=C.DEFAULT_IP_SCALE if ip_scale is None else ip_scale)}


def reuse_image_recipe(library: ModelLibrary, recipe_text: str) -> tuple[list, list[str]]:
    """The values "reuse recipe" puts into the area (SparseCtrl encoder, IP-Adapter, IP scale) and what it could not
    fill: the pictures must be uploaded again, and a model no longer in the library leaves its dropdown empty."""
    recipe = json.loads(recipe_text)
    ip = recipe.get("ip_adapter") or {}
    pictures = [(LABELS["image"], recipe.get("image")), (LABELS["ip_image"], ip.get("image")),
                *((LABELS["keyframes"], k) for k in recipe.get("keyframes") or [])]
    notes = [f"upload the {label} again ({entry.get('path')}): uploads are not kept"
             for label, entry in pictures if isinstance(entry, dict)]
    values = []
    for kind, entry, empty in ((SPARSECTRL, recipe.get("sparsectrl"), AUTO_SPARSECTRL),
                               (IP_ADAPTER, ip, NONE_IP_ADAPTER)):
        name = library.named_in_recipe(kind, entry) if entry else None
        if entry and name is None:
            what = entry.get("name") or entry.get("path")
            notes.append(f"{LABELS[kind]} of the recipe ({what}) is not in the library: left empty")
        values.append(name or empty)
    return [*values, ip.get("scale", C.DEFAULT_IP_SCALE)], notes
