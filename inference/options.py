"""Generation options, checked and normalised in one place for the Python API, the CLI and the studio.

Every error names the parameter (as the caller labels it: ``num_frames`` in the API, ``Frames`` in the
studio), what was expected and what was found. :meth:`GenerateOptions.check` needs no model; the generator
then :meth:`~GenerateOptions.fit`\\ s the options to its base and motion module.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace

from motion_adapters.errors import MotionAdapterError
from motion_adapters.inference.prompts import parse_prompts
from motion_adapters.schedulers import canonical_name, scheduler_config

DEFAULT_CONTEXT = 16
LORA_WEIGHT_WARN = 4.0  # a LoRA weight beyond ±4 is allowed, with a warning
log = logging.getLogger(__name__)
#: Hard caps no SD1.5 model could use well, whatever the machine. A side: 8x the 512 px SD1.5 bases are trained
#: at (a 512-latent side); an area: 16x their training area (65,536 latent positions per frame, each attending
#: to all others in the highest-resolution self-attention), which still allows 4096x1024 panoramas.
MAX_SIDE = 4096
MAX_PIXELS = 2048 * 2048


@dataclass(frozen=True)
class OptionLimits:
    """Bounds a server adds to the options' own rules (``None``: no bound; the API and the CLI have none)."""

    max_frames: int | None = None
    max_size: int | None = None
    max_steps: int | None = None
    max_guidance: float | None = None
    max_motion_strength: float | None = None
    max_free_init: int | None = None
    max_seed: int | None = None
    max_lora_weight: float | None = None
    max_prompt_chars: int | None = None
    require_prompt: bool = False
    min_fps: float | None = None
    max_fps: float | None = None


NO_LIMITS = OptionLimits()


