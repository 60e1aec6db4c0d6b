"""The Generate tab: models (hot-swapped on change), LoRAs with weights, prompt and every generation option, a
video input (video to video, ControlNets) and an image input (first / last frame, IP-Adapter); the clip plays in the
page beside the control maps it followed, downloads with its recipe embedded, and the recipe is shown."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from motion_adapters.app import config as C
from motion_adapters.app.image_input import build_image_input, image_request, reuse_image_recipe
from motion_adapters.app.models import BASE, LORA, MOTION
from motion_adapters.app.requests import GenerateRequest
from motion_adapters.app.studio import Studio, has_ffmpeg
from motion_adapters.app.ui import (
    DEVICE,
    Dropdowns,
    default_models,
    generation_defaults,
    page_errors,
    status_markdown,
)
from motion_adapters.app.video_input import build_video_input, reuse_recipe, video_request
from motion_adapters.schedulers import SCHEDULERS

if TYPE_CHECKING:
    import gradio as gr

PROMPT_HELP = ("One prompt, or prompt travel with one 'FRAME: prompt' per line (e.g. '0: a red circle' and "
               "'4: a blue circle').")


@dataclass
class GenerateTab:
    status: gr.Markdown
    base: gr.Dropdown
    motion: gr.Dropdown


def build_generate_tab(studio: Studio, drops: Dropdowns) -> GenerateTab:
    import gradio as gr  # the app extra: loaded when a page is built, not when the CLI starts

    base0, motion0 = default_models(studio.library)
    d = generation_defaults(studio.library, base0)
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            with gr.Row():
                base = drops.add(BASE, value=base0, label="Base (SD1.5 checkpoint)", elem_id="gen-base",
                                 info="a change swaps the weights in place")
                motion = drops.add(MOTION, value=motion0, label="Motion module", elem_id="gen-motion",
                                   info="'none': independent frames")
            prompt = gr.Textbox(value="", label="Prompt", lines=2, placeholder="a red circle moving right",
                                info=PROMPT_HELP, elem_id="gen-prompt", max_length=C.MAX_PROMPT_CHARS)
            negative = gr.Textbox(value="", label="Negative prompt", lines=1, max_length=C.MAX_PROMPT_CHARS)
            go = gr.Button("Generate", variant="primary", elem_id="gen-button")
            loras, weights = [], []
            with gr.Accordion("LoRAs (motion and spatial; they stack)", open=False):
                for i in range(1, C.LORA_SLOTS + 1):
                    with gr.Row():
                        loras.append(drops.add(LORA, value="", label=f"LoRA {i}", elem_id=f"gen-lora-{i}",
                                               scale=3))
                        weights.append(gr.Slider(-C.MAX_LORA_WEIGHT, C.MAX_LORA_WEIGHT, value=1.0, step=0.05,
                                                 label=f"weight {i}", scale=2, elem_id=f"gen-weight-{i}"))
            vin = build_video_input(drops)
            iin = build_image_input(drops)
            with gr.Row():
                frames = gr.Number(value=d["num_frames"], label="Frames", step=1)
                width = gr.Number(value=d["width"], label="Width", step=8)
                height = gr.Number(value=d["height"], label="Height", step=8)
                steps = gr.Number(value=d["num_inference_steps"], label="Steps", step=1, elem_id="gen-steps")
            with gr.Row():
                guidance = gr.Slider(0.0, C.MAX_GUIDANCE, value=d["guidance_scale"], step=0.5, label="Guidance")
                scheduler = gr.Dropdown(choices=[(f"{k}: {v}", k) for k, v in SCHEDULERS.items()], value="ddim",
                                        label="Scheduler")
            with gr.Row():
                seed = gr.Number(value=-1, label="Seed", step=1, scale=2,
                                 info="-1: a new random seed each time (shown in the recipe)")
                with gr.Column(scale=1, min_width=120):
                    random_btn = gr.Button("random seed", size="sm")
                    reuse_btn = gr.Button("reuse last seed", size="sm")
            motion_strength = gr.Slider(0.0, C.MAX_MOTION_STRENGTH, value=1.0, step=0.05, label="Motion strength",
                                        info="0 = no temporal mixing, 1 = as trained, > 1 exaggerates")
            with gr.Accordion("Long clips, prompt travel, FreeInit, output", open=False):
                gr.Markdown("Frames beyond the motion module's cap (24 or 32) switch on FreeNoise context windows "
                            "by themselves. Prompt travel: write one `FRAME: prompt` per line.")
                with gr.Row():
                    context_length = gr.Number(value=0, label="Context length", info="0: automatic", step=1)
                    context_overlap = gr.Number(value=-1, label="Context overlap", info="-1: ¼ of the context",
                                                step=1)
                    free_init = gr.Number(value=0, label="FreeInit iterations", info="each costs one more pass",
                                          step=1)
                with gr.Row():
                    fps = gr.Number(value=d.get("fps", 8.0), label="FPS")
                    fmt = gr.Dropdown(choices=list(C.FORMATS), value="mp4", label="Download format",
                                      info="webp is lossless; every format embeds the recipe")
        with gr.Column(scale=4):
            status = gr.Markdown(status_markdown(studio.status()), label="Status", elem_id="studio-status")
            player = clip_view("Clip", "gen-video")
            maps_view = clip_view("Control maps (what the ControlNets followed)", "gen-maps-view", visible=False)
            download = gr.File(label="Download (recipe embedded)", interactive=False, height=80)
            recipe = gr.Code(label="Recipe", language="json", interactive=False, lines=6, max_lines=16,
                             elem_id="gen-recipe")

    lora_inputs = [x for pair in zip(loras, weights, strict=True) for x in pair]

    @page_errors
    def generate(base, motion, lora_1, weight_1, lora_2, weight_2, lora_3, weight_3, prompt, negative_prompt, frames,
                 width, height, steps, guidance, seed, scheduler, context_length, context_overlap, free_init,
                 motion_strength, fps, fmt, video=None, strength=C.DEFAULT_STRENGTH, controlnet_1="",
                 controlnet_scale_1=1.0, control_1="canny", control_maps_1=None, control_start_1=0.0, control_end_1=1.0,
                 controlnet_2="", controlnet_scale_2=1.0, control_2="canny", control_maps_2=None, control_start_2=0.0,
                 control_end_2=1.0, first_frame=None, last_frame=None, sparsectrl="", ip_adapter="", ip_image=None,
                 ip_scale=C.DEFAULT_IP_SCALE):  # the video and image inputs' defaults: API clients may leave them out
        slots = (controlnet_1, controlnet_scale_1, control_1, control_maps_1, control_start_1, control_end_1,
                 controlnet_2, controlnet_scale_2, control_2, control_maps_2, control_start_2, control_end_2)
        clip = studio.generate(GenerateRequest(
            base=base, motion=motion, prompt=prompt,
            loras=[(lora_1, weight_1), (lora_2, weight_2), (lora_3, weight_3)], negative_prompt=negative_prompt,
            frames=frames, width=width, height=height, steps=steps, guidance=guidance, seed=seed,
            scheduler=scheduler, context_length=context_length, context_overlap=context_overlap,
            free_init=free_init, motion_strength=motion_strength, fps=fps, fmt=fmt,
            **video_request(video, strength, slots),
            **image_request(first_frame, last_frame, sparsectrl, ip_adapter, ip_image, ip_scale)))
        for note in clip.notices:
            gr.Info(note)
        return (str(clip.preview), str(clip.download), json.dumps(clip.recipe, indent=1, ensure_ascii=False),
                status_markdown(studio.status()), str(clip.maps) if clip.maps else None)

    go.click(generate, inputs=[base, motion, *lora_inputs, prompt, negative, frames, width, height, steps, guidance,
                               seed, scheduler, context_length, context_overlap, free_init, motion_strength, fps, fmt,
                               *vin.inputs, *iin.inputs],
             outputs=[player, download, recipe, status, maps_view], api_name="generate", concurrency_id=DEVICE,
             ).then(lambda maps: gr.update(visible=maps is not None), inputs=maps_view, outputs=maps_view, queue=False,
                    api_visibility="private")  # the maps are shown only when ControlNets made some

    @page_errors
    def swap(base, motion, lora_1, weight_1, lora_2, weight_2, lora_3, weight_3, controlnet_1, controlnet_2):
        loras = [(n, w) for n, w in ((lora_1, weight_1), (lora_2, weight_2), (lora_3, weight_3)) if n]
        for note in studio.select(base, motion, loras, [n for n in (controlnet_1, controlnet_2) if n]):
            gr.Info(note)
        return status_markdown(studio.status())

    swap_inputs = [base, motion, *lora_inputs, *vin.controlnets]
    for dd in (base, motion, *loras, *vin.controlnets):
        dd.input(swap, inputs=swap_inputs, outputs=status, concurrency_id=DEVICE, show_progress="minimal",
                 **({"api_name": "swap"} if dd is base else {"api_visibility": "private"}))
    for w in weights:
        w.release(swap, inputs=swap_inputs, outputs=status, api_visibility="private", concurrency_id=DEVICE,
                  show_progress="minimal")

    def reuse(recipe_text):
        try:
            return int(json.loads(recipe_text)["seed"])
        except (TypeError, ValueError, KeyError):
            raise gr.Error("no clip yet: generate one first, then its seed can be reused") from None

    def reuse_video_input(recipe_text):
        try:
            values, notes = reuse_recipe(studio.library, recipe_text)
            image_values, image_notes = reuse_image_recipe(studio.library, recipe_text)
        except (TypeError, ValueError, KeyError, AttributeError):
            raise gr.Error("no clip yet: generate one first, then its recipe can be reused") from None
        for note in notes + image_notes:
            gr.Info(note)
        return values + image_values

    random_btn.click(lambda: -1, outputs=seed, api_visibility="private", queue=False)
    reuse_btn.click(reuse, inputs=recipe, outputs=seed, api_visibility="private", queue=False)
    vin.reuse.click(reuse_video_input, inputs=recipe, outputs=vin.reuse_outputs + iin.reuse_outputs,
                    api_visibility="private", queue=False)
    return GenerateTab(status=status, base=base, motion=motion)


def clip_view(label: str, elem_id: str, **kwargs):
    """A clip the page plays: an MP4 video, else (no MP4 encoder) an animated GIF."""
    import gradio as gr

    if has_ffmpeg():
        return gr.Video(label=label, autoplay=True, loop=True, elem_id=elem_id, interactive=False, **kwargs)
    return gr.Image(label=label, type="filepath", elem_id=elem_id, interactive=False, **kwargs)
