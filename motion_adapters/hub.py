"""Resolving model arguments: local paths first, a Hugging Face Hub id only when online."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import AdapterFormatError
from .registry import is_registered, model_path

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PATTERNS = ["*.json", "*.txt", "*.safetensors", "*.ckpt", "tokenizer/*", "*/*.json", "*/*.safetensors"]


def resolve_source(src: str | Path) -> Path:
    """A registered short name (:mod:`motion_adapters.registry`, ``motion-adapters models``) first, then a local path
    as is, then ``org/name`` as a downloaded Hub snapshot (never needed offline)."""

    if is_registered(str(src)):  # names win; write ./NAME for a local folder of that name
        return model_path(str(src))
    p = Path(src)
    if p.exists():
        return p
    text = str(src)
    if not _HUB_ID.match(text):
        raise AdapterFormatError(p, "an existing file or folder", "nothing at that path")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, allow_patterns=_PATTERNS))
    except Exception as e:  # offline, unknown repo, auth …
        raise AdapterFormatError(
            text, "a local path, or a Hugging Face Hub id that can be downloaded now",
            f"no local path of that name, and the Hub download failed ({type(e).__name__}: {str(e)[:200]})",
        ) from e
