"""Pieces of the training pass that the end-to-end tests would not pin down on their own."""

from __future__ import annotations

import pytest
import torch

from cns_cli.model.loading import load_pipeline, resolve_base
from cns_cli.model.text import TextConditioner


@pytest.mark.parametrize("fixture", ["tiny_base", "tiny_sdxl"])
def test_unique_encoding_matches_encoding_each_prompt(fixture, request):
    """`TextConditioner.unique` (each distinct prompt through the encoders once) gives every prompt's own states
    and, on SDXL, its own added conditioning, in the batch's order."""
    pipe = load_pipeline(resolve_base(request.getfixturevalue(fixture)))
    conditioner = TextConditioner(pipe, 32)
    texts = ["a red ball", "a dog on grass", "a red ball"]
    with torch.no_grad():
        got, want = conditioner.unique(texts), conditioner(texts)
    assert torch.equal(got.states, want.states)
    assert (got.added is None) == (want.added is None) == (fixture == "tiny_base")
    for key in (want.added or {}):
        assert torch.equal(got.added[key], want.added[key])
