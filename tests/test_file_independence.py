"""A built generator owns its weights: overwriting or truncating the checkpoint on disk afterwards changes
nothing (safetensors tensors are views of the file's memory map until copied)."""

from __future__ import annotations

import shutil

from motion_adapters.inference import VideoGenerator


def test_generator_does_not_keep_views_of_the_checkpoint_files(tiny, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny.base_a, base)
    motion = tmp_path / "mm.safetensors"
    shutil.copy(tiny.mm_a_orig, motion)
    gen = VideoGenerator(base=base, motion=motion, device="cpu")
    before = gen.state_fingerprint()
    unet_file = base / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(unet_file.read_bytes())
    for path in (unet_file, motion):  # overwrite the tensor bytes in place (same inode, as `cp` does) …
        raw = bytearray(path.read_bytes())
        header = int.from_bytes(raw[:8], "little") + 8
        raw[header:] = bytes(len(raw) - header)
        with open(path, "r+b") as f:
            f.write(raw)
    assert gen.state_fingerprint() == before
    with open(unet_file, "r+b") as f:  # … and truncate: touching the weights must not crash (SIGBUS)
        f.truncate(len(data) // 4)
    assert gen.state_fingerprint() == before
