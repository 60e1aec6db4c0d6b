"""SparseCtrl encoders in memory: a diffusers ``SparseControlNetModel`` config and state dict, whatever layout
they came in (AnimateDiff v3's original ``.ckpt``, a diffusers folder, our ``.safetensors``).

A SparseCtrl encoder is a ControlNet with motion modules that conditions a few keyframes of a clip: ``rgb``
encoders take pictures (encoded by the VAE), ``scribble`` encoders take line maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

SPARSECTRL_KINDS = ("rgb", "scribble")


@dataclass
class SparseCtrlWeights:
    """A SparseCtrl encoder: ``config`` is diffusers' ``SparseControlNetModel`` config (no ``_`` keys),
    ``state_dict`` uses diffusers' ``SparseControlNetModel`` key names."""

    config: dict
    state_dict: dict[str, torch.Tensor]
    source_format: str                 # "original" | "diffusers-folder" | "diffusers-single-file" | "ours"
    control_kind: str                  # "rgb" (pictures) | "scribble" (line maps)
    family: str = "sd15"
    metadata: dict = field(default_factory=dict)
    source: str = "<sparsectrl>"       # the file or folder it was read from, for messages

    @property
    def num_params(self) -> int:
        return sum(t.numel() for t in self.state_dict.values())
