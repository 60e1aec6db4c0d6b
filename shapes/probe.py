"""Word-binding probe: does a text-to-image checkpoint read the direction word of a prompt?

The motion module moves an object the way the base's spatial features say (the static cue the shapes world
ties to each direction word). This probe measures that link in a checkpoint alone, in one denoising step:
real images of every direction (with their cue, on the checkpoint's look) are noised to ``t`` and the UNet
predicts the noise with three captions — the right one, the opposite direction's, and no motion word. The
rise in noise-prediction MSE with the wrong caption (``opposite``) is how much the UNet uses the direction
word; ``no_motion`` how much it uses the presence of a motion word at all. Near zero means the word is
ignored, and then no motion module can read a direction from that checkpoint.

:func:`direction_codes` goes one step further, to what the motion module itself reads: the input of every
motion module for pairs of images that differ only in the side of the cue (left vs right, up vs down; same
object, same place). The difference is that layer's *direction code*; :func:`code_alignment` is the cosine
between a checkpoint's codes on its look and ``shapes-base``'s on light. A module trained on the base reads
the base's codes, so a checkpoint whose codes point elsewhere gives it nothing to read even when it binds
the words.

    python -m motion_adapters.shapes.probe --json bench/results/toy_word_binding.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from motion_adapters.inference.generator import VideoGenerator
from motion_adapters.shapes.data import render_image
from motion_adapters.shapes.world import COLOURS, SHAPES, Spec, caption

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
#: (registered checkpoint, the look it was trained to draw)
CHECKPOINTS = (("shapes-base", "light"), ("shapes-navy", "navy"), ("shapes-paper", "paper"), ("shapes-hq", "light"))


def probe_specs(look: str, n: int = 48) -> list[Spec]:
    """``n`` images cycling through every shape × colour × direction on ``look``."""
    combos = [(s, c, d) for s in SHAPES for c in COLOURS for d in OPPOSITE]
    return [Spec(*combos[i % len(combos)], look) for i in range(n)]


def _latents(pipe, specs: list[Spec], seeds: list[int]) -> torch.Tensor:
    """Scaled VAE latents (encoder mean) of the still images of ``specs``."""
    images = np.stack([render_image(sp, sd) for sp, sd in zip(specs, seeds, strict=True)])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(pipe.unet.device, pipe.unet.dtype) / 127.5 - 1
    return pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor


@torch.no_grad()
def word_binding(pipe, look: str = "light", n: int = 48, timesteps: tuple[int, ...] = (200, 400),
                 seed: int = 0) -> dict[str, dict[int, float]]:
    """``{"error": {t: mse}, "opposite": {t: Δmse}, "no_motion": {t: Δmse}}`` for the UNet of ``pipe``
    (a :class:`~motion_adapters.inference.pipeline.MotionAdaptersPipeline`; its motion module must be off or all-zero)."""
    specs = probe_specs(look, n)
    dev, dtype = pipe.unet.device, pipe.unet.dtype
    z = _latents(pipe, specs, [1000 + i for i in range(n)])

    def embed(prompts: list[str]) -> torch.Tensor:
        return pipe.encode_prompt(prompts, dev, 1, False)[0]

    captions = {
        "right": [caption(s, look_in_caption=False) for s in specs],
        "opposite": [caption(Spec(s.shape, s.colour, OPPOSITE[s.motion], look), look_in_caption=False)
                     for s in specs],
        "no_motion": [caption(Spec(s.shape, s.colour, "static", look), look_in_caption=False) for s in specs],
    }
    emb = {k: embed(v) for k, v in captions.items()}
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, dict[int, float]] = {"error": {}, "opposite": {}, "no_motion": {}}
    for t in timesteps:
        noise = torch.randn(z.shape, generator=gen).to(dev, dtype)
        zt = pipe.scheduler.add_noise(z, noise, torch.full((len(z),), t, device=dev))
        err = {k: float(((pipe.unet(zt[:, :, None], t, encoder_hidden_states=e).sample[:, :, 0] - noise) ** 2)
                        .float().mean()) for k, e in emb.items()}
        out["error"][t] = err["right"]
        out["opposite"][t] = err["opposite"] - err["right"]
        out["no_motion"][t] = err["no_motion"] - err["right"]
    return out


@torch.no_grad()
def direction_codes(pipe, look: str = "light", t: int = 400, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per motion-module position (``down0.0`` …): input features of "moving left" minus "moving right" and
    of "up" minus "down" images (every shape × colour; each pair shares its seed, so only the cue differs)."""
    unet = pipe.unet
    blocks = [(f"down{i}", b) for i, b in enumerate(unet.down_blocks)] + \
             [(f"up{i}", b) for i, b in enumerate(unet.up_blocks)]
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda _m, args, n=f"{name}.{j}": seen.__setitem__(n, args[0]))
             for name, blk in blocks for j, m in enumerate(getattr(blk, "motion_modules", None) or [])]
    dev, dtype = unet.device, unet.dtype
    codes: dict[str, list[torch.Tensor]] = {}
    try:
        for a, b in (("left", "right"), ("up", "down")):
            specs = [Spec(sh, c, d, look) for sh in SHAPES for c in COLOURS for d in (a, b)]
            z = _latents(pipe, specs, [500 + i // 2 for i in range(len(specs))])
            noise = torch.randn(z[::2].shape, generator=torch.Generator().manual_seed(seed)).to(dev, dtype)
            zt = pipe.scheduler.add_noise(z, noise.repeat_interleave(2, 0), torch.full((len(z),), t, device=dev))
            emb = pipe.encode_prompt([caption(sp, look_in_caption=False) for sp in specs], dev, 1, False)[0]
            pipe.unet(zt[:, :, None], t, encoder_hidden_states=emb)
            for k, v in seen.items():
                codes.setdefault(k, []).append((v[0::2] - v[1::2]).float().flatten(1))
    finally:
        for h in hooks:
            h.remove()
    return {k: torch.cat(v) for k, v in codes.items()}


def code_alignment(ref: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean cosine, per motion-module position, between matching direction codes of two checkpoints."""
    return {k: float(torch.nn.functional.cosine_similarity(ref[k], other[k]).mean()) for k in ref}


def probe_checkpoints(checkpoints=CHECKPOINTS, n: int = 48, device: str | None = None) -> dict[str, dict]:
    """:func:`word_binding` of each registered checkpoint on its own look, and the :func:`code_alignment` of its
    direction codes with the first checkpoint's (``shapes-base`` on light), hot-swapped into one generator."""

    gen = None
    results, ref = {}, None
    for name, look in checkpoints:
        if gen is None:
            gen = VideoGenerator(base=name, motion=None, device=device)
        else:
            gen.load_base(name)
        codes = direction_codes(gen.pipe, look)
        ref = codes if ref is None else ref
        results[name] = {"look": look, **word_binding(gen.pipe, look, n),
                         "code_alignment": code_alignment(ref, codes)}
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m motion_adapters.shapes.probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=48, help="images per checkpoint (default 48)")
    ap.add_argument("--json", type=Path, help="also write the results to this JSON file")
    ap.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    args = ap.parse_args(argv)
    res = probe_checkpoints(n=args.n, device=args.device)
    print("| checkpoint | look | ε-MSE t=200 / 400 | opposite word Δ t=200 / 400 | no motion word Δ t=200 / 400 |")
    print("|---|---|---:|---:|---:|")
    for name, r in res.items():
        f = lambda d: " / ".join(f"{v:+.4f}" for v in d.values())  # noqa: E731
        print(f"| {name} | {r['look']} | {' / '.join(f'{v:.4f}' for v in r['error'].values())} | "
              f"{f(r['opposite'])} | {f(r['no_motion'])} |")
    layers = list(next(iter(res.values()))["code_alignment"])
    print(f"\n| direction-code cosine with shapes-base on light | {' | '.join(layers)} |")
    print("|---|" + "---:|" * len(layers))
    for name, r in res.items():
        print(f"| {name} ({r['look']}) | " + " | ".join(f"{v:+.2f}" for v in r["code_alignment"].values()) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
