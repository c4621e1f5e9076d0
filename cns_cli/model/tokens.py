"""Concept tokens in the tokenizers and text encoders.

Each concept adds one token `<name>` with one embedding vector per text encoder (SD 1.x / 2.x: one; SDXL:
one in text_encoder and one in text_encoder_2, added to each encoder's own tokenizer). Tokens are added in a
fixed order (by the revision that learned them, then name), so the same bank always yields the same token ids.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import BankFormatError, ModelError


def token_embedding(text_encoder) -> nn.Module:
    return text_encoder.get_input_embeddings()


@torch.no_grad()
def add_tokens(tokenizer, text_encoder, tokens: list[tuple[str, torch.Tensor]]) -> list[int]:
    """Add each (token, vector (d,)) and set its embedding row. Returns the new token ids."""
    if not tokens:
        return []
    names = [t for t, _ in tokens]
    clash = [t for t in names if t in tokenizer.get_vocab()]
    if clash:
        raise ModelError(f"the base tokenizer already has the token {clash[0]}; rename the concept")
    added = tokenizer.add_tokens(names)
    if added != len(names):
        raise ModelError(f"the tokenizer accepted {added} of {len(names)} concept tokens")
    text_encoder.resize_token_embeddings(len(tokenizer))
    weight = token_embedding(text_encoder).weight
    ids = tokenizer.convert_tokens_to_ids(names)
    for tid, (_, vec) in zip(ids, tokens):
        if vec.shape != weight.shape[1:]:
            raise BankFormatError(f"embedding width {tuple(vec.shape)} does not match the text encoder's {weight.shape[1]}")
        weight[tid] = vec.to(weight)
    return ids


def add_tokens_everywhere(pairs: list[tuple], tokens: list[tuple[str, list[torch.Tensor]]]) -> list[list[int]]:
    """Add each (token, [vector per text encoder]) to every (tokenizer, text encoder) of `pairs`. Returns the
    new token ids per pair (the tokenizers of one pipeline may number them differently)."""
    for token, vectors in tokens:
        if len(vectors) != len(pairs):
            raise BankFormatError(f"{token} has {len(vectors)} embedding vector(s); this model has {len(pairs)} text encoder(s)")
    for tok, _ in pairs:  # every refusal before any tokenizer changes
        clash = [t for t, _ in tokens if t in tok.get_vocab()]
        if clash:
            raise ModelError(f"the base tokenizer already has the token {clash[0]}; rename the concept")
    return [add_tokens(tok, enc, [(t, vecs[i]) for t, vecs in tokens]) for i, (tok, enc) in enumerate(pairs)]


@torch.no_grad()
def class_word_vector(tokenizer, text_encoder, class_word: str) -> torch.Tensor:
    """Mean input embedding of the class word's tokens: where a new token starts (INFERRED; TI-style)."""
    ids = tokenizer(class_word, add_special_tokens=False).input_ids
    return token_embedding(text_encoder).weight[ids].float().mean(dim=0)


class TrainableToken(nn.Module):
    """Wraps the input embedding: the row of `token_id` comes from a trainable vector, every other row from
    the frozen table. Only the vector gets gradients, so no other row can move (not even through
    optimiser state or weight decay)."""

    def __init__(self, base: nn.Embedding, token_id: int, init: torch.Tensor):
        super().__init__()
        self.base = base
        self.token_id = token_id
        self.vector = nn.Parameter(init.clone().float().to(base.weight.device))

    @property
    def weight(self) -> torch.Tensor:  # transformers reads .weight for dtype/device checks
        return self.base.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.base(ids)
        mask = (ids == self.token_id).unsqueeze(-1)
        return torch.where(mask, self.vector.to(out.dtype), out)


def attach_trainable_token(text_encoder, token_id: int, init: torch.Tensor) -> TrainableToken:
    emb = token_embedding(text_encoder)
    wrapper = TrainableToken(emb, token_id, init)
    text_encoder.set_input_embeddings(wrapper)
    return wrapper
