"""The shapes world: the embedded offline toy domain (data generator; the evaluator is ``motion_adapters.shapes.evaluate``)."""

from motion_adapters.shapes.data import iter_samples, read_clip, render_clip, render_image, write_dataset
from motion_adapters.shapes.world import (
    COLOURS,
    DIRECTIONS,
    HELDOUT,
    LOOKS,
    MOTIONS,
    SHAPES,
    Spec,
    caption,
    heldout_combos,
    parse_caption,
    train_combos,
)

__all__ = [
    "COLOURS", "DIRECTIONS", "HELDOUT", "LOOKS", "MOTIONS", "SHAPES", "Spec", "caption", "heldout_combos",
    "iter_samples", "parse_caption", "read_clip", "render_clip", "render_image", "train_combos", "write_dataset",
]
