"""SparseCtrl: pictures (an ``rgb`` encoder) or scribbles (a ``scribble`` encoder) that pin chosen frames of a
clip — the first frame to animate a picture, first and last to go from one picture to another.

The encoder is a control model like a ControlNet (:class:`~.controlnets.ControlNetSet` keeps it loaded); the
pictures are keyframes: frame index → picture, ``image=`` being frame 0.
"""

from __future__ import annotations

from collections.abc import Mapping

from diffusers import SparseControlNetModel

from motion_adapters.errors import MotionAdapterError
from motion_adapters.inference.controlnets import ControlKind
from motion_adapters.inference.inputs import Frames, PictureInput, read_picture
from motion_adapters.kinds import KIND_SPARSECTRL
from motion_adapters.swap import build_sparsectrl, check_sparsectrl_fits_base

SPARSECTRL = ControlKind(
    SparseControlNetModel, KIND_SPARSECTRL, check_sparsectrl_fits_base, build_sparsectrl,
    live_kind=lambda m: "rgb" if m.config.use_simplified_condition_embedding else "scribble")


def read_keyframes(image: PictureInput | None, keyframes: Mapping[int, PictureInput] | None,
                   labels: Mapping[str, str]) -> dict[int, Frames]:
    """The pictures of a call by frame index as given (negative: from the end), ``image`` at 0, each read now;
    errors name ``labels['image']`` / ``labels['keyframes']``."""
    kf_label = labels.get("keyframes", "keyframes")
    out: dict[int, Frames] = {}
    if image is not None:
        out[0] = read_picture(image, labels.get("image", "image"))
    for index, picture in (keyframes or {}).items():
        if isinstance(index, bool) or not isinstance(index, int):
            raise MotionAdapterError(f"{kf_label}: expected whole frame indices, found {index!r}")
        if index == 0 and image is not None:
            raise MotionAdapterError(f"{kf_label} 0: frame 0 is already the {labels.get('image', 'image')}; expected "
                                     "one picture per frame, found two")
        out[index] = read_picture(picture, f"{kf_label} {index}")
    return out


def place_keyframes(pictures: Mapping[int, Frames], num_frames: int, labels: Mapping[str, str]) -> dict[int, Frames]:
    """``pictures`` at frame indices inside a clip of ``num_frames`` (negative ones counted from the end), in
    order; an index outside the clip, or two pictures for one frame, is an error naming it."""
    kf_label = labels.get("keyframes", "keyframes")
    placed: dict[int, Frames] = {}
    for index, picture in pictures.items():
        at = index + num_frames if index < 0 else index
        if not 0 <= at < num_frames:
            raise MotionAdapterError(f"{kf_label} {index}: expected a frame of the {num_frames}-frame clip (0 to "
                                     f"{num_frames - 1}, or -{num_frames} to -1 from the end), found {index}")
        if at in placed:
            raise MotionAdapterError(f"{kf_label} {index}: frame {at} already has a picture; expected one per frame")
        placed[at] = picture
    return dict(sorted(placed.items()))


def choose_encoder(pictures: Mapping[int, Frames], named, fallback, *, video: bool, controlnets: bool,
                   labels: Mapping[str, str]):
    """The SparseCtrl encoder a call's keyframes use: the one ``named``, else ``fallback`` (the loaded one, else the
    base's registered one); ``None`` when there is none (a lone first frame is then animated by video to video).
    Combinations diffusers' SparseCtrl pipeline cannot run are refused, naming the inputs."""
    n = labels
    label = n.get("sparsectrl", "sparsectrl")
    if not pictures:
        if named is not None:
            raise MotionAdapterError(f"{label}: conditions keyframes; expected {n.get('image', 'image')} or "
                                     f"{n.get('keyframes', 'keyframes')} with it, found neither")
        return None
    if video:
        raise MotionAdapterError(f"{n.get('image', 'image')}: a clip starts from a picture or restyles a "
                                 f"{n.get('video', 'video')}; expected one of them, found both")
    model = named if named is not None else fallback
    if model is None:
        if set(pictures) != {0}:
            raise MotionAdapterError(f"{n.get('keyframes', 'keyframes')}: pinning frames other than the first "
                                     f"needs a SparseCtrl encoder; expected one ({label}), found none for this base")
        return None
    if controlnets:
        raise MotionAdapterError(f"{n.get('controlnets', 'controlnets')}: diffusers' SparseCtrl pipeline takes no "
                                 "ControlNet beside the SparseCtrl encoder; expected one of them, found both")
    return model
