"""The standard CLIP (SD1.5) tokenizer, built offline from the BPE vocabulary shipped in the package."""

from __future__ import annotations

import functools
import gzip
import json
import os
from importlib import resources
from pathlib import Path

from transformers import CLIPTokenizer

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # 48,894 merges: CLIP's vocabulary is 49,408 entries
CLIP_MAX_LENGTH = 77


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-unicode table (256 entries)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """Build CLIP's ``vocab.json`` mapping and merge list from the shipped BPE file."""
    with resources.files("motion_adapters.assets.clip").joinpath(BPE_FILE).open("rb") as raw:
        lines = gzip.decompress(raw.read()).decode("utf-8").split("\n")
    merges = lines[1 : NUM_MERGES + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def write_clip_tokenizer_files(out_dir: str | Path) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and the tokenizer configs of SD1.5's CLIP tokenizer."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    cfg = {"tokenizer_class": "CLIPTokenizer", "model_max_length": CLIP_MAX_LENGTH, "do_lower_case": True,
           "errors": "replace", **special}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    return out


def _cache_dir() -> Path:
    root = os.environ.get("MOTION_ADAPTERS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "motion-adapters"
    )
    return Path(root) / "clip-tokenizer"


@functools.lru_cache(maxsize=1)
def clip_tokenizer_dir() -> Path:
    """Folder holding the built tokenizer files (built once into the user cache)."""
    d = _cache_dir()
    if not (d / "merges.txt").exists() or not (d / "tokenizer_config.json").exists():
        tmp = d.with_name(d.name + f".tmp{os.getpid()}")
        write_clip_tokenizer_files(tmp)
        d.parent.mkdir(parents=True, exist_ok=True)
        if not d.exists():
            os.replace(tmp, d)
    return d


def clip_tokenizer() -> CLIPTokenizer:
    """SD1.5's CLIP tokenizer, offline (``model_max_length=77``)."""
    d = clip_tokenizer_dir()
    return CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=CLIP_MAX_LENGTH)
