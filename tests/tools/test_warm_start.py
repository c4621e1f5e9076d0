"""`tools/train_demo_model.py --init` (tools/warm_start.py): a new demo pipeline starts from an earlier one, with
token embeddings matched by token string so a changed vocabulary keeps what was learned."""

from __future__ import annotations

import torch

from cns_cli.demo.pairs import PAIR_WORDS
from cns_cli.demo.world import VOCABULARY_WORDS
from cns_cli.model.tiny import word_tokenizer
from tools.train_demo_model import TOKENS, build_untrained
from tools.warm_start import warm_start


def test_weights_are_copied_and_split_words_start_from_their_pieces(tmp_path):
    old = build_untrained(seed=1)
    words = sorted({*VOCABULARY_WORDS, *PAIR_WORDS} - {"purple"})  # the old vocabulary: "purple" is split
    old.tokenizer = word_tokenizer(words, model_max_length=TOKENS)
    old.text_encoder.resize_token_embeddings(len(old.tokenizer))
    old.save_pretrained(tmp_path / "old", safe_serialization=True)
    pieces = old.tokenizer("purple", add_special_tokens=False).input_ids
    assert len(pieces) > 1

    new = build_untrained(seed=2)
    counts = warm_start(new, tmp_path / "old")
    assert counts["from_pieces"] >= 1 and sum(counts.values()) == len(new.tokenizer)
    for a, b in ((new.unet, old.unet), (new.vae, old.vae)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    rows_new = new.text_encoder.get_input_embeddings().weight
    rows_old = old.text_encoder.get_input_embeddings().weight
    vocab_new, vocab_old = new.tokenizer.get_vocab(), old.tokenizer.get_vocab()
    assert torch.equal(rows_new[vocab_new["dog</w>"]], rows_old[vocab_old["dog</w>"]])
    assert torch.allclose(rows_new[vocab_new["purple</w>"]], rows_old[pieces].mean(0))
    layer = next(k for k in old.text_encoder.state_dict() if k.endswith("layers.0.self_attn.q_proj.weight"))
    assert torch.equal(new.text_encoder.state_dict()[layer], old.text_encoder.state_dict()[layer])
