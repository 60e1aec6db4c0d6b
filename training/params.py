"""Which UNet parameters are temporal and which are spatial: decided by module type, never by name.

Temporal = everything inside an ``AnimateDiffTransformer3D`` (the motion modules, VideoCrafter's
"temporal transformer"). Spatial = every other UNet parameter (conv_in, time embedding, ResNets, the
``Transformer2DModel`` attentions, down/upsamplers, conv_out). VAE and text encoder are never trained.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from diffusers.models.attention_processor import Attention
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn


def temporal_modules(unet: nn.Module) -> dict[str, AnimateDiffTransformer3D]:
    """Every motion module (temporal transformer) by its qualified name."""
    return {n: m for n, m in unet.named_modules() if isinstance(m, AnimateDiffTransformer3D)}


def _prefixes(mods) -> tuple[str, ...]:
    return tuple(n + "." for n in mods)


def split_parameters(unet: nn.Module) -> tuple[dict[str, nn.Parameter], dict[str, nn.Parameter]]:
    """``(spatial, temporal)`` parameters of a UNet by module membership (PEFT LoRA params included)."""
    prefixes = _prefixes(temporal_modules(unet))
    spatial, temporal = {}, {}
    for name, p in unet.named_parameters():
        (temporal if name.startswith(prefixes) else spatial)[name] = p
    return spatial, temporal


def _linear_children(module: nn.Module, prefix: str, names: tuple[str, ...]) -> list[str]:
    out = []
    for sub, m in module.named_modules():
        if isinstance(m, nn.Linear) and any(sub == n or sub.startswith(n + ".") for n in names):
            out.append(f"{prefix}.{sub}")
    return out


def lora_targets(unet: nn.Module, where: str, which: str) -> list[str]:
    """Fully qualified ``nn.Linear`` names for a LoRA.

    ``where="temporal"``: attentions (and with ``which="attn_ff"`` the feed-forwards) of the motion modules.
    ``where="spatial"``: attentions of the ``Transformer2DModel`` blocks; ``which="attn"`` takes q/k/v/out of
    self- and cross-attention (v3 domain adapter), ``"attn1_ff"`` self-attention + feed-forward (MotionDirector).
    """
    proj = ("to_q", "to_k", "to_v", "to_out.0")
    if where == "temporal":
        owners = temporal_modules(unet)
        attn_names = ("attn1", "attn2")
        with_ff = which == "attn_ff"
    elif where == "spatial":
        owners = {n: m for n, m in unet.named_modules() if isinstance(m, Transformer2DModel)}
        attn_names = ("attn1",) if which == "attn1_ff" else ("attn1", "attn2")
        with_ff = which == "attn1_ff"
    else:
        raise ValueError(where)
    targets: list[str] = []
    for owner_name, owner in owners.items():
        for sub, m in owner.named_modules():
            leaf = sub.rsplit(".", 1)[-1]
            if isinstance(m, Attention) and leaf in attn_names:
                targets += _linear_children(m, f"{owner_name}.{sub}", proj)
            elif with_ff and leaf == "ff":
                targets += _linear_children(m, f"{owner_name}.{sub}", ("net",))
    if not targets:
        raise ValueError(f"no {where} LoRA targets found in {type(unet).__name__}")
    return sorted(targets)


@contextmanager
def temporal_bypass(unet: nn.Module) -> Iterator[None]:
    """Run image (F = 1) samples with every motion module cancelled: ``out = x + 0·(module(x) − x)``.

    VGen's trick for joint image-video training: the temporal branch still runs, so a DDP graph stays identical
    and its parameters get (zero) gradients, but the output is exactly the spatial UNet's.
    """
    def hook(module, args, kwargs, output):
        x = args[0] if args else kwargs["hidden_states"]
        return x + (output - x) * 0.0

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in temporal_modules(unet).values()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()

