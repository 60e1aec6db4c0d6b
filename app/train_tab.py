"""The Train tab: clips (uploaded and captioned, or a dataset folder of the library), a preset, start and cancel;
progress, loss and sample clips stream in; the result joins the dropdowns when it is written."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from motion_adapters.app.jobs import TrainingJob
from motion_adapters.app.models import BASE, DATASET, MOTION, NO_MOTION
from motion_adapters.app.requests import TRAIN_TASKS, TrainRequest
from motion_adapters.app.studio import Studio
from motion_adapters.app.training import snapshot, start_training, train_defaults
from motion_adapters.app.ui import DEVICE, Dropdowns, check_uploads, default_models, page_errors
from motion_adapters.clips.media import VIDEO_SUFFIXES

POLL_S = 1.0
HEARTBEAT_S = 5.0


def build_train_tab(studio: Studio, drops: Dropdowns) -> tuple:
    """Builds the tab; returns ``(progress function, its outputs)`` so that a page opened (or reloaded) while a job
    runs follows it too."""
    import gradio as gr  # the app extra: loaded when a page is built, not when the CLI starts

    base0, motion0 = default_models(studio.library)
    registered = _registered(studio, base0)
    d = train_defaults("motion_lora", registered)
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            clips = gr.File(label="Clips", file_count="multiple", file_types=list(VIDEO_SUFFIXES), type="filepath",
                            elem_id="train-clips")
            captions = gr.Textbox(value="", label="Captions", lines=3, placeholder="a red square zooming in",
                                  info="one line per clip, in upload order, or one line for every clip",
                                  elem_id="train-captions")
            dataset = drops.add(DATASET, value="", label="…or a dataset folder from the models directories",
                                info="a folder with metadata.csv / metadata.jsonl (file_name, text)")
            with gr.Row():
                preset = gr.Dropdown(choices=[(v, k) for k, v in TRAIN_TASKS.items()], value="motion_lora",
                                     label="Preset")
                name = gr.Textbox(value="", label="Name", placeholder="automatic",
                                  info="the result goes to trained/NAME/", elem_id="train-name")
            with gr.Row():
                base = drops.add(BASE, value=base0, label="Base")
                motion = drops.add(MOTION, value=motion0, label="Motion module")
            with gr.Row():
                steps = gr.Number(value=d["steps"], label="Steps", step=1, elem_id="train-steps")
                lr = gr.Number(value=d["lr"], label="Learning rate")
                rank = gr.Number(value=d["rank"], label="LoRA rank", step=1)
                batch = gr.Number(value=d["batch_size"], label="Batch size", step=1)
            with gr.Row():
                frames = gr.Number(value=d["frames"], label="Frames per clip", step=1)
                stride = gr.Number(value=d["stride"], label="Frame stride", step=1)
                resolution = gr.Number(value=d["resolution"], label="Resolution", step=8)
            with gr.Row():
                use_8bit = gr.Checkbox(value=True, label="8-bit AdamW (bitsandbytes)")
                grad_ckpt = gr.Checkbox(value=True, label="Gradient checkpointing")
            with gr.Row():
                sample_prompt = gr.Textbox(value="", label="Sample prompt", placeholder="a red square zooming in",
                                           scale=3)
                sample_every = gr.Number(value=0, label="Sample every N steps", info="0: only at the end", step=1,
                                         scale=1)
                sample_steps = gr.Number(value=25, label="Sample steps", step=1, scale=1)
            with gr.Row():
                start = gr.Button("Start training", variant="primary", elem_id="train-start")
                cancel = gr.Button("Cancel", variant="stop", elem_id="train-cancel")
        with gr.Column(scale=4):
            progress = gr.Markdown("No training job yet.", label="Progress", elem_id="train-progress")
            loss = gr.LinePlot(loss_frame([]), x="step", y="loss", title="Loss", height=220, elem_id="train-loss")
            sample = gr.Image(label="Latest sample", type="filepath", interactive=False)
            gallery = gr.Gallery(label="Samples", columns=4, height=200)
            log_box = gr.Textbox(label="Log", lines=6, max_lines=12, interactive=False, elem_id="train-log",
                                 info="the trainer's output as it runs (its progress bar: one line per refresh)")

    @page_errors
    def defaults(preset, base):
        v = train_defaults(preset, _registered(studio, base))
        return v["steps"], v["lr"], v["rank"], v["batch_size"], v["frames"], v["stride"], v["resolution"]

    for comp in (preset, base):
        comp.input(defaults, inputs=[preset, base], outputs=[steps, lr, rank, batch, frames, stride, resolution],
                   api_visibility="private", concurrency_limit=None)

    @page_errors
    def train_start(preset, base, motion, name, clips, captions, dataset, steps, lr, rank, batch_size, frames,
                    stride, resolution, use_8bit, gradient_checkpointing, sample_prompt, sample_every, sample_steps):
        job = start_training(studio, TrainRequest(
            preset=preset, base=base, motion=motion or NO_MOTION, name=name, clips=check_uploads(clips, "Clips"),
            captions=captions, dataset=dataset or "", steps=steps, lr=lr, rank=rank, batch_size=batch_size,
            frames=frames, stride=stride, resolution=resolution, use_8bit=use_8bit,
            gradient_checkpointing=gradient_checkpointing, sample_prompt=sample_prompt, sample_every=sample_every,
            sample_steps=sample_steps))
        return f"**{job.name}** started: {job.total_steps} steps.\n\n" + "\n".join(f"- {n}" for n in job.notes)

    targets = list(drops.components)  # the dropdowns that exist now (the Library tab adds its own later)

    @page_errors
    def train_progress():
        job = studio.runner.job
        if job is None:
            yield "No training job yet.", *[gr.skip()] * 4, *[gr.skip()] * len(targets)
            return
        last, emitted = None, 0.0
        while True:
            snap = snapshot(studio, job)
            key = (snap["state"], snap["step"], len(snap["samples"]), snap["log"])
            done = snap["state"] != "running"
            if done or key != last or time.time() - emitted > HEARTBEAT_S:
                last, emitted = key, time.time()
                yield *_render(studio, job, snap), *(drops.updates(targets) if done else [gr.skip()] * len(targets))
            if done:
                if snap["state"] == "finished":
                    gr.Info(f"{job.name}: finished; {', '.join(snap['outputs']) or 'no adapter'} now in the lists")
                return
            time.sleep(POLL_S)

    @page_errors
    def train_cancel():
        if not studio.runner.cancel():
            return "No training job is running."
        return f"**{studio.runner.job.name}** cancelled; the device is free."

    inputs = [preset, base, motion, name, clips, captions, dataset, steps, lr, rank, batch, frames, stride, resolution,
              use_8bit, grad_ckpt, sample_prompt, sample_every, sample_steps]
    outputs = [progress, loss, sample, gallery, log_box, *targets]
    start.click(train_start, inputs=inputs, outputs=progress, api_name="train_start", concurrency_id=DEVICE).success(
        train_progress, outputs=outputs, api_name="train_progress", concurrency_limit=None)
    cancel.click(train_cancel, outputs=progress, api_name="train_cancel", concurrency_limit=None)
    return train_progress, outputs


def _registered(studio: Studio, base: str | None) -> str | None:
    try:
        return studio.library.resolve(BASE, base).registered if base else None
    except Exception:
        return None


def _render(studio: Studio, job: TrainingJob, snap: dict) -> tuple:
    """(progress markdown, loss frame, latest sample, gallery, log) for one snapshot."""
    lines = [f"**{job.name}** ({job.task}): **{snap['state']}** · step {snap['step']}/{snap['total']}"
             + (f" · loss {snap['loss']:.4f}" if snap["loss"] is not None else "")
             + f" · {_clock(snap['elapsed'])} elapsed" + (f" · ~{_clock(snap['eta'])} left" if snap["eta"] else "")]
    lines += [f"- {n}" for n in snap["notes"]]
    if snap["state"] == "finished":
        used = snap["used"] or {}
        if used:
            lines.append(f"- used: {'8-bit AdamW' if used.get('adamw8bit') else 'AdamW'}, gradient checkpointing "
                         f"{'on' if used.get('gradient_checkpointing') else 'off'}, mixed precision "
                         f"{used.get('mixed_precision')}")
        lines.append("- wrote " + (", ".join(f"`{n}`" for n in snap["outputs"]) or "nothing the library recognises")
                     + " (now in the dropdowns)")
    elif snap["state"] == "failed":
        lines.append(f"- the trainer exited with code {snap['returncode']}; its last lines are in the log below")
    frame = loss_frame(snap["losses"])
    samples = [_servable(studio, job, Path(p)) for p in snap["samples"]]
    return "\n".join(lines), frame, (samples[-1] if samples else None), samples[-12:], snap["log"]


def loss_frame(losses: list[tuple[int, float]]):
    """The loss chart's data: integer steps and float losses, typed even when empty, so that gradio gives the
    plot numeric axes from the first update (an untyped empty frame makes both axes categorical for good)."""
    import pandas as pd

    steps = pd.Series([s for s, _ in losses], dtype="int64")
    values = pd.Series([v for _, v in losses], dtype="float64")
    return pd.DataFrame({"step": steps, "loss": values})


def _servable(studio: Studio, job: TrainingJob, src: Path) -> str:
    """A copy of a sample inside the output folder: the only folder the server hands files out from."""
    dst = studio.cfg.output_dir / "training" / job.name / src.name
    if not dst.exists() or dst.stat().st_mtime < src.stat().st_mtime:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return str(dst)


def _clock(seconds: float | None) -> str:
    s = int(seconds or 0)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
