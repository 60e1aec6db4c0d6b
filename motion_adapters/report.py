"""The ``inspect`` report (what a weight file or folder is) as aligned text."""

from __future__ import annotations

import json


def _human(n: int) -> str:
    for unit in ("", "K", "M", "B"):
        if abs(n) < 1000:
            return f"{n:.3g}{unit}" if unit else str(n)
        n /= 1000
    return f"{n:.3g}T"


def format_report(report: dict) -> str:
    """The ``inspect`` report as aligned text (what ``motion-adapters inspect`` prints)."""
    order = ["path", "kind", "control_kind", "variant", "format", "version", "base_family", "channels",
             "mid_block", "pe_length", "max_frames", "num_modules", "lora_rank", "conditioning_channels",
             "conditioning_mask", "cross_attention_dim", "image_embed_dim", "image_input", "num_tokens",
             "num_layers", "components", "num_params", "dtype", "file_size_bytes", "guessed"]
    width = max(16, *(len(k) for k in order if k in report))
    lines = []
    for key in order:
        if key in report:
            value = report[key]
            if key == "num_params":
                value = f"{value:,} ({_human(value)})"
            elif key == "components" and isinstance(value, dict):
                value = ", ".join(f"{k} {_human(v)}" for k, v in value.items())
            lines.append(f"{key.replace('_', ' '):>{width}}: {value}")
    if report.get("metadata"):
        lines.append(f"{'metadata':>{width}}:")
        for k, v in report["metadata"].items():
            text = json.dumps(v) if not isinstance(v, str) else v
            lines.append(f"{'':>{width + 2}}{k}: {text[:200]}")
    return "\n".join(lines)


def print_report(report: dict) -> None:
    print(format_report(report))
