"""ControlNets in memory: a diffusers ``ControlNetModel`` config and state dict, whatever layout they came in.

Read by :func:`motion_adapters.loading.load_adapter` (``expect=KIND_CONTROLNET``) from a diffusers folder, a
community single file (lllyasviel ``control_*.pth`` / ``.safetensors``, with or without ``control_model.``) or
our own ``.safetensors``; built into a live model by :func:`motion_adapters.swap.build_controlnet`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ControlNetWeights:
    """A ControlNet: ``config`` is diffusers' ``ControlNetModel`` config (no ``_`` keys), ``state_dict`` uses
    diffusers' ``ControlNetModel`` key names."""

    config: dict
    state_dict: dict[str, torch.Tensor]
    source_format: str                 # "diffusers-folder" | "ldm-single-file" | "ours"
    control_kind: str | None = None    # "canny", "depth", "openpose", … or "silhouette"; None: not told by the file
    family: str = "sd15"               # "sd15" | "sdxl"
    metadata: dict = field(default_factory=dict)

    @property
    def conditioning_channels(self) -> int:
        return int(self.config.get("conditioning_channels", 3))

    @property
    def num_params(self) -> int:
        return sum(t.numel() for t in self.state_dict.values())
