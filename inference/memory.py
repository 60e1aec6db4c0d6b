"""Will one generation fit? The peak memory a call needs beyond the models already loaded, the memory the
device has available now, and a refusal, before any denoising step, when the one exceeds the other.

The estimate follows the call's phases and takes the largest: **denoise** (whole-clip latents, per-frame
prompt embeddings, and the UNet's activations for every frame at once: diffusers' FreeNoise windows only the
motion modules' attention, the spatial layers still see all frames, doubled by classifier-free guidance),
**decode** (the VAE working set for one chunk of ``decode_chunk_size`` frames, or one tile with ``low_vram``,
plus the decoded frames collected so far and their concatenation), **postprocess** (the float32 video, its
denormalised copy and the stacked NumPy array) and **output** (the float frames returned, the temporaries of
their uint8 conversion, the uint8 copy and the encoder's copy). Activations are counted in channels ×
positions at each UNet/VAE level with working-set factors measured on the shapes world
(``bench/memory_estimate.py``); attention is assumed memory-efficient (PyTorch SDPA's flash or efficient
kernels, xformers), which is what runs on CPU and on CUDA for these shapes.

On CUDA two pools are checked: the GPU (free memory plus what the caching allocator can reuse) and host RAM
(the frames come back to the CPU as float32 NumPy arrays). On CPU they are one pool.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from motion_adapters.errors import MotionAdapterError
from motion_adapters.files import human_bytes
from motion_adapters.inference.options import GenerateOptions

#: UNet working set at a level, in multiples of that level's channels × positions (a GEGLU feed-forward is
#: 8× wide, the up path concatenates skips, FreeNoise blocks keep a whole-clip accumulator)
UNET_WORK = 40
#: VAE decoder working set at a level, in multiples of its widest channels × pixels
VAE_WORK = 6
#: whole-clip latent tensors alive while denoising (latents, their CFG copy, noise prediction, guidance and
#: scheduler temporaries), in multiples of one latent tensor
LATENT_COPIES = 16
#: the per-frame prompt embeddings (FreeNoise builds them per frame; the UNet repeats them per frame)
EMBED_COPIES = 2
#: first-call costs that do not scale with the clip (kernel caches, thread pools; on CUDA cuBLAS/cuDNN
#: workspaces) and a margin for allocator fragmentation
OVERHEAD = {"cpu": 48 * 2**20, "cuda": 512 * 2**20}
FRAGMENTATION = 1.2
DEFAULT_DECODE_CHUNK = 16
LOW_VRAM_DECODE_CHUNK = 2
DEFAULT_TOKENS = 77
COND_EMBED = 16  # channels of a ControlNet's first conditioning-embedding conv (SD's and the shapes world's)
_HINT_DEFAULTS = {"low_vram": "low_vram=True", "skip_memory_check": "check_memory=False"}


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak additional bytes one generation needs, per pool (``device``; ``host`` only when they differ),
    the phase that peaks, and every named amount the phases are made of (bytes)."""

    device: str
    needed: int                          # on the device (CPU: everything)
    host_needed: int = 0                 # host RAM beyond the device pool (CUDA only)
    peak_phase: str = ""
    phases: dict[str, int] = field(default_factory=dict)
    parts: dict[str, int] = field(default_factory=dict)
    weights: int = 0                     # the models' own bytes (already loaded: informational)

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def vae_scale(vae_config: Mapping) -> int:
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


