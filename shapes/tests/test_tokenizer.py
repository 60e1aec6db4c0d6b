"""The shapes-world tokenizer: a standard CLIPTokenizer whose vocabulary spells every caption word as one token."""

from __future__ import annotations

from motion_adapters.shapes.tokenizer import MAX_LENGTH, shapes_tokenizer, vocabulary_words
from motion_adapters.shapes.world import Spec, caption


def test_every_word_is_one_token_and_captions_fit(tmp_path):
    tok = shapes_tokenizer(tmp_path / "tok")
    for word in vocabulary_words():
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    longest = caption(Spec("triangle", "yellow", "zoom in", "paper", hq=True), hq_in_caption=True)
    ids = tok(longest).input_ids
    assert len(ids) <= MAX_LENGTH and ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert len(tok) < 1000
    # unknown words still tokenize (characters), like CLIP
    assert len(tok("a purple cat", add_special_tokens=False).input_ids) > 3
