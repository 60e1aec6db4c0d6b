"""Shapes-world data: determinism, geometry of every motion, captions, held-out combos, the dataset writer."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest

from motion_adapters.shapes.data import (
    background,
    clip_geometry,
    iter_samples,
    read_clip,
    render_clip,
    render_image,
    sample_specs,
    write_dataset,
)
from motion_adapters.shapes.world import (
    COLOURS,
    DIRECTIONS,
    HELDOUT,
    LOOKS,
    MOTIONS,
    SHAPES,
    Spec,
    all_combos,
    caption,
    heldout_combos,
    parse_caption,
    train_combos,
)


def _object_mask(clip: np.ndarray, spec: Spec, seed: int) -> np.ndarray:
    """Ground-truth mask: pixels far from the exact background (cue off, so only the object differs)."""
    bg = np.rint(background(spec.look, seed, clip.shape[1]))
    return np.linalg.norm(clip.astype(float) - bg, axis=-1) > 60


def _centroids(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[: mask.shape[1], : mask.shape[2]]
    a = mask.sum(axis=(1, 2))
    return np.stack([(mask * xs).sum(axis=(1, 2)) / a, (mask * ys).sum(axis=(1, 2)) / a], axis=1)


def test_deterministic_by_seed_and_index():
    spec = Spec("triangle", "yellow", "left", "paper", hq=True)
    assert np.array_equal(render_clip(spec, 7), render_clip(spec, 7))
    assert not np.array_equal(render_clip(spec, 7), render_clip(spec, 8))
    a = list(iter_samples("clips", 6, seed=3, looks=tuple(LOOKS), hq=0.5))
    b = list(iter_samples("clips", 12, seed=3, looks=tuple(LOOKS), hq=0.5))
    for x, y in zip(a, b[:6], strict=True):     # growing n keeps the earlier samples
        assert x.spec == y.spec and x.text == y.text and np.array_equal(x.pixels, y.pixels)
    c = list(iter_samples("clips", 6, seed=4, looks=tuple(LOOKS), hq=0.5))
    assert [s.seed for s in a] != [s.seed for s in c]


@pytest.mark.parametrize("look", list(LOOKS))
@pytest.mark.parametrize("hq", [False, True])
def test_every_motion_renders_as_specified(look, hq):
    for i, (shape, motion) in enumerate((s, m) for s in SHAPES for m in MOTIONS):
        spec = Spec(shape, list(COLOURS)[i % 4], motion, look, hq)
        seed = 100 + i
        clip = render_clip(spec, seed, cue=False)
        assert clip.shape == (8, 32, 32, 3) and clip.dtype == np.uint8
        geo = clip_geometry(spec, seed)
        mask = _object_mask(clip, spec, seed)
        area = mask.sum(axis=(1, 2))
        assert (area > 20).all()
        c = _centroids(mask)
        if not hq:     # aliased flat shapes never touch the 1-px border
            assert not (mask[:, 0].any() or mask[:, -1].any() or mask[:, :, 0].any() or mask[:, :, -1].any())
        step = np.diff(c, axis=0)
        if motion in DIRECTIONS:
            axis = 0 if motion in ("left", "right") else 1
            sign = -1 if motion in ("left", "up") else 1
            speed = abs(geo.centres[1, axis] - geo.centres[0, axis])
            assert 2.0 - 1e-9 <= speed <= 3.0
            assert np.allclose(sign * step[:, axis], speed, atol=0.75), (spec, step)
            assert abs(sign * (c[-1, axis] - c[0, axis]) / 7 - speed) < 0.25
            assert np.abs(c[:, 1 - axis] - c[0, 1 - axis]).max() < 0.5
            assert area.max() / area.min() < 1.25
        elif motion == "zoom in":
            assert area[-1] / area[0] > 3.5 and (np.diff(area) >= 0).all()   # size × 2.1–2.5
            assert np.abs(c - c[0]).max() < 1.0
        else:
            assert (clip == clip[0]).all()


def test_geometry_stays_inside_for_long_clips_and_other_sizes():
    for i, motion in enumerate(MOTIONS):
        for frames, size in ((8, 32), (16, 32), (8, 64)):
            spec = Spec(SHAPES[i % 3], "red", motion)
            geo = clip_geometry(spec, 11 + i, frames, size)
            tri = spec.shape == "triangle"
            before = geo.sizes[:, None] * np.array([0.5, 2 / 3 if tri else 0.5])   # left, top
            after = geo.sizes[:, None] * np.array([0.5, 1 / 3 if tri else 0.5])    # right, bottom
            margin = size / 32 - 1e-9
            assert (geo.centres - before >= margin).all() and (geo.centres + after <= size - margin).all()
            if motion in DIRECTIONS:
                speed = np.abs(np.diff(geo.centres, axis=0)).max()
                assert speed <= 3 * size / 32 + 1e-9 and (frames > 8 or speed >= 2 * size / 32 - 1e-9)
    assert render_clip(Spec("circle", "red", "up"), 0, frames=16, size=64).shape == (16, 64, 64, 3)


def test_motion_cue_is_a_faint_trail_behind_the_object():
    spec = Spec("square", "red", "left")
    still = render_image(spec, 5, cue=False)
    cued = render_image(spec, 5)
    assert np.array_equal(render_image(spec.with_(motion="static"), 5), still)   # no cue when static
    diff = np.linalg.norm(cued.astype(float) - still.astype(float), axis=-1)
    obj = _object_mask(still[None], spec, 5)[0]
    assert diff[obj].max() == 0                       # the object itself is unchanged
    ys, xs = np.nonzero(diff > 0)
    assert xs.min() > np.nonzero(obj)[1].max() - 1    # trail only on the right (behind a leftward motion)
    full = np.linalg.norm(np.array(COLOURS["red"]) - np.array(LOOKS["light"]))
    assert 0.3 * full < diff.max() < 0.4 * full       # faint: at most 36 % of the object's contrast
    zoom = Spec("circle", "blue", "zoom in")
    halo = np.linalg.norm(render_image(zoom, 5).astype(float) - render_image(zoom, 5, cue=False), axis=-1) > 0
    assert halo.sum() > 20                             # zoom cue: a halo around the object


def test_caption_grammar_round_trips():
    for shape, colour, motion in all_combos():
        for look in LOOKS:
            for hq in (False, True):
                spec = Spec(shape, colour, motion, look, hq)
                assert parse_caption(caption(spec, hq_in_caption=True)) == spec
                assert parse_caption(caption(spec, look_in_caption=False)) == spec.with_(look="light", hq=False)
    assert caption(Spec("circle", "red")) == "a red circle"
    assert caption(Spec("circle", "red", "left")) == "a red circle moving left"
    assert caption(Spec("circle", "red", "zoom in")) == "a red circle zooming in"
    assert caption(Spec("circle", "red", "left", "navy")) == "a red circle moving left, navy background"
    assert caption(Spec("circle", "red", "left", "light", True), hq_in_caption=True) == \
        "a red circle moving left, high quality"
    assert parse_caption("A Red Circle moving LEFT.") == Spec("circle", "red", "left")
    for bad in ("a purple circle", "a red hexagon", "a red circle moving sideways", "red circle", "a red circle, x"):
        with pytest.raises(ValueError):
            parse_caption(bad)


def test_default_heldout_combos_are_balanced():
    assert len(HELDOUT) == len(set(HELDOUT)) == len(all_combos()) // 6
    assert Counter(m for _, _, m in HELDOUT) == {m: 2 for m in MOTIONS}
    assert Counter(s for s, _, _ in HELDOUT) == {s: 4 for s in SHAPES}
    assert Counter(c for _, c, _ in HELDOUT) == {c: 3 for c in COLOURS}
    assert len({(s, c) for s, c, _ in HELDOUT}) == 12           # every shape×colour pair held out once
    train = train_combos()
    assert {s for s, _, _ in train} == set(SHAPES) and {c for _, c, _ in train} == set(COLOURS)
    assert {m for _, _, m in train} == set(MOTIONS) and not set(train) & set(HELDOUT)
    assert heldout_combos(DIRECTIONS) == [h for h in HELDOUT if h[2] in DIRECTIONS] and len(heldout_combos(DIRECTIONS)) == 8
    assert len(train_combos(DIRECTIONS)) == 48 - 8
    custom = [("circle", "red", "left")]
    assert ("circle", "red", "left") not in train_combos(heldout=custom) and len(train_combos(heldout=custom)) == 71


def test_sampler_never_draws_heldout_and_respects_motions():
    specs = [s for s, _ in sample_specs(3000, seed=0, looks=tuple(LOOKS), hq=0.3)]
    assert not {s.combo for s in specs} & set(HELDOUT)
    assert {s.combo for s in specs} == set(train_combos())        # and covers all the others
    assert {s.look for s in specs} == set(LOOKS) and 0.2 < np.mean([s.hq for s in specs]) < 0.4
    no_zoom = [s for s, _ in sample_specs(500, seed=1, motions=DIRECTIONS)]
    assert {s.motion for s in no_zoom} == set(DIRECTIONS)
    only = [s for s, _ in sample_specs(50, seed=2, combos=HELDOUT[:2])]
    assert {s.combo for s in only} == set(HELDOUT[:2])


def _read_meta(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_write_images_dataset(tmp_path):
    meta = write_dataset(tmp_path / "img", kind="images", n=40, seed=5, looks=("light", "navy"))
    rows = _read_meta(meta)
    assert list(rows[0]) == ["file_name", "text", "shape", "colour", "motion", "look", "hq", "seed"]
    assert len(rows) == 40 and all(r["file_name"].endswith(".png") for r in rows)
    for r in rows:
        spec = Spec(r["shape"], r["colour"], r["motion"], r["look"], bool(int(r["hq"])))
        assert parse_caption(r["text"]) == spec and spec.combo not in HELDOUT
        assert np.array_equal(read_clip(meta.parent / r["file_name"])[0], render_image(spec, int(r["seed"])))


def test_write_clips_dataset_is_lossless(tmp_path):
    meta = write_dataset(tmp_path / "clips", kind="clips", n=6, seed=9, looks=tuple(LOOKS), hq=0.5,
                         motions=DIRECTIONS, frames=8)
    rows = _read_meta(meta)
    assert len(rows) == 6
    for r in rows:
        folder = meta.parent / r["file_name"]
        assert folder.is_dir() and sorted(p.name for p in folder.iterdir()) == [f"{t:03d}.png" for t in range(8)]
        spec = Spec(r["shape"], r["colour"], r["motion"], r["look"], bool(int(r["hq"])))
        assert spec.motion in DIRECTIONS and spec.combo not in HELDOUT
        assert np.array_equal(read_clip(folder), render_clip(spec, int(r["seed"])))
    with pytest.raises(ValueError):
        write_dataset(tmp_path / "bad", kind="video", n=1)


@pytest.mark.parametrize("look", sorted(LOOKS))
@pytest.mark.parametrize("hq", (False, True))
def test_silhouettes_are_clean_on_every_look(look, hq):
    """The silhouette preprocessor finds the object and only the object: not the motion trail, the hq shadow or
    the paper texture (within a 1-px aliasing rim; an empty background gives an empty map)."""
    from motion_adapters.clips.controls import compute_maps
    from motion_adapters.shapes.data import _coverage

    extra, missed = [], []
    for smp in iter_samples("clips", n=24, seed=3, looks=(look,), hq=hq):
        maps = compute_maps(smp.pixels.astype(np.float32) / 255.0, "silhouette")[..., 0] > 0.5
        geo = clip_geometry(smp.spec, smp.seed, 8, 32)
        truth = np.stack([_coverage(smp.spec.shape, x, y, s, 32, 4) > 0.5
                          for (x, y), s in zip(geo.centres, geo.sizes, strict=True)])
        extra.append((maps & ~truth).sum() / truth.sum())
        missed.append((~maps & truth).sum() / truth.sum())
    assert np.mean(extra) < 0.2 and np.max(extra) < 0.5, (np.mean(extra), np.max(extra))  # a trail alone: ~0.5
    assert np.mean(missed) < 0.01
    empty = np.stack([background(look, s) for s in range(8)]).astype(np.float32) / 255.0
    assert compute_maps(empty, "silhouette").mean() < 0.005
