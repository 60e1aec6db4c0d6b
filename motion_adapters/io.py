"""Reading and writing weight files safely: safetensors, and pickles through ``weights_only=True`` only."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import AdapterFormatError, UnsafePickleError
from .files import atomic_file

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

CONVERT_PICKLE_HINT = (
    "It was refused without running it. If you trust where it came from, convert it once to safetensors "
    "in a throwaway environment: python -c \"import torch; from safetensors.torch import save_file; "
    "sd = torch.load('{path}', map_location='cpu', weights_only=False); sd = sd.get('state_dict', sd); "
    "save_file({{k: v.contiguous() for k, v in sd.items() if isinstance(v, torch.Tensor)}}, '{stem}.safetensors')\" "
    "and load the .safetensors file instead."
)


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise AdapterFormatError(path, "an existing file or folder", "nothing at that path")
    if path.is_file() and path.stat().st_size == 0:
        raise AdapterFormatError(path, "a weight file (.safetensors or .ckpt)", "an empty file (0 bytes)")


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor and the ``__metadata__`` header of a safetensors file."""
    path = Path(path)
    _check_exists(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise AdapterFormatError(
            path, "a complete safetensors file", f"an unreadable or truncated file ({e})"
        ) from e
    return tensors, metadata


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """Read only the ``__metadata__`` header (cheap: no tensor data is touched)."""
    path = Path(path)
    _check_exists(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise AdapterFormatError(path, "a complete safetensors file", f"an unreadable file ({e})") from e


WRAPPER_KEYS = ("state_dict", "controlnet")  # AnimateDiff v3 SparseCtrl files nest under "controlnet"


def unwrap_state_dict(obj: object) -> object:
    """Descend into nested ``state_dict`` wrappers, as diffusers' single-file loader does (and into the
    ``controlnet`` one of AnimateDiff's SparseCtrl files)."""
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            return obj
        obj = inner
    return obj


def flatten_state_dict(obj: Mapping) -> dict[str, torch.Tensor]:
    """The tensors of a pickled dict; a dict of tensors one level down (h94's IP-Adapter ``.bin``:
    ``{"image_proj": {…}, "ip_adapter": {…}}``) is flattened to ``image_proj.…`` / ``ip_adapter.…`` keys,
    the layout of the same files as ``.safetensors``. Other values (``animatediff_config``, ``epoch``) drop."""
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str):
            continue
        if isinstance(v, torch.Tensor):
            out[k] = v
        elif isinstance(v, Mapping) and v and all(isinstance(t, torch.Tensor) for t in v.values()):
            out.update({f"{k}.{name}": t for name, t in v.items() if isinstance(name, str | int)})
    return out


def read_pickle(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a torch pickle with ``weights_only=True``; never run code from the file."""
    path = Path(path)
    _check_exists(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = str(e).splitlines()[0] if str(e) else "a pickle that needs arbitrary code"
        if "weights_only" in str(e) or "global" in str(e).lower() or "Unsupported" in str(e):
            raise UnsafePickleError(
                path,
                "a pickle of plain tensors (loadable with weights_only=True)",
                f"a pickle that would run code or build custom objects ({found})",
                CONVERT_PICKLE_HINT.format(path=path, stem=path.with_suffix("")),
            ) from e
        raise AdapterFormatError(path, "a torch checkpoint", f"a corrupt pickle ({found})") from e
    # SafetensorError: torch.load hands a file that is no pickle to safetensors before giving up
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, IndexError, KeyError, SafetensorError) as e:
        raise AdapterFormatError(path, "a torch checkpoint", f"an unreadable or truncated file ({e})") from e
    obj = unwrap_state_dict(obj)
    if not isinstance(obj, Mapping):
        raise AdapterFormatError(path, "a dict of tensors", f"a pickled {type(obj).__name__}")
    return flatten_state_dict(obj), {}


def is_safetensors_head(head: bytes) -> bool:
    """Whether a file's first bytes open a safetensors header (an 8-byte little-endian length, then ``{``)."""
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < 100_000_000 and head[8:9] == b"{"


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read tensors and metadata from a ``.safetensors`` or (safely) a pickle file.

    The container is decided by content, not by suffix: a safetensors file renamed ``.ckpt`` still loads.
    Non-tensor entries (``animatediff_config``, ``epoch`` …) are dropped and ``state_dict`` wrappers unwrapped.
    """
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        raise AdapterFormatError(path, "a weight file", "a folder (pass the file inside it, or use load_base)")
    with open(path, "rb") as f:
        head = f.read(16)
    # safetensors first: its 8-byte little-endian header length may well start with 0x80 (e.g. 0xee80)
    if is_safetensors_head(head):
        tensors, metadata = read_safetensors(path)
        return unwrap_prefix_state_dict(tensors), metadata
    if head[:2] == b"PK" or head[:1] == b"\x80":  # zip-based torch.save or legacy pickle
        return read_pickle(path)
    raise AdapterFormatError(
        path,
        "a .safetensors file or a torch .ckpt/.pt pickle",
        f"unrecognised bytes {head[:8]!r} (random data, a truncated download or another format)",
    )


def unwrap_prefix_state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip a ``state_dict.`` key prefix that some converters flatten into safetensors files."""
    if tensors and all(k.startswith("state_dict.") for k in tensors):
        return {k[len("state_dict.") :]: v for k, v in tensors.items()}
    return tensors


def save_safetensors_atomic(
    tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write a safetensors file to a temporary name in the same folder, then rename it into place."""
    path = Path(path)
    with atomic_file(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata=dict(metadata or {}))
    return path


def save_pickle_atomic(tensors: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Write a plain dict of tensors with ``torch.save`` (loadable with ``weights_only=True``), atomically."""
    path = Path(path)
    with atomic_file(path) as tmp:
        torch.save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    return path
