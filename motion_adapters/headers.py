"""What a weight file holds, told from its header alone: tensor names and metadata, no tensor data read.

For scanning folders of multi-gigabyte checkpoints cheaply (the studio's model library); loading a file is
:func:`motion_adapters.loading.load_adapter`'s job, and it classifies by the same rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import AdapterFormatError
from .formats import ours
from .io import (
    flatten_state_dict,
    is_safetensors_head,
    read_pickle,
    unwrap_prefix_state_dict,
    unwrap_state_dict,
)
from .kinds import sniff_keys


def read_keys(path: str | Path) -> tuple[list[str], dict[str, str]]:
    """The tensor names and ``__metadata__`` of a safetensors file (header only) or of a torch pickle
    (memory-mapped with ``weights_only=True``; a legacy pickle is read in full, safely). Container decided
    by content, ``state_dict`` wrappers unwrapped, as :func:`motion_adapters.io.read_state_dict` does."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if is_safetensors_head(head):
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                keys = list(f.keys())
                metadata = dict(f.metadata() or {})
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise AdapterFormatError(path, "a complete safetensors file", f"an unreadable file ({e})") from e
        return list(unwrap_prefix_state_dict(dict.fromkeys(keys))), metadata
    if head[:2] == b"PK" or head[:1] == b"\x80":  # zip-based torch.save or legacy pickle
        try:
            obj = unwrap_state_dict(torch.load(str(path), map_location="cpu", weights_only=True, mmap=True))
        except Exception:  # legacy (non-zip) pickles cannot be memory-mapped: the safe full read
            return list(read_pickle(path)[0]), {}
        return (list(flatten_state_dict(obj)) if isinstance(obj, Mapping) else []), {}
    raise AdapterFormatError(path, "a .safetensors file or a torch .ckpt/.pt pickle",
                             f"unrecognised bytes {head[:8]!r}")


def file_kind(path: str | Path) -> str:
    """A weight file's kind (a ``KIND_*`` name, or :func:`~motion_adapters.kinds.sniff_keys`' ``unknown`` /
    ``unsupported: …``): our header's when the file carries one, else told by its tensor names."""
    keys, metadata = read_keys(path)
    declared = ours.parse_metadata(metadata).get("kind") if ours.is_ours(metadata) else None
    return declared or sniff_keys(dict.fromkeys(keys))
