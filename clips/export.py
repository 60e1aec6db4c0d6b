"""Writing clips (gif, mp4, webm, webp, PNG frames) with their recipe embedded, and reading recipes back."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from motion_adapters.clips.recipe import RECIPE_KEY, dumps
from motion_adapters.errors import MotionAdapterError
from motion_adapters.files import atomic_dir, atomic_file, only_names

VIDEO_SUFFIXES = (".gif", ".mp4", ".webm", ".webp")
_EXIF_DESCRIPTION = 0x010E


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] → uint8 (round half up, like diffusers' ``numpy_to_pil``)."""
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)


def sidecar_path(out: str | Path) -> Path:
    out = Path(out)
    return out / "recipe.json" if out.suffix == "" else out.with_name(out.name + ".json")


def check_output_path(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix and out.suffix.lower() not in VIDEO_SUFFIXES:
        raise MotionAdapterError(
            f"--out {out}: expected a .gif, .mp4, .webm or .webp file or a folder (PNG frames), found {out.suffix!r}")
    return out


def write_clip(frames: np.ndarray, out: str | Path, fps: float = 8.0, recipe: dict | None = None) -> Path:
    """Write frames (F, H, W, 3) to ``out`` with the recipe embedded and in a sidecar JSON. Atomic: a clip
    file is renamed into place; a PNG-frame folder is written beside and swapped in whole (an existing one
    only if it holds nothing but frames and a recipe). Whether an existing ``out`` may be replaced at all is
    the caller's decision (the CLI refuses without ``--overwrite``)."""
    out = check_output_path(out)
    data = to_uint8(np.asarray(frames))
    text = dumps(recipe or {})
    suffix = out.suffix.lower()
    if suffix == "":
        atomic_dir(out, lambda tmp: _write_png_folder(data, tmp, text), overwrite=True, label="out",
                   replaceable=is_frame_folder)
    else:
        writer = {".gif": _write_gif, ".webp": _write_webp, ".mp4": _write_ffmpeg, ".webm": _write_ffmpeg}[suffix]
        with atomic_file(out) as tmp:
            writer(data, tmp, fps, text)
    with atomic_file(sidecar_path(out)) as tmp:
        tmp.write_text(json.dumps(recipe or {}, indent=2, sort_keys=True, ensure_ascii=False))
    return out


is_frame_folder = only_names({"recipe.json"}, r"\d{4,}\.png")  # a PNG-frame output: ours to replace


def _pil_frames(data: np.ndarray) -> list[Image.Image]:
    return [Image.fromarray(f) for f in data]


def _write_gif(data, path: Path, fps: float, text: str) -> None:
    imgs = _pil_frames(data)
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=round(1000 / fps), loop=0,
                 comment=text.encode("utf-8"), optimize=False, disposal=1)


def _write_webp(data, path: Path, fps: float, text: str) -> None:
    imgs = _pil_frames(data)
    exif = Image.Exif()
    exif[_EXIF_DESCRIPTION] = text
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=round(1000 / fps), loop=0,
                 lossless=True, exif=exif.tobytes())


def _write_ffmpeg(data, path: Path, fps: float, text: str) -> None:
    import imageio.v2 as imageio

    webm = path.suffix == ".webm"
    params = ["-metadata", f"comment={text}"]
    kwargs = dict(fps=fps, macro_block_size=1, output_params=params, format="FFMPEG")
    if webm:
        kwargs.update(codec="libvpx-vp9", pixelformat="yuv420p", quality=None,
                      output_params=[*params, "-crf", "30", "-b:v", "0"])
    else:
        kwargs.update(codec="libx264", pixelformat="yuv420p", quality=8)
    with imageio.get_writer(str(path), **kwargs) as w:
        for f in data:
            w.append_data(f)


def _write_png_folder(data, folder: Path, text: str) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_itxt(RECIPE_KEY, text)
    for i, f in enumerate(data):
        Image.fromarray(f).save(folder / f"{i:04d}.png", format="PNG", pnginfo=info)


def read_frames(path: str | Path) -> np.ndarray:
    """Decode a written clip back to uint8 (F, H, W, 3)."""
    p = Path(path)
    if p.is_dir():
        return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted(p.glob("*.png"))])
    if p.suffix.lower() in (".gif", ".webp"):
        im = Image.open(p)
        frames = []
        for i in range(getattr(im, "n_frames", 1)):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB")))
        return np.stack(frames)
    import imageio.v3 as iio

    return np.asarray(iio.imread(str(p), index=None))


def read_recipe(path: str | Path) -> dict:
    """The recipe of a clip: from its sidecar JSON, else from the metadata embedded in the file."""
    p = Path(path)
    if p.suffix.lower() == ".json" and p.is_file():
        return _parse_recipe(p, p.read_bytes())
    side = sidecar_path(p)
    if side.is_file():
        return _parse_recipe(side, side.read_bytes())
    text = read_embedded(p)
    if text is None:
        raise MotionAdapterError(f"--from {p}: expected a clip written by motion-adapters (recipe in its metadata "
                                 "or a .json sidecar), found no recipe")
    return _parse_recipe(p, text.encode("utf-8"))


def _parse_recipe(source: Path, data: bytes) -> dict:
    try:
        recipe = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MotionAdapterError(f"--from {source}: expected a recipe (a JSON object), found invalid JSON ({e})") \
            from None
    if not isinstance(recipe, dict):
        raise MotionAdapterError(f"--from {source}: expected a recipe (a JSON object), found a "
                                 f"{type(recipe).__name__}")
    return recipe


def read_embedded(path: str | Path) -> str | None:
    """The recipe text embedded in a clip's own metadata (no sidecar)."""
    p = Path(path)
    if not p.exists():
        raise MotionAdapterError(f"{p}: expected a clip, found nothing at that path")
    suffix = p.suffix.lower()
    if p.is_dir():
        pngs = sorted(p.glob("*.png"))
        return Image.open(pngs[0]).text.get(RECIPE_KEY) if pngs else None
    if suffix == ".gif":
        c = Image.open(p).info.get("comment")
        return c.decode("utf-8") if isinstance(c, bytes) else c
    if suffix == ".webp":
        return Image.open(p).getexif().get(_EXIF_DESCRIPTION)
    if suffix in (".mp4", ".webm"):
        return _ffmpeg_comment(p)
    return None


def _ffmpeg_comment(path: Path) -> str | None:
    import imageio_ffmpeg

    res = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
                         capture_output=True, text=True, check=False)
    text = res.stdout
    m = re.search(r"^comment=((?:[^\n\\]|\\.|\\\n)*)$", text, re.M | re.I)
    if not m:
        return None
    return re.sub(r"\\(.)", r"\1", m.group(1), flags=re.S)
