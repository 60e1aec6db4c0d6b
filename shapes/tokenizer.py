"""A CLIP tokenizer for the shapes world's vocabulary (standard ``CLIPTokenizer``, a few hundred entries).

The vocabulary is CLIP's layout in miniature: the 256 byte symbols, the same with ``</w>``, one merged token
per step of spelling each word of the caption grammar, then ``<|startoftext|>`` and ``<|endoftext|>``. Every
word of the grammar becomes exactly one token; anything else falls back to characters, as in CLIP.
"""

from __future__ import annotations

import json
from pathlib import Path

from motion_adapters.shapes.world import COLOURS, LOOKS, SHAPES
from motion_adapters.tokenizer import bytes_to_unicode

MAX_LENGTH = 16  # the longest caption is 12 tokens with BOS/EOS


def vocabulary_words() -> list[str]:
    words = {"a", "moving", "left", "right", "up", "down", "zooming", "in", "background", "high", "quality"}
    words |= set(SHAPES) | set(COLOURS) | set(LOOKS)
    return sorted(words)


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges learned on ``words`` until each is one token (most frequent pair first, ties by
    order of appearance). Applying them in order, as CLIP's BPE does, spells every word as one token."""
    segs = {w: [*w[:-1], w[-1] + "</w>"] for w in words}
    merges: list[tuple[str, str]] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for seg in segs.values():
            for pair in zip(seg[:-1], seg[1:], strict=True):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = max(counts, key=lambda p: counts[p])  # dicts keep insertion order: ties go to the first seen
        merges.append(best)
        for w, seg in segs.items():
            out, i = [], 0
            while i < len(seg):
                if i + 1 < len(seg) and (seg[i], seg[i + 1]) == best:
                    out.append(seg[i] + seg[i + 1])
                    i += 2
                else:
                    out.append(seg[i])
                    i += 1
            segs[w] = out


def write_shapes_tokenizer(out_dir: str | Path) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and configs of the shapes tokenizer into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    merges = learn_merges(vocabulary_words())
    for a, b in merges:
        if a + b not in vocab:
            vocab.append(a + b)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LENGTH, "do_lower_case": True, **special},
        indent=2))
    return out


def shapes_tokenizer(folder: str | Path):
    from transformers import CLIPTokenizer

    folder = Path(folder)
    if not (folder / "vocab.json").exists():
        write_shapes_tokenizer(folder)
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_LENGTH)
