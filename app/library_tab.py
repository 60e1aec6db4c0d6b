"""The Library tab: what every discovered file is (``motion-adapters inspect``), conversion to another layout,
adding an uploaded model, and a rescan of the models directories."""

from __future__ import annotations

import json

from motion_adapters.app.library import add_upload, convert_entry, inspect_entry, inspect_upload, report_text
from motion_adapters.app.models import WEIGHT_SUFFIXES
from motion_adapters.app.studio import Studio
from motion_adapters.app.ui import Dropdowns, check_uploads, hide_upload_paths, page_errors


def library_table(studio: Studio) -> str:
    rows = [f"| `{e.name}` | {e.kind} | {e.detail} |" for e in studio.library.entries()]
    dirs = ", ".join(f"`{d}`" for d in studio.library.dirs) or "none"
    return "\n".join([f"Models directories: {dirs} (plus the embedded models).", "",
                      "| name | kind | what |", "|---|---|---|", *rows])


def build_library_tab(studio: Studio, drops: Dropdowns):
    """The Library tab: inspect, convert, upload, rescan; returns its table (the page refreshes it on opening)."""
    import gradio as gr  # the app extra: loaded when a page is built, not when the CLI starts

    names = studio.library.names()
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            model = drops.add("any", value=names[0] if names else None, label="Model", elem_id="lib-model")
            inspect_btn = gr.Button("Inspect", variant="primary")
            with gr.Row():
                to = gr.Dropdown(choices=["ours", "original", "diffusers", "kohya"], value="ours", label="Convert to",
                                 info="motion modules: ours/original/diffusers; LoRAs: + kohya; bases: "
                                 "original/diffusers")
                out_name = gr.Textbox(value="", label="Output name", placeholder="automatic",
                                      info="written to converted/ in the first models directory")
            convert_btn = gr.Button("Convert")
            convert_md = gr.Markdown(label="Result")
            upload = gr.File(label="Upload a model file", file_types=list(WEIGHT_SUFFIXES), type="filepath")
            with gr.Row():
                inspect_upload_btn = gr.Button("Inspect upload")
                add_btn = gr.Button("Add to the models directory")
            rescan_btn = gr.Button("Rescan the models directories")
        with gr.Column(scale=5):
            report = gr.Code(label="Report", language=None, lines=14, interactive=False)
            report_json = gr.Code(label="Report (JSON)", language="json", interactive=False, lines=4, max_lines=20)
    table = gr.Markdown(library_table(studio), label="Library")

    targets = list(drops.components)

    @page_errors
    def inspect(name):
        rep = inspect_entry(studio.library, name)
        return f"$ motion-adapters inspect {rep['path']}\n{report_text(rep)}", json.dumps(rep, indent=1, default=str)

    @page_errors
    def inspect_uploaded(file):
        paths = check_uploads(file, "Upload")
        if not paths:
            raise gr.Error("Upload: expected a model file, found none")
        rep = inspect_upload(paths[0], studio.cfg.max_upload_bytes)
        text = f"$ motion-adapters inspect {rep['path']}\n{report_text(rep)}"
        return hide_upload_paths(text), hide_upload_paths(json.dumps(rep, indent=1, default=str))

    @page_errors
    def convert(name, to, out_name):
        new = convert_entry(studio.library, name, to, out_name)
        return f"wrote `{new}`; it is in the lists now", library_table(studio), *drops.updates(targets)

    @page_errors
    def add(file):
        paths = check_uploads(file, "Upload")
        if not paths:
            raise gr.Error("Upload: expected a model file, found none")
        new = add_upload(studio.library, paths[0], studio.cfg.max_upload_bytes)
        return f"added `{new}`; it is in the lists now", library_table(studio), *drops.updates(targets)

    @page_errors
    def rescan():
        counts = studio.library.scan()
        summary = ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in counts.items())
        return f"found {summary}", library_table(studio), *drops.updates(targets)

    inspect_btn.click(inspect, inputs=model, outputs=[report, report_json], api_name="inspect",
                      concurrency_id="library")
    inspect_upload_btn.click(inspect_uploaded, inputs=upload, outputs=[report, report_json], api_name="inspect_upload",
                             concurrency_id="library")
    refresh = [convert_md, table, *targets]
    convert_btn.click(convert, inputs=[model, to, out_name], outputs=refresh, api_name="convert",
                      concurrency_id="library")
    add_btn.click(add, inputs=upload, outputs=refresh, api_name="add_model", concurrency_id="library")
    rescan_btn.click(rescan, outputs=refresh, api_name="rescan", concurrency_id="library")
    return table
