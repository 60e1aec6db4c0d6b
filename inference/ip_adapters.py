"""The generator's IP-Adapter: an image as a prompt (style or subject), beside the text.

The file and its CLIP image encoder are read and checked once and kept; the adapter is attached to the live
UNet (diffusers' ``load_ip_adapter``) only for the calls that have an image prompt and detached afterwards, so
every other call, and every swap, sees the plain UNet exactly as it was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from motion_adapters.errors import MotionAdapterError
from motion_adapters.formats.ip_adapter import (
    IPAdapterWeights,
    check_image_encoder_fits,
    check_ip_adapter_fits_base,
    default_image_encoder,
    read_image_encoder,
)
from motion_adapters.hub import resolve_source
from motion_adapters.inference.controlnets import file_stamp
from motion_adapters.inference.inputs import Frames, read_picture
from motion_adapters.inference.options import finite_number
from motion_adapters.kinds import KIND_IP_ADAPTER
from motion_adapters.loading import load_adapter
from motion_adapters.registry import is_registered

DEFAULT_IP_SCALE = 0.6  # how much the image prompt weighs beside the text (1 = as trained, text barely counts)
MAX_IP_SCALE = 2.0


@dataclass
class LoadedIPAdapter:
    source: str          # registered name or path as given (recipes)
    path: Path
    encoder_path: Path
    stamp: tuple         # sizes and mtimes of the file and the encoder folder
    weights: IPAdapterWeights
    encoder: torch.nn.Module   # CLIPVisionModelWithProjection
    processor: object          # CLIPImageProcessor


def check_ip_scale(label: str, scale) -> float:
    return finite_number(label, DEFAULT_IP_SCALE if scale is None else scale, 0.0, MAX_IP_SCALE)




class IPAdapterSlot:
    """One IP-Adapter with its image encoder, read once and attached around the calls that use it."""

    def __init__(self) -> None:
        self.loaded: LoadedIPAdapter | None = None

    @property
    def source(self) -> str | None:
        return self.loaded.source if self.loaded else None

    def load(self, model: str | Path, encoder: str | Path | None, *, unet_config, dtype: torch.dtype,
             device: str, label: str = "ip_adapter", encoder_label: str = "ip_encoder") -> LoadedIPAdapter:
        """Make ``model`` (with ``encoder``, default: the ``image_encoder`` folder beside it) the loaded
        IP-Adapter. The same unchanged files are not read again; new ones are read and checked in full before
        the slot changes."""
        path = Path(resolve_source(model))
        enc = Path(encoder) if encoder is not None else default_image_encoder(path)
        old = self.loaded
        if (old is not None and enc is not None and old.path == path.resolve() and old.encoder_path == enc.resolve()
                and old.stamp == file_stamp(path) + file_stamp(enc)):
            return old
        weights = load_adapter(path, expect=KIND_IP_ADAPTER)
        check_ip_adapter_fits_base(weights, unet_config, path)
        if enc is None:
            raise MotionAdapterError(f"{label} {model}: expected its CLIP image encoder folder (image_encoder/ beside "
                                     f"the file or in its parent folder, or {encoder_label}), found none")
        image_encoder, processor = read_image_encoder(enc)
        check_image_encoder_fits(weights, image_encoder, enc)
        image_encoder.to(device=device, dtype=dtype).eval().requires_grad_(False)
        source = str(model) if is_registered(str(model)) else str(path)
        self.loaded = LoadedIPAdapter(source, path.resolve(), enc.resolve(), file_stamp(path) + file_stamp(enc),
                                      weights, image_encoder, processor)
        return self.loaded

    def image_prompt(self, model, image, labels: Mapping[str, str]) -> Frames | None:
        """A call's image prompt, read (the IP-Adapter ``model`` is loaded later, after every other input is
        checked; default: the one loaded); an image without any IP-Adapter, or an IP-Adapter without an image, is
        an error naming them."""
        label, ip_label = labels.get("ip_image", "ip_image"), labels.get("ip_adapter", "ip_adapter")
        if image is None:
            if model is not None:
                raise MotionAdapterError(f"{ip_label} {model}: expected an image prompt ({label}) for it, found none")
            return None
        picture = read_picture(image, label)
        if model is None and self.loaded is None:
            raise MotionAdapterError(f"{label}: an image prompt needs an IP-Adapter; expected one ({ip_label}), "
                                     "found none loaded")
        return picture

    def unload(self) -> None:
        self.loaded = None

    @contextmanager
    def attached(self, pipe, scale: float) -> Iterator[None]:
        """The loaded IP-Adapter attached to ``pipe``'s UNet at ``scale`` for one call, then detached: the UNet's
        attention processors and image projection are put back as they were, even when the call fails."""
        entry = self.loaded
        if entry is None:
            raise MotionAdapterError("ip_image: expected an IP-Adapter loaded for it, found none")
        unet = pipe.unet
        plain = dict(unet.attn_processors)
        plain_proj, plain_type = unet.encoder_hid_proj, unet.config.encoder_hid_dim_type
        pipe.register_modules(image_encoder=entry.encoder, feature_extractor=entry.processor)
        try:
            pipe.load_ip_adapter(entry.weights.as_diffusers(), subfolder="", weight_name="",
                                 image_encoder_folder=None)
            pipe.set_ip_adapter_scale(scale)
            yield
        finally:
            unet.encoder_hid_proj = plain_proj  # first: a plus projection holds attention layers of its own
            unet.register_to_config(encoder_hid_dim_type=plain_type)
            unet.set_attn_processor(plain)
            pipe.register_modules(image_encoder=None, feature_extractor=None)

    def fingerprint(self) -> bytes:
        h = hashlib.sha256()
        if self.loaded is not None:
            e = self.loaded
            h.update(f"{e.path}|{e.encoder_path}|{e.stamp}".encode())
            for part in (e.weights.image_proj, e.weights.ip_adapter):
                for k, v in sorted(part.items()):
                    h.update(k.encode())
                    h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return h.digest()

