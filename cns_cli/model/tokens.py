"""Concept tokens in the tokenizers and text encoders.

Each concept adds its token `<name>` with its embedding's k vectors in every text encoder (SD 1.x / 2.x: one
encoder; SDXL: text_encoder and text_encoder_2, each through its own tokenizer). A k-vector token is k tokenizer
tokens, `<name>`, `<name>_1`, …, `<name>_{k-1}` (bank.names.vector_tokens, diffusers' textual-inversion
convention), and wherever cns encodes a prompt itself, `<name>` is read as all k of them (`expand_vectors`, what
diffusers' pipelines do in encode_prompt: a prompt handed to a pipeline is expanded there, never twice). Tokens
are added in a fixed order (by the revision that learned them, then name; a concept's k tokens in row order), so
the same bank always yields the same token ids. k = 1 is the single token `<name>` of every earlier cns.
"""

from __future__ import annotations

import torch
from torch import nn

from ..bank.names import vector_tokens
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
    # mean_resizing=False: every new row is set just below, so transformers' mean initialisation (and the notice
    # it logs about it on every call) would be wasted work
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    weight = token_embedding(text_encoder).weight
    ids = tokenizer.convert_tokens_to_ids(names)
    for tid, (_, vec) in zip(ids, tokens):
        if vec.shape != weight.shape[1:]:
            raise BankFormatError(f"embedding width {tuple(vec.shape)} does not match the text encoder's {weight.shape[1]}")
        weight[tid] = vec.to(weight)
    return ids


def add_tokens_everywhere(pairs: list[tuple], tokens: list[tuple[str, list[torch.Tensor]]]) -> list[list[int]]:
    """Add each (token, [(k, e_i) vectors per text encoder]) to every (tokenizer, text encoder) of `pairs`: its k
    tokens `vector_tokens(token, k)` with the k rows. Returns the new token ids per pair, every concept's k in row
    order (the tokenizers of one pipeline may number them differently)."""
    for token, vectors in tokens:
        if len(vectors) != len(pairs):
            raise BankFormatError(f"{token} has {len(vectors)} embedding(s); this model has {len(pairs)} text encoder(s)")
        if any(v.ndim != 2 for v in vectors) or len({v.shape[0] for v in vectors}) != 1:
            raise BankFormatError(f"{token} needs one (k, width) embedding per text encoder with the same k, got "
                                  f"{[tuple(v.shape) for v in vectors]}")
    for tok, _ in pairs:  # every refusal before any tokenizer changes
        vocab = tok.get_vocab()
        for token, vectors in tokens:
            k = vectors[0].shape[0]
            clash = [t for t in vector_tokens(token, k) if t in vocab]
            if clash:
                raise ModelError(f"the base tokenizer already has the token {clash[0]}; rename the concept")
            if f"{token}_{k}" in vocab:  # diffusers (and `expand_vectors`) would read it as one more vector of the token
                raise ModelError(f"the base tokenizer already has the token {token}_{k}, which would be read as part of "
                                 f"{token}; rename the concept")
    return [add_tokens(tok, enc, [(t, row) for token, vecs in tokens
                                  for t, row in zip(vector_tokens(token, vecs[i].shape[0]), vecs[i])])
            for i, (tok, enc) in enumerate(pairs)]


def expand_vectors(prompt: str, tokenizer) -> str:
    """`prompt` as a text encoder of `tokenizer` must read it: each multi-vector token followed by its other tokens
    ("<dog> dog" -> "<dog> <dog>_1 <dog>_2 dog" for a 3-vector <dog>); everything else, 1-vector tokens included,
    as it is. This is diffusers' TextualInversionLoaderMixin.maybe_convert_prompt, which its pipelines apply in
    encode_prompt (to the prompt and the negative prompt, per tokenizer), so cns's own text states are the
    pipeline's. One difference: the tokens are replaced in sorted order, not a set's (which varies with Python's
    hash seed); the result is the same unless one token is a substring of another's expansion (never for cns's)."""
    added = tokenizer.added_tokens_encoder
    multi = {t: " ".join(vector_tokens(t, _vectors_of(t, added))) for t in added if f"{t}_1" in added}
    if not multi:
        return prompt
    for token in sorted(set(tokenizer.tokenize(prompt)) & multi.keys()):
        prompt = prompt.replace(token, multi[token])
    return prompt


def _vectors_of(token: str, added) -> int:
    """k of an added token: itself and `token_1`, `token_2`, … while they are added tokens (diffusers' rule)."""
    k = 1
    while f"{token}_{k}" in added:
        k += 1
    return k


@torch.no_grad()
def class_word_vector(tokenizer, text_encoder, class_word: str) -> torch.Tensor:
    """Mean input embedding of the class word's tokens: where a new token starts (INFERRED; TI-style)."""
    ids = tokenizer(class_word, add_special_tokens=False).input_ids
    return token_embedding(text_encoder).weight[ids].float().mean(dim=0)


def class_word_start(tokenizer, text_encoder, class_word: str, k: int) -> torch.Tensor:
    """(k, e): where a new k-vector token starts, every vector at the class word's mean input embedding. The same
    start as diffusers' textual_inversion.py with --num_vectors k (each vector a copy of the initializer token's);
    the vectors part as they train, since each sits at its own position of the prompt."""
    return class_word_vector(tokenizer, text_encoder, class_word).expand(k, -1).clone()


class TrainableToken(nn.Module):
    """Wraps the input embedding: the rows of `token_ids` (a k-vector concept's k tokens, in row order) come from
    a trainable (k, e) matrix `vectors`, every other row from the frozen table. Only `vectors` gets gradients,
    so no other row can move (not even through optimiser state or weight decay)."""

    def __init__(self, base: nn.Embedding, token_ids: list[int], init: torch.Tensor):
        super().__init__()
        if init.ndim != 2 or init.shape[0] != len(token_ids):
            raise ValueError(f"{len(token_ids)} token ids need a ({len(token_ids)}, e) init, got {tuple(init.shape)}")
        self.base = base
        self.token_ids = list(token_ids)
        self.vectors = nn.Parameter(init.clone().float().to(base.weight.device))  # (k, e)

    @property
    def weight(self) -> torch.Tensor:  # transformers reads .weight for dtype/device checks
        return self.base.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.base(ids)
        for row, token_id in enumerate(self.token_ids):  # k is small (≤ 16): one masked select per vector
            mask = (ids == token_id).unsqueeze(-1)
            out = torch.where(mask, self.vectors[row].to(out.dtype), out)
        return out


def attach_trainable_token(text_encoder, token_ids: list[int], init: torch.Tensor) -> TrainableToken:
    """Replace `text_encoder`'s input embedding by a TrainableToken over `token_ids` started at `init` (k, e)."""
    emb = token_embedding(text_encoder)
    wrapper = TrainableToken(emb, token_ids, init)
    text_encoder.set_input_embeddings(wrapper)
    return wrapper