@dataclass
class GenerateOptions:
    """One clip's generation options, normalised (the keyword arguments of ``VideoGenerator.generate``)."""

    prompt: str | dict[int, str]
    negative_prompt: str | None
    num_frames: int
    height: int | None            # None until fitted: the base's size
    width: int | None
    num_inference_steps: int
    guidance_scale: float
    seed: int
    scheduler: str
    context_length: int | None    # None: no context windows (after fitting) / automatic (before)
    context_overlap: int | None   # None: a quarter of the context length
    free_init_iters: int
    motion_strength: float
    decode_chunk_size: int | None
    strength: float | None = None  # video to video: 0 = the input back through the VAE, 1 = from noise

    @classmethod
    def check(cls, *, prompt: str | Mapping[int, str] | Sequence[str], num_frames, num_inference_steps,
              guidance_scale, negative_prompt: str | None = None, height=None, width=None, seed=None,
              scheduler: str | None = "ddim", context_length=None, context_overlap=None, free_init_iters=0,
              motion_strength=1.0, decode_chunk_size=None, strength=None,
              labels: Mapping[str, str] | None = None, limits: OptionLimits = NO_LIMITS) -> GenerateOptions:
        """Check and normalise every option that needs no model.

        ``prompt`` is one prompt, or prompt travel (a frame→prompt map, ``"FRAME: text"`` items, or text with
        one ``FRAME: text`` per line); ``height``/``width`` ``None`` = the base's size; ``seed`` ``None`` = a
        new random seed; ``context_length`` ``None`` = windows only beyond the motion module's frame cap.
        ``strength`` (video to video only): from 0 (the input video back through the VAE) to 1 (from noise).
        ``labels`` maps parameter names to the names errors use; ``limits`` are a server's extra bounds.
        """
        n, lim = _Labels(labels), limits
        text = _text_length(prompt)
        if lim.max_prompt_chars is not None and text > lim.max_prompt_chars:
            raise MotionAdapterError(f"{n('prompt')}: expected at most {lim.max_prompt_chars} characters, "
                                     f"found {text}")
        parsed = parse_prompts(prompt, n("prompt"))
        if lim.require_prompt and not parsed:
            raise MotionAdapterError(f"{n('prompt')}: expected some text, found none")
        frames = whole_number(n("num_frames"), num_frames, 1, lim.max_frames)
        if isinstance(parsed, dict) and max(parsed) >= frames:
            raise MotionAdapterError(f"{n('prompt')}: expected prompt-travel frame indices below "
                                     f"{n('num_frames')} {frames}, found {max(parsed)}")
        height = _optional(_size, n("height"), height, lim.max_size)
        width = _optional(_size, n("width"), width, lim.max_size)
        _check_area(n, height, width)
        ctx = _optional(whole_number, n("context_length"), context_length, 2, lim.max_frames)
        overlap = _optional(whole_number, n("context_overlap"), context_overlap, 0, lim.max_frames)
        if ctx is not None and overlap is not None:
            _check_overlap(n, ctx, overlap)
        return cls(
            prompt=parsed,
            negative_prompt=_negative_prompt(n("negative_prompt"), negative_prompt, lim.max_prompt_chars),
            num_frames=frames,
            height=height,
            width=width,
            num_inference_steps=_steps(n("num_inference_steps"), num_inference_steps, lim.max_steps),
            guidance_scale=finite_number(n("guidance_scale"), guidance_scale, 0.0, lim.max_guidance),
            seed=random_seed() if seed is None else whole_number(n("seed"), seed, 0, lim.max_seed),
            scheduler=canonical_name(scheduler or "ddim", n("scheduler")),
            context_length=ctx,
            context_overlap=overlap,
            free_init_iters=whole_number(n("free_init_iters"), free_init_iters or 0, 0, lim.max_free_init),
            motion_strength=finite_number(n("motion_strength"), motion_strength, 0, lim.max_motion_strength),
            decode_chunk_size=_optional(whole_number, n("decode_chunk_size"), decode_chunk_size, 1),
            strength=_optional(finite_number, n("strength"), strength, 0.0, 1.0),
        )

    def fit(self, *, max_seq: int, sample_size: int,
            labels: Mapping[str, str] | None = None) -> GenerateOptions:
        """These options for a motion module capped at ``max_seq`` frames and a base of ``sample_size``
        pixels: the base's size where none was given, and context windows exactly when the clip is longer
        than the cap or than an explicit ``context_length`` (overlap default: a quarter of the window)."""
        n = _Labels(labels)
        ctx, overlap = self.context_length, self.context_overlap
        if ctx is not None and ctx > max_seq:
            raise MotionAdapterError(f"{n('context_length')}: expected at most {max_seq} (the motion "
                                     f"module's frame cap), found {ctx}")
        if self.num_frames > max_seq or (ctx is not None and ctx < self.num_frames):
            ctx = ctx or min(DEFAULT_CONTEXT, max_seq)
            overlap = ctx // 4 if overlap is None else overlap
            _check_overlap(n, ctx, overlap)
        else:
            ctx = overlap = None
        height = _size(n("height"), self.height or sample_size)
        width = _size(n("width"), self.width or sample_size)
        _check_area(n, height, width)
        return replace(self, height=height, width=width, context_length=ctx, context_overlap=overlap)

    @classmethod
    def validate(cls, *, prompt: str | Mapping[int, str] | Sequence[str], max_seq: int, sample_size: int,
                 labels: Mapping[str, str] | None = None, **kw) -> GenerateOptions:
        """:meth:`check` then :meth:`fit`: every option checked, every default filled."""
        return cls.check(prompt=prompt, labels=labels, **kw).fit(max_seq=max_seq, sample_size=sample_size,
                                                                  labels=labels)

    def as_kwargs(self) -> dict:
        """The keyword arguments of ``VideoGenerator.generate`` (checked again there: it is idempotent)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def as_recipe(self) -> dict:
        d = asdict(self)
        if isinstance(self.prompt, dict):
            d["prompt"] = {str(k): v for k, v in self.prompt.items()}
        return d


def check_fps(value, *, labels: Mapping[str, str] | None = None, limits: OptionLimits = NO_LIMITS) -> float:
    """Frames per second of an output file: positive (within the server's range, if it has one)."""
    name = _Labels(labels)("fps")
    if limits.min_fps is not None or limits.max_fps is not None:
        return finite_number(name, value, limits.min_fps or 0.0, limits.max_fps)
    try:
        fps = float(value)
    except (TypeError, ValueError):
        raise MotionAdapterError(f"{name}: expected a positive number, found {value!r}") from None
    if not math.isfinite(fps) or fps <= 0:
        raise MotionAdapterError(f"{name}: expected a positive number, found {fps:g}")
    return fps


def parse_lora(text: str, name: str = "lora", what: str = "WEIGHT") -> tuple[str, float]:
    """``PATH[:WEIGHT]``; a trailing ``:number`` is the weight (a drive letter's colon and colons inside a
    path are kept). A trailing ``:word`` that is no number is an error about the weight, unless ``text`` is an
    existing path. ``nan``/``inf`` parse: :func:`check_loras` refuses them, naming the weight. ``what``: the
    number's name in errors (``SCALE`` for ``--controlnet PATH[:SCALE]``)."""
    head, sep, tail = text.rpartition(":")
    if not sep or not head or re.fullmatch(r"[A-Za-z]", head):
        return text, 1.0
    try:
        return head, float(tail)
    except ValueError:
        pass
    if "/" in tail or "\\" in tail or os.path.exists(text):
        return text, 1.0
    raise MotionAdapterError(f"{name} {text}: expected PATH[:{what}] with a number as {what}, found the "
                             f"{what.lower()} {tail!r}")


def check_loras(loras: Iterable[tuple[str | None, object]], *, labels: Mapping[str, str] | None = None,
                limits: OptionLimits = NO_LIMITS) -> list[tuple[str, float]]:
    """(source, weight) pairs to stack: weights finite numbers (within the server's bound), each source once.

    Unused slots (source ``None``, ``""`` or ``"none"``) are dropped; errors number the slots from 1.
    """
    name = _Labels(labels)("lora")
    bound = limits.max_lora_weight
    out: list[tuple[str, float]] = []
    for i, (source, weight) in enumerate(loras, 1):
        if source in (None, "", "none"):
            continue
        lo, hi = (-math.inf, None) if bound is None else (-bound, bound)
        out.append((str(source), finite_number(f"{name} {i} weight", weight, lo, hi)))
    for i, (source, weight) in enumerate(out, 1):
        if abs(weight) > LORA_WEIGHT_WARN:
            log.warning("%s %d (%s) weight %g: LoRAs are trained for weights around 1; beyond ±%g frames "
                        "usually break up", name, i, source, weight, LORA_WEIGHT_WARN)
    sources = [s for s, _ in out]
    twice = sorted(s for s in sources if sources.count(s) > 1)
    if twice:
        raise MotionAdapterError(f"{name}: expected each LoRA once, found {twice[0]!r} twice")
    return out


def random_seed() -> int:
    """A new seed in [0, 2³¹) from the OS's randomness (recorded in the recipe, so the clip can be remade)."""
    return int.from_bytes(os.urandom(4), "little") % (2**31)


class _Labels:
    """Parameter name → the name an error message uses (the parameter itself unless relabelled)."""

    def __init__(self, labels: Mapping[str, str] | None):
        self.labels = dict(labels or {})

    def __call__(self, param: str) -> str:
        return self.labels.get(param, param)


def _text_length(prompt) -> int:
    if isinstance(prompt, str):
        return len(prompt)
    if isinstance(prompt, Mapping):
        return sum(len(str(v)) for v in prompt.values())
    if isinstance(prompt, Sequence):
        return sum(len(str(p)) for p in prompt)
    return 0


def _negative_prompt(name: str, value, limit: int | None) -> str | None:
    """A negative prompt without surrounding spaces; blank = none."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise MotionAdapterError(f"{name}: expected text, found {type(value).__name__}")
    if limit is not None and len(value) > limit:
        raise MotionAdapterError(f"{name}: expected at most {limit} characters, found {len(value)}")
    return value.strip() or None


def _check_overlap(n: _Labels, ctx: int, overlap: int) -> None:
    if overlap >= ctx:
        raise MotionAdapterError(f"{n('context_overlap')}: expected less than {n('context_length')} {ctx}, "
                                 f"found {overlap}")


def train_timesteps() -> int:
    """The samplers' training timesteps (1000 on AnimateDiff's schedule): the most denoising steps there are."""
    return int(scheduler_config()["num_train_timesteps"])


def _steps(name: str, value, hi: int | None) -> int:
    """Denoising steps: at least 1, within a server's bound, and no more than the sampler has timesteps
    (diffusers' samplers fail beyond them)."""
    v = whole_number(name, value, 1, hi)
    train = train_timesteps()
    if v > train:
        raise MotionAdapterError(f"{name}: expected at most {train} (the sampler's training timesteps), found {v}")
    return v


def _check_area(n: _Labels, height: int | None, width: int | None) -> None:
    """Width x height at most :data:`MAX_PIXELS` (each side is already at most :data:`MAX_SIDE`)."""
    if height is not None and width is not None and height * width > MAX_PIXELS:
        raise MotionAdapterError(
            f"{n('width')} x {n('height')}: expected at most {MAX_PIXELS:,} pixels per frame (e.g. 2048x2048 or "
            f"4096x1024; far beyond what SD1.5 bases are trained at), found {width}x{height} = "
            f"{width * height:,}")


def _optional(check, name: str, value, *bounds):
    """``None`` stays ``None`` (a default decided later); anything else is checked."""
    return None if value is None else check(name, value, *bounds)


def whole_number(name: str, value, lo: int, hi: int | None = None) -> int:
    """A whole number (``8``, ``8.0`` or ``"8"``) from ``lo`` to ``hi``."""
    try:
        if isinstance(value, int):
            v, ok = int(value), True
        else:
            v = int(float(value))
            ok = float(value) == v
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise MotionAdapterError(f"{name}: expected an integer, found {value!r}")
    if hi is None and v < lo:
        raise MotionAdapterError(f"{name}: expected at least {lo}, found {v}")
    if hi is not None and not lo <= v <= hi:
        raise MotionAdapterError(f"{name}: expected an integer from {lo} to {hi}, found {v}")
    return v


def finite_number(name: str, value, lo: float, hi: float | None = None) -> float:
    """A finite number from ``lo`` to ``hi``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise MotionAdapterError(f"{name}: expected a number, found {value!r}") from None
    if hi is None and (not math.isfinite(v) or v < lo):
        what = "a finite number" if lo == -math.inf else f"a number ≥ {lo:g}"
        raise MotionAdapterError(f"{name}: expected {what}, found {value!r}")
    if hi is not None and (not math.isfinite(v) or not lo <= v <= hi):
        raise MotionAdapterError(f"{name}: expected a number from {lo:g} to {hi:g}, found {value!r}")
    return v


def _size(name: str, value, hi: int | None = None) -> int:
    v = whole_number(name, value, 8, hi)
    if v > MAX_SIDE:
        raise MotionAdapterError(f"{name}: expected at most {MAX_SIDE} pixels (8x the 512 px SD1.5 bases are "
                                 f"trained at), found {v}")
    if v % 8:
        raise MotionAdapterError(f"{name}: expected a multiple of 8 (the VAE downsamples by 8), found {v}")
    return v
