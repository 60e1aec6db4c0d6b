"""IP-Adapters in memory: the image projection and the per-layer key/value projections of an image prompt, in
the two-part layout diffusers' ``load_ip_adapter`` takes (``{"image_proj": …, "ip_adapter": …}``).

Read from h94's files (``ip-adapter_sd15``, ``-plus``, ``-plus-face``, ``-full-face``; ``.bin`` through
``weights_only`` or ``.safetensors`` with ``image_proj.`` / ``ip_adapter.`` prefixes) or ours. The CLIP image
encoder they need is a local diffusers/transformers folder (``CLIPVisionModelWithProjection``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

IP_ADAPTER_VARIANTS = ("plain", "plus", "plus-face", "full-face")


@dataclass
class IPAdapterWeights:
    """An IP-Adapter: ``image_proj`` and ``ip_adapter`` are the two state dicts of h94's layout."""

    image_proj: dict[str, torch.Tensor]
    ip_adapter: dict[str, torch.Tensor]
    variant: str                       # one of IP_ADAPTER_VARIANTS
    family: str                        # "sd15" | "sdxl" (from the key/value projections' input width)
    cross_attention_dim: int           # the text width the image tokens are projected to
    image_embed_dim: int               # what the image encoder must give: projection_dim (plain) or hidden_size
    num_tokens: int                    # image tokens added to each cross attention
    source_format: str = "h94"         # "h94" | "ours"
    metadata: dict = field(default_factory=dict)
    source: str = "<ip-adapter>"

    @property
    def uses_hidden_states(self) -> bool:
        """Plus / face variants read the encoder's penultimate hidden states, plain ones its image embeds."""
        return self.variant != "plain"

    def as_diffusers(self) -> dict[str, dict[str, torch.Tensor]]:
        """The dict diffusers' ``load_ip_adapter`` takes."""
        return {"image_proj": dict(self.image_proj), "ip_adapter": dict(self.ip_adapter)}

    @property
    def num_params(self) -> int:
        return sum(t.numel() for d in (self.image_proj, self.ip_adapter) for t in d.values())
