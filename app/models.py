"""The studio's model library: what is in the models directories (sniffed) plus the embedded models.

Every dropdown value is a *display name* from this library; the server maps it back to a path. Nothing else
is accepted: a name that is not in the current scan is refused (:class:`NotInLibrary`), so no request can
point the server at an arbitrary file.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from motion_adapters import registry
from motion_adapters.errors import MotionAdapterError
from motion_adapters.headers import file_kind
from motion_adapters.kinds import KIND_CONTROLNET, KIND_IP_ADAPTER, KIND_SPARSECTRL
from motion_adapters.loading import folder_kind

log = logging.getLogger(__name__)

BASE, MOTION, LORA, CONTROLNET, DATASET = "base", "motion", "lora", "controlnet", "dataset"
SPARSECTRL, IP_ADAPTER = "sparsectrl", "ip_adapter"
KINDS = (BASE, MOTION, LORA, CONTROLNET, SPARSECTRL, IP_ADAPTER, DATASET)
NO_MOTION = "none"  # the motion dropdown's "no motion module" choice
WEIGHT_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")
DATASET_FILES = ("metadata.jsonl", "metadata.csv")
# training-run internals: accelerate states, TensorBoard logs, latent caches and samples are not models
SKIP_DIRS = {"checkpoints", "logs", "latents", "validation", "__pycache__", "node_modules"}
MAX_DEPTH = 6
MAX_FILES = 5000
_KIND_OF = {"sd_checkpoint": BASE, "motion_module": MOTION, "motion_lora": LORA, "spatial_lora": LORA,
            "lora-folder": LORA, KIND_CONTROLNET: CONTROLNET, KIND_SPARSECTRL: SPARSECTRL,
            KIND_IP_ADAPTER: IP_ADAPTER}
_LABEL = {"sd_checkpoint": "SD checkpoint", "motion_module": "motion module", "motion_lora": "motion LoRA",
          "spatial_lora": "spatial LoRA", "lora-folder": "LoRA (diffusers folder)", KIND_CONTROLNET: "ControlNet",
          KIND_SPARSECTRL: "SparseCtrl encoder", KIND_IP_ADAPTER: "IP-Adapter"}


class NotInLibrary(MotionAdapterError):
    """A requested model or dataset is not one of the discovered ones."""


@dataclass(frozen=True)
class Entry:
    """One discovered model or dataset."""

    name: str          # display name: unique, the dropdowns' value
    kind: str          # base | motion | lora | controlnet | sparsectrl | ip_adapter | dataset
    path: Path         # resolved file or folder
    detail: str        # what it is, for humans ("motion LoRA", "SD checkpoint", "dataset (12 rows)" …)
    registered: str | None = None  # the registry name of an embedded model

    @property
    def source(self) -> str:
        """What the generator and the trainer get: the registered short name, else the path."""
        return self.registered or str(self.path)


def sniff_file(path: Path) -> str | None:
    """The kind of a weight file from its keys and header only (no tensor data for safetensors); None if
    it is not a model the studio offers."""
    kind = file_kind(path)
    return kind if kind in _KIND_OF else None


def _folder_entry(path: Path) -> tuple[str, str] | None:
    """(kind, detail) of a model or dataset folder, None for an ordinary folder."""
    kind = folder_kind(path)
    if kind in _KIND_OF:
        return _KIND_OF[kind], _LABEL[kind] + ("" if kind == "lora-folder" else " (diffusers folder)")
    meta = next((path / n for n in DATASET_FILES if (path / n).is_file()), None)
    if meta is not None:
        rows = sum(1 for line in meta.read_text(errors="replace").splitlines() if line.strip())
        rows -= meta.suffix == ".csv"  # header
        return DATASET, f"dataset ({rows} rows, {meta.name})"
    return None


class ModelLibrary:
    """Scans the models directories; maps display names to paths (the allow-list)."""

    def __init__(self, dirs: list[Path], embedded: bool = True, skip: list[Path] | None = None):
        self.dirs = [Path(d).resolve() for d in dirs]
        self.embedded = embedded
        self.skip = [Path(p).resolve() for p in (skip or [])]
        self._entries: dict[str, Entry] = {}
        self._sniffed: dict[tuple, str | None] = {}  # (path, size, mtime) -> kind, so rescans are cheap
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------- scan
    def scan(self) -> dict[str, int]:
        """Rediscover everything; returns the count per kind."""
        found: list[Entry] = []
        seen: set[Path] = set()
        if self.embedded:
            found += self._embedded(seen)
        for root in self.dirs:
            if root.is_dir():
                found += self._walk(root, seen)
        names = self._unique_names(found)
        with self._lock:
            self._entries = {n: e for n, e in names.items()}
        counts = {k: len(self.names(k)) for k in KINDS}
        log.info("model library: %s", ", ".join(f"{n} {k}" for k, n in counts.items()))
        return counts

    def _embedded(self, seen: set[Path]) -> list[Entry]:
        out = []
        for m in registry.models().values():
            if m.kind not in _KIND_OF or not registry.is_available(m.name):  # e.g. a ControlNet: not listed here
                continue
            p = registry.model_path(m.name).resolve()
            seen.add(p)
            out.append(Entry(m.name, _KIND_OF[m.kind], p, f"{_LABEL[m.kind]} (embedded)", registered=m.name))
        return out

    def _walk(self, root: Path, seen: set[Path]) -> list[Entry]:
        out: list[Entry] = []
        budget = MAX_FILES
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            here = Path(dirpath)
            depth = len(here.relative_to(root).parts)
            keep = []
            for d in sorted(dirnames):
                sub = here / d
                if d.startswith(".") or d in SKIP_DIRS or depth >= MAX_DEPTH or sub.resolve() in self.skip:
                    continue
                try:
                    info = _folder_entry(sub)
                except Exception as e:  # unreadable config.json, permissions …
                    log.info("model library: skipping %s (%s)", sub, e)
                    continue
                if info is None:
                    keep.append(d)
                elif sub.resolve() not in seen:
                    seen.add(sub.resolve())
                    out.append(Entry(self._rel(root, sub), info[0], sub.resolve(), info[1]))
            dirnames[:] = keep  # do not descend into model or dataset folders
            for f in sorted(filenames):
                p = here / f
                if f.startswith(".") or p.suffix.lower() not in WEIGHT_SUFFIXES or p.resolve() in seen:
                    continue
                budget -= 1
                if budget < 0:
                    log.warning("model library: more than %d weight files under %s; the rest is skipped",
                                MAX_FILES, root)
                    return out
                kind = self._sniff_cached(p)
                if kind is None:
                    continue
                seen.add(p.resolve())
                out.append(Entry(self._rel(root, p), _KIND_OF[kind], p.resolve(), _LABEL[kind]))
        return out

    def _sniff_cached(self, p: Path) -> str | None:
        try:
            st = p.stat()
            key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
            if key not in self._sniffed:
                self._sniffed[key] = sniff_file(p)
                if self._sniffed[key] is None:
                    log.info("model library: %s is not a model this toolkit reads; skipped", p)
            return self._sniffed[key]
        except Exception as e:
            log.info("model library: skipping %s (%s)", p, e)
            return None

    def _rel(self, root: Path, p: Path) -> str:
        rel = p.relative_to(root).as_posix()
        return f"{root.name}/{rel}" if len(self.dirs) > 1 else rel

    @staticmethod
    def _unique_names(entries: list[Entry]) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        for e in entries:
            name, i = e.name, 2
            while name in out or name == NO_MOTION:
                name, i = f"{e.name} ({i})", i + 1
            out[name] = Entry(name, e.kind, e.path, e.detail, e.registered)
        return out

    # ----------------------------------------------------------------------------------------- lookup
    def names(self, kind: str | None = None) -> list[str]:
        with self._lock:
            return [n for n, e in self._entries.items() if kind is None or e.kind == kind]

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries.values())

    def resolve(self, kind: str | None, name: str) -> Entry:
        """The entry of a display name of this kind, or :class:`NotInLibrary` (the allow-list check)."""
        what = {BASE: "base", MOTION: "motion module", LORA: "LoRA", CONTROLNET: "ControlNet",
                SPARSECTRL: "SparseCtrl encoder", IP_ADAPTER: "IP-Adapter", DATASET: "dataset", None: "model"}[kind]
        if not isinstance(name, str) or not name:
            raise NotInLibrary(f"{what}: expected a name from the list, found {name!r}")
        with self._lock:
            entry = self._entries.get(name)
        if entry is None or (kind is not None and entry.kind != kind):
            found = f"a {entry.kind}" if entry is not None else "no such entry"
            raise NotInLibrary(f"{what} {name[:120]!r}: expected one of the {what}s found in the models "
                               f"directories (pick one from the list; files elsewhere are never read), found {found}")
        return entry

    def named_in_recipe(self, kind: str, entry: dict) -> str | None:
        """The library name of a recipe's model entry (its ``path`` is the source the generator was given), None
        when no model of this kind has that source any more."""
        return next((e.name for e in self.entries() if e.kind == kind and e.source == entry.get("path")), None)

    def contains(self, path: Path) -> bool:
        """Whether ``path`` lies inside a models directory."""
        p = Path(path).resolve()
        return any(p == d or d in p.parents for d in self.dirs)

    @property
    def workspace(self) -> Path:
        """Where the studio writes (trained adapters, conversions, uploads): the first models directory."""
        if not self.dirs:
            raise MotionAdapterError("no models directory: start the studio with --models-dir DIR to train, "
                                     "convert or upload")
        return self.dirs[0]
