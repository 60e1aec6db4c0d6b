"""The Generate tab's video input area: a clip for video to video, its strength, and ControlNet slots (each a
ControlNet of the library, a scale, where its maps come from, and the steps it acts on)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from motion_adapters.app import config as C
from motion_adapters.app.models import CONTROLNET, ModelLibrary
from motion_adapters.app.requests import MAPS, MAPS_INPUTS, ControlSlot
from motion_adapters.app.ui import NONE_CONTROLNET, Dropdowns, check_uploads
from motion_adapters.clips.controls import PREPROCESSORS

if TYPE_CHECKING:
    import gradio as gr

SOURCE_CHOICES = [*((f"maps from the clip: {k}", k) for k in PREPROCESSORS), ("uploaded maps", MAPS)]
SLOT_FIELDS = 6  # controlnet, scale, control, maps, start, end


@dataclass
class VideoInputs:
    """The area's components, in the order the generate event takes them."""

    video: gr.Video
    strength: gr.Slider
    controlnets: list[gr.Dropdown]
    slots: list[list]   # per slot: dropdown, scale, control source, maps upload, start, end
    reuse: gr.Button

    @property
    def inputs(self) -> list:
        return [self.video, self.strength, *(c for slot in self.slots for c in slot)]

    @property
    def reuse_outputs(self) -> list:
        """What "reuse recipe" fills: the strength, then every slot but its upload."""
        return [self.strength, *(c for slot in self.slots for c in slot if c is not slot[3])]


def build_video_input(drops: Dropdowns) -> VideoInputs:
    import gradio as gr  # the app extra: loaded when a page is built, not when the CLI starts

    with gr.Accordion("Video input (video to video, ControlNets)", open=False, elem_id="gen-video-input"):
        gr.Markdown("A clip makes this video to video: the output starts from it at *Strength* (0 = the clip "
                    "back, 1 = from noise), resampled to *Frames* and resized. ControlNets steer by maps: computed "
                    "from the clip, or uploaded (a video, or one image for every frame).")
        with gr.Row():
            video = gr.Video(label="Video", sources=["upload"], elem_id="gen-input", height=180, scale=3)
            with gr.Column(scale=2, min_width=160):
                strength = gr.Slider(0.0, 1.0, value=C.DEFAULT_STRENGTH, step=0.05, label="Strength",
                                     info="only with a clip", elem_id="gen-strength")
                reuse = gr.Button("reuse recipe", size="sm", elem_id="gen-reuse-recipe")
        slots = [_slot(drops, i) for i in range(1, C.CONTROLNET_SLOTS + 1)]
    return VideoInputs(video, strength, [s[0] for s in slots], slots, reuse)


def _slot(drops: Dropdowns, i: int) -> list:
    import gradio as gr

    with gr.Group():
        with gr.Row():
            net = drops.add(CONTROLNET, value=NONE_CONTROLNET, label=f"ControlNet {i}", elem_id=f"gen-controlnet-{i}",
                            scale=3, info="a change loads or unloads it in place")
            scale = gr.Slider(0.0, C.MAX_CONTROL_SCALE, value=1.0, step=0.05, label=f"scale {i}", scale=2,
                              elem_id=f"gen-control-scale-{i}")
        with gr.Row():
            source = gr.Radio(SOURCE_CHOICES, value=SOURCE_CHOICES[0][1], label=f"control {i}", scale=3,
                              elem_id=f"gen-control-{i}")
            maps = gr.File(label=f"maps {i}", file_types=list(MAPS_INPUTS), visible=False, height=140, scale=2,
                           elem_id=f"gen-maps-{i}")
        with gr.Row():
            start = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label=f"start {i}", info="fraction of the steps")
            end = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label=f"end {i}")
    source.change(lambda s: gr.update(visible=s == MAPS), inputs=source, outputs=maps, queue=False,
                  api_visibility="private")
    return [net, scale, source, maps, start, end]


def video_request(video, strength, slots: tuple) -> dict:
    """The ``GenerateRequest`` fields of the area's values (``slots``: SLOT_FIELDS values per slot, flat); only
    uploaded files are accepted."""
    clip = check_uploads(video, "Video")
    controls = []
    for i in range(0, len(slots), SLOT_FIELDS):
        name, scale, source, maps, start, end = slots[i:i + SLOT_FIELDS]
        uploaded = check_uploads(maps, f"ControlNet {i // SLOT_FIELDS + 1} maps") if source == MAPS else []
        controls.append(ControlSlot(name=name or "", scale=scale, source=source, maps=next(iter(uploaded), None),
                                    start=start, end=end))
    return {"video": next(iter(clip), None), "strength": strength, "controlnets": controls}


def reuse_recipe(library: ModelLibrary, recipe_text: str) -> tuple[list, list[str]]:
    """The values "reuse recipe" puts into the area (strength, then each slot's ControlNet, scale, control, start
    and end) and what it could not fill: the clip and uploaded maps must be uploaded again, and a ControlNet no
    longer in the library leaves its slot empty."""
    recipe = json.loads(recipe_text)
    notes = []
    if recipe.get("video"):
        notes.append(f"upload the clip again ({recipe['video'].get('path')}): uploads are not kept")
    values: list = [recipe["strength"] if recipe.get("strength") is not None else C.DEFAULT_STRENGTH]
    entries = list(recipe.get("controlnets") or [])
    for i in range(C.CONTROLNET_SLOTS):
        cn = entries[i] if i < len(entries) else {}
        values += _slot_values(library, cn, i + 1, notes)
    if len(entries) > C.CONTROLNET_SLOTS:
        notes.append(f"the recipe has {len(entries)} ControlNets; the page has {C.CONTROLNET_SLOTS} slots")
    return values, notes


def _slot_values(library: ModelLibrary, cn: dict, i: int, notes: list[str]) -> list:
    if not cn:
        return [NONE_CONTROLNET, 1.0, SOURCE_CHOICES[0][1], 0.0, 1.0]
    name = library.named_in_recipe(CONTROLNET, cn)
    if name is None:
        notes.append(f"ControlNet {i} of the recipe ({cn.get('name')}) is not in the library: slot left empty")
    control = cn.get("control") or {}
    source = control.get("preprocessor") or MAPS
    if source == MAPS:
        notes.append(f"ControlNet {i}: upload its maps again ({control.get('path')})")
    return [name or NONE_CONTROLNET, cn.get("scale", 1.0), source, cn.get("start", 0.0), cn.get("end", 1.0)]