def estimate_generation(opts: GenerateOptions, unet_config: Mapping, vae_config: Mapping, *,
                        dtype: torch.dtype, device: str, low_vram: bool, weights: Mapping[str, int] | None = None,
                        prompt_tokens: int = DEFAULT_TOKENS, controlnets: int = 0,
                        video: bool = False) -> MemoryEstimate:
    """The peak memory one call with fitted ``opts`` (sizes filled in) needs beyond the loaded models.

    ``weights``: bytes per loaded component (``unet``, ``vae``, ``text_encoder``); with ``low_vram`` on CUDA
    the component in use is moved onto the GPU for its phase, so it counts there. ``prompt_tokens``: the
    length of one encoded prompt (77 per chunk of a long prompt). ``controlnets``: how many ControlNets run
    beside the UNet (each a copy of its down and middle blocks, whose residuals are held until the UNet adds
    them, behind a conditioning embedding at pixel resolution). ``video``: video to video, whose input frames are first encoded by the VAE, a chunk at a time.
    """
    device = str(device)
    cuda = device.startswith("cuda")
    weights = dict(weights or {})
    b = element_size(dtype)
    frames, height, width = opts.num_frames, opts.height, opts.width
    s = vae_scale(vae_config)
    lh, lw = math.ceil(height / s), math.ceil(width / s)
    batch = frames * (2 if opts.guidance_scale > 1 else 1)
    p = {}  # named amounts (bytes)

    # ---- denoise: the UNet runs every frame (× CFG) at once; FreeNoise windows only its motion attention
    ch = list(unet_config["block_out_channels"])
    per_block = _per_level(unet_config.get("layers_per_block", 1), len(ch))
    skips = ch[0] + sum(n * c / 4**i + (c / 4 ** (i + 1) if i < len(ch) - 1 else 0)
                        for i, (c, n) in enumerate(zip(ch, per_block, strict=True)))
    work = max(UNET_WORK * c / 4**i for i, c in enumerate(ch))
    p["unet_activations"] = int(b * batch * lh * lw * (skips + work))
    # each ControlNet: its residuals (skip-sized), held until the UNet adds them, and its conditioning embedding,
    # which runs at pixel resolution (the maps and their first conv); its own work peaks before the UNet's
    p["controlnet_activations"] = int(controlnets * b * batch * (lh * lw * skips + height * width * (3 + COND_EMBED)))
    latent = frames * unet_config.get("in_channels", 4) * lh * lw * max(b, 4)
    p["latents"] = LATENT_COPIES * latent * (2 if opts.free_init_iters else 1)
    p["prompt_embeddings"] = EMBED_COPIES * batch * prompt_tokens * unet_config.get("cross_attention_dim", 768) * b

    # ---- decode: one chunk (or, with low_vram, one frame / one tile) through the VAE; chunks collected, joined
    chunk = min(frames, opts.decode_chunk_size or (LOW_VRAM_DECODE_CHUNK if low_vram else DEFAULT_DECODE_CHUNK))
    pixels = frames * 3 * height * width
    p["vae_decode_chunk"] = int(b * _vae_work(vae_config, lh, lw, 1 if low_vram else chunk, low_vram))
    p["decoded_frames"] = 2 * pixels * b                       # the chunks, then torch.cat of them
    p["decoded_float32"] = pixels * 4                          # .float() of the video (a copy unless fp32)
    # ---- postprocess: denormalised copy, then NumPy stack (host); output: clip, ×255/round temporaries, uint8
    p["postprocess_copies"] = 2 * pixels * 4
    p["uint8_output"] = 2 * pixels * 4 + 2 * pixels            # to_uint8's temporaries, uint8, encoder's copy

    offload = low_vram and cuda
    if video:  # the input as floats (as read, fitted, normalised), then a decode-sized chunk through the encoder
        p["input_video"] = 3 * pixels * 4
        p["vae_encode_chunk"] = p["vae_decode_chunk"]
    on_gpu = {
        "denoise": p["unet_activations"] + p["controlnet_activations"] + p["latents"] + p["prompt_embeddings"]
        + (weights.get("unet", 0) + weights.get("controlnets", 0) if offload else 0),
        "decode": p["vae_decode_chunk"] + p["decoded_frames"] + latent * 3
        + (weights.get("vae", 0) if offload else 0),
        "postprocess": p["decoded_float32"] + pixels * 4,      # the video and its denormalised copy
    }
    if video:
        on_gpu["encode"] = p["vae_encode_chunk"] + p["input_video"] + latent * 3 + (weights.get("vae", 0) if offload else 0)
    host = {"postprocess": p["postprocess_copies"], "output": pixels * 4 + p["uint8_output"]}
    if cuda:
        phases = on_gpu
        host_needed = _with_margin(max(host.values()), "cpu")
    else:
        phases = {**on_gpu, "postprocess": p["decoded_float32"] + p["postprocess_copies"],
                  "output": host["output"]}
        host_needed = 0
    peak = max(phases, key=phases.get)
    return MemoryEstimate(device=device, needed=_with_margin(phases[peak], "cuda" if cuda else "cpu"),
                          host_needed=host_needed, peak_phase=peak, phases=phases, parts=p,
                          weights=sum(weights.values()))


def _per_level(value, levels: int) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [int(value)] * levels


def _vae_work(vae_config: Mapping, lh: int, lw: int, batch: int, tiled: bool) -> float:
    """Elements of the VAE decoder's largest working set for ``batch`` frames (``tiled``: one tile's, when the
    latent is larger than a tile, plus the tile-blended output rows)."""
    rc = list(reversed(vae_config["block_out_channels"]))
    tile = int(vae_config.get("sample_size", 512))
    tile = tile[0] if isinstance(tile, (list, tuple)) else tile
    s = vae_scale(vae_config)
    blend = 0.0
    if tiled and (lh * s > tile or lw * s > tile):
        blend = 4 * 3 * lh * lw * s * s                       # decoded tiles, rows and the joined frame
        lh = lw = tile // s
    widest = max(VAE_WORK * max(rc[max(i - 1, 0)], rc[i]) * lh * lw * 4**i for i in range(len(rc)))
    return batch * (widest + blend)


def _with_margin(need: int, kind: str) -> int:
    return int(need * FRAGMENTATION) + OVERHEAD[kind]


