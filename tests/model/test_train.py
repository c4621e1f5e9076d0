"""Pieces of the training pass that the end-to-end tests would not pin down on their own."""

from __future__ import annotations

import torch

from cns_cli.model.loading import load_pipeline, resolve_base
from cns_cli.model.text import encode
from cns_cli.model.train import encode_unique


def test_encode_unique_matches_encoding_each_prompt(tiny_base):
    pipe = load_pipeline(resolve_base(tiny_base))
    texts = ["a red ball", "a dog on grass", "a red ball"]
    with torch.no_grad():
        assert torch.equal(encode_unique(pipe.tokenizer, pipe.text_encoder, texts),
                           encode(pipe.tokenizer, pipe.text_encoder, texts))
