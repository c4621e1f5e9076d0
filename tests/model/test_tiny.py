"""The locally built BPE tokenizers (tests' tiny pipeline, demo model): one token per vocabulary word."""

from __future__ import annotations

import pytest

from cns_cli.model.tiny import _WORDS, tiny_tokenizer, word_tokenizer


def _one_token_each(tok, words):
    return {w: tok(w, add_special_tokens=False).input_ids for w in words}


def test_every_word_is_one_token_even_where_merges_compete():
    # "to" gives the merge t+o</w> before "photo" is added: a left-to-right chain for "photo" would be
    # pre-empted by it (the old bug split "photo" into 4 tokens and "cat"/"hat" into c/h + at)
    words = ["to", "at", "photo", "cat", "hat", "plain", "in", "purple", "pl"]
    tok = word_tokenizer(words)
    ids = _one_token_each(tok, words)
    assert all(len(v) == 1 for v in ids.values()), ids
    assert len({v[0] for v in ids.values()}) == len(words)  # distinct tokens
    assert tok.decode(tok("a cat in purple", add_special_tokens=False).input_ids) == "a cat in purple"


def test_the_tiny_and_demo_vocabularies_are_one_token_per_word():
    from cns_cli.demo.pairs import PAIR_WORDS
    from tools.train_demo_model import demo_tokenizer
    from cns_cli.demo.world import VOCABULARY_WORDS

    for tok, words in ((tiny_tokenizer(), _WORDS), (demo_tokenizer(), sorted({*VOCABULARY_WORDS, *PAIR_WORDS}))):
        ids = _one_token_each(tok, words)
        assert all(len(v) == 1 for v in ids.values()), {w: v for w, v in ids.items() if len(v) != 1}


@pytest.mark.parametrize("text", ["zebra", "héllo wörld"])  # (CLIP splits digits one by one)
def test_other_text_still_tokenizes(text):
    tok = tiny_tokenizer()
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