# ------------------------------------------------------------------------------------------------ available
def available_memory(device: str) -> int | None:
    """Bytes a new allocation can get now: on CUDA the free GPU memory plus what the caching allocator holds
    unused; elsewhere the host's available RAM (``MemAvailable``, bounded by a cgroup limit). ``None``:
    unknown on this system (no check is made)."""
    device = str(device)
    if device.startswith("cuda"):
        dev = torch.device(device)
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
    return host_available()


def host_available() -> int | None:
    """``MemAvailable`` (Linux), lowered to what a cgroup memory limit leaves; ``None`` where unknown."""
    found = _meminfo_available()
    room = _cgroup_room()
    if found is None:
        return room
    return found if room is None else min(found, room)


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # other POSIX systems: free physical pages (lower than what could be reclaimed: errs on the safe side)
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_room() -> int | None:
    """Limit minus usage of this process's memory cgroup (v2, else v1); ``None`` without a limit."""
    for limit, usage in [("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")]:
        try:
            cap = Path(limit).read_text().strip()
            if cap == "max" or int(cap) >= 2**60:
                return None
            return max(0, int(cap) - int(Path(usage).read_text().strip()))
        except (OSError, ValueError):
            continue
    return None


# ------------------------------------------------------------------------------------------------- refusal
def check_fits(estimate: MemoryEstimate, available: int | None, opts: GenerateOptions, *,
               labels: Mapping[str, str] | None = None, host_available: int | None = None,
               alternative=None) -> None:
    """Raise :class:`MotionAdapterError` when the estimate exceeds what is available (``None``: unknown, no
    check). The message says what the call needs, what the machine has, and only the changes that would
    make it fit: fewer frames, a smaller size, a smaller decode chunk, ``low_vram`` (``alternative(opts,
    low_vram)`` re-estimates a changed call), or skipping the check."""
    short = _shortfall(estimate, available, host_available)
    if short is None:
        return
    pool, need, have = short
    n = _hints(labels)
    what = "GPU memory" if pool == "gpu" else "memory"
    where = f"the GPU ({estimate.device}) has" if pool == "gpu" else "this machine has"
    helps = _what_helps(opts, n, alternative, available, host_available) if alternative else []
    tail = f"; {_join(helps)} would help" if helps else ""
    raise MotionAdapterError(
        f"{n('num_frames')} {opts.num_frames} at {opts.width}x{opts.height}: needs about {human_bytes(need)} of {what}, "
        f"{where} {human_bytes(have)} available{tail}" + (f" (or {skip} to try anyway)" if (skip := n("skip_memory_check"))
                                                    else ""))


def _shortfall(estimate: MemoryEstimate, available: int | None,
               host: int | None) -> tuple[str, int, int] | None:
    if available is not None and estimate.needed > available:
        return ("gpu" if estimate.on_cuda else "host"), estimate.needed, available
    if estimate.on_cuda and host is not None and estimate.host_needed > host:
        return "host", estimate.host_needed, host
    return None


def _what_helps(opts: GenerateOptions, n, alternative, available, host) -> list[str]:
    """The single changes that would make the call fit, as the caller names them."""
    def fits(o: GenerateOptions, low: bool = False) -> bool:
        return _shortfall(alternative(o, low), available, host) is None

    out = []
    most = _largest(lambda f: fits(replace(opts, num_frames=f, context_length=None, context_overlap=None)),
                    opts.num_frames - 1)
    if most:
        out.append(f"at most {most} frame{'s' if most > 1 else ''}")
    def scaled(k: int) -> GenerateOptions:  # both sides scaled by k/64, multiples of 8
        return replace(opts, height=max(8, opts.height * k // 512 * 8), width=max(8, opts.width * k // 512 * 8))

    side = _largest(lambda k: fits(scaled(k)), 63)
    if side >= 32:  # a size at least half as large on each side (smaller would hardly be the same clip)
        out.append(f"a smaller size ({scaled(side).width}x{scaled(side).height})")
    chunk = opts.decode_chunk_size or DEFAULT_DECODE_CHUNK
    for smaller in (8, 4, 2, 1):
        if smaller < chunk and fits(replace(opts, decode_chunk_size=smaller)):
            if n("decode_chunk_size"):  # a caller without that control labels it ""
                out.append(f"{n('decode_chunk_size')} {smaller}")
            break
    if n("low_vram") and fits(opts, True):
        out.append(n("low_vram"))
    return out


def _largest(ok, hi: int) -> int:
    """The largest k in [1, hi] with ``ok(k)`` (``ok`` monotone), or 0."""
    if hi < 1 or not ok(1):
        return 0
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


def _hints(labels: Mapping[str, str] | None):
    names = {**_HINT_DEFAULTS, **(labels or {})}
    return lambda key: names.get(key, key)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


