"""The shapes world's vocabulary: shapes, colours, motions, looks, held-out combinations, caption grammar.

Caption grammar (shared by the data writer, the personalised checkpoints and the evaluator)::

    caption := "a " COLOUR " " SHAPE [" " MOTION] [", " LOOK " background"] [", high quality"]
    COLOUR  := red | green | blue | yellow
    SHAPE   := circle | square | triangle
    MOTION  := "moving left" | "moving right" | "moving up" | "moving down" | "zooming in"
    LOOK    := navy | paper            (the default look, light, is never written)

No motion phrase means ``static``; no look phrase means ``light`` (the evaluator can be told the look a
personalised checkpoint should keep instead); ", high quality" is optional and off by default in the writer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
}
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
MOTIONS: tuple[str, ...] = (*DIRECTIONS, "zoom in", "static")
#: unit vector (dx, dy) in image coordinates (y grows downwards) of each direction
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
#: plain background colour of each look (paper adds a deterministic fibre/grain texture on top of its colour)
LOOKS: dict[str, tuple[int, int, int]] = {
    "light": (236, 234, 228),
    "navy": (22, 30, 68),
    "paper": (224, 210, 182),
}

Combo = tuple[str, str, str]  # (shape, colour, motion)

_MOTION_PHRASE = {**{d: f"moving {d}" for d in DIRECTIONS}, "zoom in": "zooming in", "static": ""}


def _default_heldout() -> tuple[Combo, ...]:
    """12 of the 72 combos (1/6): pair i = (SHAPES[i % 3], colours[i % 4]) runs over all 12 shape×colour
    pairs once (3 and 4 are coprime) and motion = MOTIONS[i // 2], so every motion is held out twice, every
    shape 4 times and every colour 3 times — and each still appears in training with the other pairs."""
    cols = tuple(COLOURS)
    return tuple((SHAPES[i % 3], cols[i % 4], MOTIONS[i // 2]) for i in range(12))


HELDOUT: tuple[Combo, ...] = _default_heldout()


@dataclass(frozen=True)
class Spec:
    """What one image/clip shows."""

    shape: str
    colour: str
    motion: str = "static"
    look: str = "light"
    hq: bool = False

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; expected one of {tuple(COLOURS)}")
        if self.motion not in MOTIONS:
            raise ValueError(f"unknown motion {self.motion!r}; expected one of {MOTIONS}")
        if self.look not in LOOKS:
            raise ValueError(f"unknown look {self.look!r}; expected one of {tuple(LOOKS)}")

    @property
    def combo(self) -> Combo:
        return (self.shape, self.colour, self.motion)

    def with_(self, **kw) -> Spec:
        return replace(self, **kw)


def all_combos(motions: tuple[str, ...] | list[str] = MOTIONS) -> list[Combo]:
    return [(s, c, m) for s in SHAPES for c in COLOURS for m in motions]


def heldout_combos(motions: tuple[str, ...] | list[str] = MOTIONS,
                   heldout: tuple[Combo, ...] | list[Combo] = HELDOUT) -> list[Combo]:
    """The held-out combos restricted to ``motions`` (evaluate generalisation on these)."""
    return [c for c in heldout if c[2] in motions]


def train_combos(motions: tuple[str, ...] | list[str] = MOTIONS,
                 heldout: tuple[Combo, ...] | list[Combo] = HELDOUT) -> list[Combo]:
    """Every shape×colour×motion combo over ``motions`` except the held-out ones."""
    held = set(heldout)
    return [c for c in all_combos(motions) if c not in held]


def caption(spec: Spec, look_in_caption: bool = True, hq_in_caption: bool = False) -> str:
    """``a red circle moving left, navy background`` (see the module docstring for the grammar)."""
    text = f"a {spec.colour} {spec.shape}"
    if _MOTION_PHRASE[spec.motion]:
        text += " " + _MOTION_PHRASE[spec.motion]
    if look_in_caption and spec.look != "light":
        text += f", {spec.look} background"
    if hq_in_caption and spec.hq:
        text += ", high quality"
    return text


_CAPTION_RE = re.compile(
    r"^\s*an?\s+(?P<colour>\w+)\s+(?P<shape>\w+)"
    r"(?:\s+(?:moving\s+(?P<dir>left|right|up|down)|(?P<zoom>zooming\s+in)))?"
    r"(?:\s*,\s*(?P<look>\w+)\s+background)?"
    r"(?P<hq>\s*,\s*high\s+quality)?\s*\.?\s*$",
    re.IGNORECASE,
)


def parse_caption(text: str) -> Spec:
    """Inverse of :func:`caption`; raises ``ValueError`` for text outside the grammar."""
    m = _CAPTION_RE.match(text)
    if not m:
        raise ValueError(f"not a shapes-world caption: {text!r}")
    motion = m["dir"].lower() if m["dir"] else ("zoom in" if m["zoom"] else "static")
    return Spec(shape=m["shape"].lower(), colour=m["colour"].lower(), motion=motion,
                look=(m["look"] or "light").lower(), hq=bool(m["hq"]))
