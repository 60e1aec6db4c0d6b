"""Safe reading: refusals name the file and never run code from a pickle."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from motion_adapters.errors import AdapterFormatError, UnsafePickleError
from motion_adapters.io import read_state_dict, save_safetensors_atomic
from motion_adapters.tokenizer import clip_tokenizer

MARKER = "motion_adapters_pwned_marker"


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / MARKER
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": _Evil(str(marker))}, path)
    with pytest.raises(UnsafePickleError) as e:
        read_state_dict(path)
    assert not marker.exists(), "unpickling ran code"
    msg = str(e.value)
    assert "evil.ckpt" in msg and "weights_only" in msg and "safetensors" in msg


def test_legacy_pickle_protocol_refused_without_running(tmp_path):
    marker = tmp_path / MARKER
    path = tmp_path / "legacy.pt"
    with open(path, "wb") as f:
        pickle.dump({"x": _Evil(str(marker))}, f, protocol=2)
    with pytest.raises(AdapterFormatError):
        read_state_dict(path)
    assert not marker.exists()


def test_plain_ckpt_with_nested_state_dict_and_non_tensors(tmp_path):
    path = tmp_path / "ok.ckpt"
    torch.save({"state_dict": {"state_dict": {"a.weight": torch.ones(3), "cfg": "x"}}, "epoch": 1}, path)
    tensors, meta = read_state_dict(path)
    assert list(tensors) == ["a.weight"] and torch.equal(tensors["a.weight"], torch.ones(3))
    assert meta == {}


_NOISE = np.random.default_rng(0).bytes(4095)


@pytest.mark.parametrize(
    "content, found",
    [(b"", "empty file"), (b"\x17" + _NOISE, "unrecognised bytes"),
     (b"\x80" + _NOISE, "unreadable or truncated file")],   # 0x80 looks like a pickle: torch.load then safetensors
    ids=["empty", "random-bytes", "random-bytes-after-pickle-opcode"],
)
def test_bad_bytes_are_named(tmp_path, content, found):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(AdapterFormatError) as e:
        read_state_dict(path)
    assert "broken.safetensors" in str(e.value) and found in str(e.value)


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "full.safetensors"
    save_safetensors_atomic({"w": torch.randn(64, 64)}, path, {"k": "v"})
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AdapterFormatError) as e:
        read_state_dict(cut)
    assert "cut.safetensors" in str(e.value) and "truncated" in str(e.value)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    save_safetensors_atomic({"w": torch.ones(2)}, tmp_path / "a.safetensors", {"m": "1"})
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]
    tensors, meta = read_state_dict(tmp_path / "a.safetensors")
    assert meta["m"] == "1" and torch.equal(tensors["w"], torch.ones(2))


def test_missing_path(tmp_path):
    with pytest.raises(AdapterFormatError, match="nothing at that path"):
        read_state_dict(tmp_path / "nope.safetensors")


def test_offline_clip_tokenizer_matches_sd15():
    tok = clip_tokenizer()
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tok) == 49408 and tok.model_max_length == 77
