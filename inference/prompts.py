"""Prompts: prompt travel maps and CLIP embeddings for prompts longer than 77 tokens."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import yaml

from motion_adapters.errors import MotionAdapterError, yaml_problem

_TRAVEL_RE = re.compile(r"^\s*(\d+)\s*:\s*(.*)$", re.S)


def parse_prompts(value: str | Sequence[str] | Mapping[int, str], name: str = "prompt") -> str | dict[int, str]:
    """One prompt, or a frame→prompt map for prompt travel; the only prompt parser (API, CLI and studio).

    Travel is a map, a list of ``"FRAME: text"`` items, or text whose lines are ``FRAME: text`` (a one-line
    ``"0: a cat"`` is travel too). Otherwise the text's lines are one prompt, joined by spaces (CLIP reads
    line breaks as spaces anyway). Errors name the parameter as ``name``.
    """
    if isinstance(value, Mapping):
        return _check_travel(name, value)
    if isinstance(value, str):
        lines = [ln.strip() for ln in value.splitlines() if ln.strip()]
        items = lines if len(lines) > 1 and _TRAVEL_RE.match(lines[0]) else [" ".join(lines)]
    elif isinstance(value, Sequence) and all(isinstance(p, str) for p in value):
        items = list(value)
        if not items:
            raise MotionAdapterError(f"{name}: expected at least one prompt, found none")
        if len(items) == 1:
            return parse_prompts(items[0], name)
    else:
        raise MotionAdapterError(f"{name}: expected text, 'FRAME: text' items or a frame→text map, "
                                 f"found {type(value).__name__}")
    matches = [_TRAVEL_RE.match(p) for p in items]
    if len(items) == 1 and not matches[0]:
        return items[0]
    if not all(matches):
        bad = next(p for p, m in zip(items, matches, strict=True) if not m)
        raise MotionAdapterError(
            f"{name}: with several prompts each must be 'FRAME: text' (prompt travel), found {bad!r}")
    return _check_travel(name, {m.group(1): m.group(2).strip() for m in matches})


def load_prompt_file(path: str | Path, name: str = "prompt_file") -> dict[int, str]:
    """A YAML map ``{frame: prompt}`` for prompt travel (plain YAML only: tags that build objects are refused).
    Errors name the parameter as ``name`` and the file."""
    label = f"{name} {path}"
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MotionAdapterError(f"{label}: expected a YAML file, found nothing at that path") from None
    except IsADirectoryError:
        raise MotionAdapterError(f"{label}: expected a YAML file, found a folder") from None
    except UnicodeDecodeError:
        raise MotionAdapterError(f"{label}: expected a UTF-8 text file, found binary data") from None
    except yaml.YAMLError as e:
        raise MotionAdapterError(f"{label}: expected a YAML map of frame index to prompt, found invalid YAML "
                                 f"({yaml_problem(e)})") from None
    if not isinstance(data, Mapping) or not data or not all(str(k).strip().isdigit() for k in data):
        found = "an empty file" if data is None else f"a {type(data).__name__}"
        if isinstance(data, Mapping) and data:
            found = f"the key {next(k for k in data if not str(k).strip().isdigit())!r}"
        raise MotionAdapterError(f"{label}: expected a YAML map of frame index to prompt, found {found}")
    return _check_travel(label, data)


def _check_travel(name: str, travel: Mapping) -> dict[int, str]:
    """Frame indices (whole numbers ≥ 0, frame 0 among them) to prompts, sorted."""
    out: dict[int, str] = {}
    for k, v in travel.items():
        key = str(k).strip()
        if not key.isdigit():
            raise MotionAdapterError(f"{name}: expected prompt-travel frame indices (whole numbers ≥ 0), "
                                     f"found {k!r}")
        out[int(key)] = str(v).strip()
    if 0 not in out:
        raise MotionAdapterError(f"{name}: expected a prompt-travel prompt for frame 0, found frames {sorted(out)}")
    return dict(sorted(out.items()))


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
