"""Captioned video / image datasets in the shared folder format, sampled as a deterministic stream.

Folder format (shared with the curation tool): ``metadata.jsonl`` or ``metadata.csv`` with columns
``file_name`` (relative path: a video file, a folder of frame images sorted by name, or an image) and
``text`` (caption); WebVid's ``videoid,name,page_dir`` columns are accepted too (``{page_dir}/{videoid}.mp4``).

Every random choice of an item (which clip, start frame, flip, empty caption, noise seed) is drawn from a
generator seeded by ``(seed, stream position)``. The stream is what a sampler hands out, so a run gives the
same samples whatever the number of processes, and a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset, Sampler

from motion_adapters.clips.controls import compute_maps
from motion_adapters.clips.media import (
    MediaError,
    clip_indices,
    count_frames,
    media_kind,
    read_frames,
    resize_center_crop,
)
from motion_adapters.errors import MotionAdapterError
from motion_adapters.io import save_safetensors_atomic
from motion_adapters.training.config import DataConfig

log = logging.getLogger(__name__)
MAX_TRIES = 8


class DataError(MotionAdapterError):
    """The dataset is unusable (bad metadata, too many broken files)."""


@dataclass
class Entry:
    file: Path
    rel: str
    caption: str
    kind: str  # video | image


def read_metadata(folder: Path, cfg: DataConfig) -> tuple[list[Entry], list[tuple[str, str]]]:
    """Entries of a dataset folder and the rows refused up front (missing or unsupported files)."""
    if not folder.is_dir():
        raise DataError(f"data.path {folder}: expected a dataset folder, found {'a file' if folder.exists() else 'nothing'}")
    names = [cfg.metadata] if cfg.metadata else ["metadata.jsonl", "metadata.csv"]
    meta = next((folder / n for n in names if (folder / n).exists()), None)
    if meta is None:
        raise DataError(f"{folder}: expected {' or '.join(names)} with columns {cfg.file_column},{cfg.caption_column} "
                        f"(or WebVid videoid,name,page_dir), found {sorted(p.name for p in folder.iterdir())[:8]}")
    if meta.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(meta.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{meta}:{i}: expected a JSON object per line, found {line[:60]!r}") from e
    else:
        with open(meta, newline="") as f:
            rows = list(csv.DictReader(f))
    if not rows:
        raise DataError(f"{meta}: expected at least one row, found none")
    cols = set(rows[0])
    webvid = cfg.file_column not in cols and {"videoid", "name"} <= cols
    if not webvid:
        for col in (cfg.file_column, cfg.caption_column):
            if col not in cols:
                raise DataError(f"{meta}: expected a column {col!r} (data.file_column / data.caption_column, or "
                                f"WebVid videoid,name,page_dir), found columns {sorted(cols)}")
    entries, refused = [], []
    for row in rows:
        if webvid:
            vid, caption = str(row["videoid"]), row["name"]
            cands = [f"{row['page_dir']}/{vid}.mp4"] if row.get("page_dir") else []
            rel = next((c for c in cands if (folder / c).exists()), f"{vid}.mp4")
        else:
            rel, caption = str(row[cfg.file_column]), row[cfg.caption_column]
        path = folder / rel
        if not path.exists():
            refused.append((rel, "missing"))
            continue
        try:
            kind = media_kind(path)
        except MediaError as e:
            refused.append((rel, str(e)))
            continue
        entries.append(Entry(path, rel, "" if caption is None else str(caption), kind))
    return entries, refused


def _seed(*parts: int) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


class StreamSampler(Sampler[int]):
    """Stream positions ``0 … length−1``; the dataset maps each to an item deterministically."""

    def __init__(self, length: int):
        self.length = length

    def __iter__(self):
        return iter(range(self.length))

    def __len__(self) -> int:
        return self.length


class LatentCache:
    """VAE latent distributions (mean, std) of every frame of a file, keyed by file + size + mtime + params."""

    def __init__(self, root: str | Path, resolution: int):
        self.root = Path(root)
        self.resolution = resolution

    def path(self, entry: Entry, flip: bool) -> Path:
        st = entry.file.stat() if entry.file.is_file() else None
        stamp = (st.st_size, st.st_mtime_ns) if st else tuple(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(entry.file.iterdir()))
        key = hashlib.sha1(repr((str(entry.file.resolve()), stamp, self.resolution, flip)).encode()).hexdigest()
        return self.root / f"{key}.safetensors"

    def load(self, path: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not path.exists():
            return None
        t = load_file(str(path))
        return t["mean"], t["std"]

    @staticmethod
    def save(path: Path, mean: torch.Tensor, std: torch.Tensor) -> None:
        save_safetensors_atomic({"mean": mean.float(), "std": std.float()}, path)


def to_tensor(frames: list[np.ndarray], size: int, flip: bool) -> torch.Tensor:
    """(F, 3, size, size) pixels in [-1, 1]: each frame resized, centre-cropped and (``flip``) mirrored."""
    arr = np.stack([resize_center_crop(f, size) for f in frames])
    if flip:
        arr = arr[:, :, ::-1]
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def control_tensor(pixels: torch.Tensor, preprocessor: str) -> torch.Tensor:
    """(F, 3, H, W) control maps in [0, 1] of (F, 3, H, W) pixels in [-1, 1] (what the model sees)."""
    frames = ((pixels.permute(0, 2, 3, 1) + 1.0) / 2.0).clamp(0, 1).numpy().astype(np.float32)
    maps = compute_maps(frames, preprocessor, label="controlnet.preprocessor")
    return torch.from_numpy(np.ascontiguousarray(maps)).permute(0, 3, 1, 2).float()


class VideoDataset(Dataset):
    """Items for stream positions: ``dict(kind, text, seed, pixels | latents, …)`` (see module docstring)."""

    def __init__(self, cfg: DataConfig, seed: int, path: str | None = None, sample: str | None = None,
                 control: str | None = None):
        self.cfg = cfg
        self.control = control  # a preprocessor name: every item also gets ``control`` maps of its frames
        self.seed = seed
        self.sample = sample or cfg.sample
        self.folder = Path(path or cfg.path)
        self.entries, self.refused = read_metadata(self.folder, cfg)
        total = len(self.entries) + len(self.refused)
        if not self.entries:
            raise DataError(f"{self.folder}: expected usable media files, found none of {total} rows "
                            f"(first problem: {self.refused[0] if self.refused else 'empty'})")
        if len(self.refused) / total > cfg.max_failed_fraction:
            raise DataError(_too_many(self.folder, len(self.refused), total, cfg.max_failed_fraction, self.refused))
        self.cache = LatentCache(cfg.latent_cache, cfg.resolution) if cfg.latent_cache else None
        self.min_frames = cfg.min_frames or 1
        self._perm: dict[int, np.ndarray] = {}
        self.images: VideoDataset | None = None
        if cfg.images_per_sample and cfg.images:
            if cfg.images == "same":
                self.images = VideoDataset._frames_of(self)
            else:
                self.images = VideoDataset(cfg, seed + 1, path=cfg.images, sample="frame")

    @classmethod
    def _frames_of(cls, other: VideoDataset) -> VideoDataset:
        ds = cls.__new__(cls)
        ds.__dict__.update(other.__dict__)
        ds.sample, ds.seed, ds.images, ds._perm = "frame", other.seed + 1, None, {}
        return ds

    def summary(self) -> dict:
        kinds = [e.kind for e in self.entries]
        return {"path": str(self.folder), "items": len(self.entries), "videos": kinds.count("video"),
                "images": kinds.count("image"), "refused_up_front": len(self.refused),
                "num_frames": self.cfg.num_frames, "stride": self.cfg.stride, "resolution": self.cfg.resolution,
                "sample": self.sample, "hflip": self.cfg.hflip, "joint_images": self.cfg.images_per_sample}

    def __len__(self) -> int:
        return len(self.entries)

    def _index(self, p: int) -> int:
        n = len(self.entries)
        epoch = p // n
        if epoch not in self._perm:
            self._perm = {epoch: np.random.default_rng(_seed(self.seed, epoch)).permutation(n)}
        return int(self._perm[epoch][p % n])

    def __getitem__(self, p: int) -> dict:
        rng = np.random.default_rng(_seed(self.seed, p, 1))
        item = self._load(self._index(p), rng)
        item["seed"] = _seed(self.seed, p, 2)
        if self.images is not None:
            n = len(self.images.entries)
            item["images"] = []
            for j in range(self.cfg.images_per_sample):
                sub = self.images._load(int(rng.integers(n)), rng)
                sub["seed"] = _seed(self.seed, p, 3, j)
                item["images"].append(sub)
                item["failures"] += sub.pop("failures")
                item["attempts"] += sub.pop("attempts")
        return item

    def _load(self, idx: int, rng: np.random.Generator) -> dict:
        failures: list[tuple[str, str]] = []
        for attempt in range(MAX_TRIES):
            entry = self.entries[(idx + attempt) % len(self.entries)]
            try:
                item = self._load_entry(entry, rng)
                item.update(failures=failures, attempts=attempt + 1)
                return item
            except MediaError as e:
                failures.append((entry.rel, str(e)))
        raise DataError(f"{self.folder}: {MAX_TRIES} files in a row failed to load; last: {failures[-1][0]}: "
                        f"{failures[-1][1]}")

    def _load_entry(self, entry: Entry, rng: np.random.Generator) -> dict:
        cfg = self.cfg
        flip = bool(cfg.hflip and rng.random() < 0.5)
        empty = rng.random() < cfg.empty_caption_prob
        start = float(rng.random()) if cfg.random_start else None
        frame_pick = float(rng.random())
        text = "" if empty else entry.caption
        cached = None
        cache_path = self.cache.path(entry, flip) if self.cache else None
        if cache_path is not None:
            cached = self.cache.load(cache_path)
        n = int(cached[0].shape[0]) if cached is not None else count_frames(entry.file)
        if entry.kind == "video" and n < self.min_frames:
            raise MediaError(f"too short: {n} frames, data.min_frames is {self.min_frames}")
        if self.sample == "frame" or entry.kind == "image":
            indices = [min(int(frame_pick * n), n - 1)]
        else:
            indices = clip_indices(n, cfg.num_frames, cfg.stride, start)
        kind = "image" if len(indices) == 1 else "video"
        item = {"kind": kind, "text": text, "file": entry.rel}
        if cached is not None:
            item["latent_mean"], item["latent_std"] = cached[0][indices], cached[1][indices]
            if self.control:  # the maps need the frames even when their latents are cached
                item["control"] = control_tensor(to_tensor(read_frames(entry.file, indices), cfg.resolution, flip),
                                                 self.control)
        elif cache_path is not None:  # first visit: every frame, encoded and cached by the trainer
            item["pixels"] = to_tensor(read_frames(entry.file, list(range(n))), cfg.resolution, flip)
            item["indices"], item["cache_path"] = indices, str(cache_path)
            if self.control:
                item["control"] = control_tensor(item["pixels"][indices], self.control)
        else:
            item["pixels"] = to_tensor(read_frames(entry.file, indices), cfg.resolution, flip)
            if self.control:
                item["control"] = control_tensor(item["pixels"], self.control)
        return item


def _too_many(folder, failed: int, total: int, limit: float, examples, what: str = "files") -> str:
    ex = "; ".join(f"{f}: {r}" for f, r in examples[:3])
    return (f"{folder}: {failed} of {total} {what} failed ({failed / max(total, 1):.0%}), more than "
            f"data.max_failed_fraction={limit:.0%}. First failures: {ex}")


def item_files(item: dict) -> list[str]:
    """Every file an item tried to load: the one it holds, its joint images, and those that failed first."""
    files = [item["file"]] if "file" in item else []
    files += [sub["file"] for sub in item.get("images", []) if "file" in sub]
    return files + [f for f, _ in item.get("failures", [])]


class FailureCounter:
    """Counts distinct files: those tried and those that failed to load (a broken file met again in a later
    epoch, or retried, counts once); stops the run when the failed share of the files tried is over the limit
    (once ``min_files`` files were tried). ``attempts`` counts load attempts (for the adapter metadata)."""

    def __init__(self, limit: float, folder, min_files: int = 20):
        self.limit, self.folder, self.min_files = limit, folder, min_files
        self.attempts = 0
        self.tried: set[str] = set()
        self.failed: dict[str, str] = {}  # file -> the first reason it failed

    def add(self, items: list[dict]) -> None:
        for it in items:
            self.attempts += it.get("attempts", 1)
            self.tried.update(item_files(it))
            for f, r in it.get("failures", []):
                if f not in self.failed:
                    log.warning("skipped %s: %s", f, r)
                    self.failed[f] = r
        if len(self.tried) >= self.min_files and len(self.failed) / len(self.tried) > self.limit:
            raise DataError(_too_many(self.folder, len(self.failed), len(self.tried), self.limit,
                                      list(self.failed.items()), what="files tried so far"))

    def state(self) -> dict:
        return {"attempts": self.attempts, "tried": sorted(self.tried), "failed": list(self.failed.items())}

    def load_state(self, st: dict) -> None:
        self.attempts = int(st.get("attempts", 0))
        self.failed = {f: r for f, r in st.get("failed", [])}
        self.tried = set(st.get("tried", [])) | set(self.failed)


def collate(items: list[dict]) -> list[dict]:
    """Items stay a list: clips, images and cache misses have different shapes."""
    return items
