"""Prompts: prompt travel maps and CLIP embeddings for prompts longer than 77 tokens."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from motion_adapters.errors import MotionAdapterError

_TRAVEL_RE = re.compile(r"^\s*(\d+)\s*:\s*(.*)$", re.S)


def parse_prompts(items: Sequence[str] | str | Mapping[int, str]) -> str | dict[int, str]:
    """One prompt, or a frame→prompt map from ``"0: a cat"``-style items (prompt travel)."""
    if isinstance(items, Mapping):
        return _check_travel({int(k): str(v) for k, v in items.items()})
    if isinstance(items, str):
        items = [items]
    items = list(items)
    if not items:
        raise MotionAdapterError("--prompt: expected at least one prompt, found none")
    matches = [_TRAVEL_RE.match(p) for p in items]
    if len(items) == 1 and not matches[0]:
        return items[0]
    if not all(matches):
        bad = next(p for p, m in zip(items, matches, strict=True) if not m)
        raise MotionAdapterError(
            f"--prompt: with several prompts each must be 'FRAME: text' (prompt travel), found {bad!r}")
    return _check_travel({int(m.group(1)): m.group(2).strip() for m in matches})


def load_prompt_file(path: str | Path) -> dict[int, str]:
    """A YAML map ``{frame: prompt}`` for prompt travel."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, Mapping) or not all(str(k).strip().isdigit() for k in data):
        raise MotionAdapterError(f"{path}: expected a YAML map of frame index to prompt, found {type(data).__name__}")
    return _check_travel({int(k): str(v) for k, v in data.items()})


def _check_travel(travel: dict[int, str]) -> dict[int, str]:
    if 0 not in travel:
        raise MotionAdapterError(f"prompt travel: expected a prompt for frame 0, found frames {sorted(travel)}")
    return dict(sorted(travel.items()))


def token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids)


@torch.no_grad()
def encode_long(pipe, texts: Sequence[str], device, min_chunks: int = 1) -> torch.Tensor:
    """CLIP embeddings of any length: 75-token chunks, each wrapped in BOS/EOS and encoded alone, concatenated.

    Every text is padded to the same number of chunks (at least ``min_chunks``), so positive and negative
    prompts get the same sequence length (A1111's convention). Returns (len(texts), 77·chunks, D).
    """
    tok = pipe.tokenizer
    body = tok.model_max_length - 2
    ids = [tok(t, add_special_tokens=False).input_ids for t in texts]
    chunks = max(min_chunks, *[max(1, -(-len(i) // body)) for i in ids])
    out = []
    for seq in ids:
        parts = []
        for c in range(chunks):
            piece = seq[c * body : (c + 1) * body]
            row = [tok.bos_token_id, *piece, tok.eos_token_id]
            row += [tok.pad_token_id] * (tok.model_max_length - len(row))
            parts.append(row)
        input_ids = torch.tensor(parts, device=device)
        hidden = pipe.text_encoder(input_ids)[0]
        out.append(hidden.reshape(1, -1, hidden.shape[-1]))
    return torch.cat(out).to(dtype=pipe.text_encoder.dtype)


def num_chunks(tokenizer, texts: Sequence[str]) -> int:
    body = tokenizer.model_max_length - 2
    return max(1, *[-(-token_count(tokenizer, t) // body) for t in texts if t])


def lerp_frames(keyframes: Mapping[int, torch.Tensor], num_frames: int) -> torch.Tensor:
    """Per-frame embeddings linearly interpolated between keyframes (held after the last one)."""
    idx = sorted(keyframes)
    first = keyframes[idx[0]]
    out = first.new_zeros((num_frames, *first.shape[1:]))
    idx_ext = [*idx, num_frames - 1] if idx[-1] < num_frames - 1 else idx
    for a, b in zip(idx_ext[:-1], idx_ext[1:], strict=True):
        ea, eb = keyframes[a], keyframes.get(b, keyframes[a])
        for f in range(a, b + 1):
            t = (f - a) / (b - a) if b > a else 0.0
            out[f] = ((1 - t) * ea + t * eb)[0]
    return out
