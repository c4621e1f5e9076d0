"""Text states (the inputs of every to_k/to_v) for prompts, per model family, and the general-neuron scan.

What the UNet sees, exactly as the family's diffusers pipeline computes it (`encode_prompt`):
    SD 1.x / 2.x  states = text_encoder(ids)[0]                        (B, 77, d), the final layer norm applied
    SDXL          states = cat(text_encoder(ids).hidden_states[-2],     (B, 77, 768 + 1280), no final norm
                               text_encoder_2(ids_2).hidden_states[-2])
                  added  = {"text_embeds": text_encoder_2(ids_2)[0]     (B, 1280) pooled and projected
                            "time_ids": (H, W, 0, 0, H, W)}             (B, 6) original size, crop, target size
Mixing the two up gives silently wrong states (../shared/docs/SDXL.md).
A prompt's multi-vector concept tokens are expanded before tokenizing, per tokenizer, as encode_prompt does
(tokens.expand_vectors): "<dog>" is read as "<dog> <dog>_1 <dog>_2" for a 3-vector <dog>.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..method.select import general_from_hits, general_neurons, prompt_hits, row_activation
from .family import text_pairs
from .loading import kv_layers
from .tokens import expand_vectors

__all__ = ["Cond", "TextConditioner", "encode", "encode_pairs", "general_neuron_masks", "text_pairs"]


class Cond(NamedTuple):
    """What one batch of prompts conditions the UNet with."""

    states: torch.Tensor  # (B, 77, d): what every attn2.to_k / to_v reads
    added: dict | None = None  # SDXL: {"text_embeds": (B, p), "time_ids": (B, 6)}; None for SD 1.x / 2.x

    def pick(self, idx: torch.Tensor) -> Cond:
        """Rows `idx` of the batch (of the states and of every added tensor)."""
        idx = idx.to(self.states.device)
        added = None if self.added is None else {k: v[idx.to(v.device)] for k, v in self.added.items()}
        return Cond(self.states[idx], added)


def _ids(tokenizer, prompts: list[str], device) -> torch.Tensor:
    """(B, max_length) token ids, as the pipeline's encode_prompt makes them: multi-vector concept tokens
    expanded first (tokens.expand_vectors; a no-op without one), then padded to the tokenizer's length."""
    prompts = [expand_vectors(p, tokenizer) for p in prompts]
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids.to(device)


def encode(tokenizer, text_encoder, prompts: list[str], batch: int = 32) -> torch.Tensor:
    """SD 1.x / 2.x text states: (len(prompts), max_length, d), padded to the tokenizer's length exactly like
    StableDiffusionPipeline.encode_prompt does (so padding states are included)."""
    device = next(text_encoder.parameters()).device
    return torch.cat([text_encoder(_ids(tokenizer, prompts[i : i + batch], device))[0]
                      for i in range(0, len(prompts), batch)])


def encode_pairs(pairs: list[tuple], prompts: list[str], batch: int = 32) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(states, pooled) of `prompts` through every (tokenizer, text encoder) of a pipeline: one pair gives
    SD 1.x / 2.x states and no pooled output; two give SDXL's concatenated penultimate states and the second
    encoder's pooled projection."""
    if len(pairs) == 1:
        return encode(*pairs[0], prompts, batch), None
    states, pooled = [], []
    for i in range(0, len(prompts), batch):
        chunk, parts = prompts[i : i + batch], []
        for tokenizer, encoder in pairs:
            out = encoder(_ids(tokenizer, chunk, next(encoder.parameters()).device), output_hidden_states=True)
            parts.append(out.hidden_states[-2])
            last = out[0]  # text_encoder_2 (CLIPTextModelWithProjection): text_embeds, (B, p)
        states.append(torch.cat([p.to(parts[0].device) for p in parts], dim=-1))
        pooled.append(last)
    return torch.cat(states), torch.cat(pooled)


class TextConditioner:
    """prompts -> Cond for the UNet of `pipe`'s family. `size` (pixels, square) sets SDXL's size/crop ids:
    (size, size, 0, 0, size, size), the pipeline's default for an uncropped image of that size (INFERRED for
    training: cns's images are already resized and centre-cropped to `size`, so that is what the UNet sees)."""

    def __init__(self, pipe, size: int | None = None):
        self.pairs = text_pairs(pipe)
        self.size = size

    def states(self, prompts: list[str]) -> torch.Tensor:
        """(len(prompts), 77, d): the text states every K/V layer reads."""
        return encode_pairs(self.pairs, prompts)[0]

    def __call__(self, prompts: list[str]) -> Cond:
        states, pooled = encode_pairs(self.pairs, prompts)
        if pooled is None:
            return Cond(states)
        if self.size is None:
            raise ValueError("an SDXL conditioner needs the image size for its time ids")
        ids = torch.tensor([[self.size, self.size, 0, 0, self.size, self.size]], dtype=pooled.dtype,
                           device=pooled.device).expand(len(prompts), -1)
        return Cond(states, {"text_embeds": pooled, "time_ids": ids})

    def unique(self, texts: list[str]) -> Cond:
        """Like calling it, but each distinct prompt goes through the text encoders once (a batch of
        uncaptioned images shares one prompt)."""
        distinct = sorted(set(texts))
        return self(distinct).pick(torch.tensor([distinct.index(t) for t in texts]))


@torch.no_grad()
def general_neuron_masks(unet, states: torch.Tensor, top_fraction: float, min_share: float,
                         share=None) -> dict[str, torch.Tensor]:
    """CNS step (2) over a calibration set: states (prompts, tokens, d) -> layer -> bool mask (rows,).
    `share` (model/share.py BatchShare): a data-parallel rank scores its slice of the prompts and the ranks' hit
    counts are summed (exact: whole numbers), so every rank gets the masks one process would."""
    layers = kv_layers(unet)
    abs_w = {name: layer.weight.detach().float().abs() for name, layer in layers.items()}
    norms = states.float().norm(dim=1)  # (prompts, d): ‖c_:,j‖ over the tokens of each prompt
    mine = range(norms.shape[0]) if share is None else range(norms.shape[0])[share.rows(norms.shape[0])]
    per_prompt = [{name: row_activation(w, norms[p].to(w.device)).cpu() for name, w in abs_w.items()} for p in mine]
    if share is None:
        return general_neurons(per_prompt, top_fraction, min_share)
    counts = prompt_hits(per_prompt, top_fraction) if per_prompt else {n: torch.zeros(w.shape[0]) for n, w in abs_w.items()}
    summed = share.sum_(list(counts.values()), list(counts.values()))
    return general_from_hits(dict(zip(counts, summed)), norms.shape[0], min_share)
