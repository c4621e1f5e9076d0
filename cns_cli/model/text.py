"""Text states (the inputs of every to_k/to_v) for prompts, and the general-neuron scan over them."""

from __future__ import annotations

import torch

from ..method.select import general_neurons, row_activation
from .loading import kv_layers


def encode(tokenizer, text_encoder, prompts: list[str], batch: int = 32) -> torch.Tensor:
    """Text states as the UNet sees them: (len(prompts), max_length, d), padded to the tokenizer's length
    exactly like StableDiffusionPipeline.encode_prompt does (so padding states are included)."""
    device = next(text_encoder.parameters()).device
    out = []
    for i in range(0, len(prompts), batch):
        ids = tokenizer(prompts[i : i + batch], padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids.to(device)
        out.append(text_encoder(ids)[0])
    return torch.cat(out)


@torch.no_grad()
def general_neuron_masks(unet, states: torch.Tensor, top_fraction: float, min_share: float) -> dict[str, torch.Tensor]:
    """CNS step (2) over a calibration set: states (prompts, tokens, d) -> layer -> bool mask (rows,)."""
    layers = kv_layers(unet)
    abs_w = {name: layer.weight.detach().float().abs() for name, layer in layers.items()}
    norms = states.float().norm(dim=1)  # (prompts, d): ‖c_:,j‖ over the tokens of each prompt
    per_prompt = [{name: row_activation(w, norms[p].to(w.device)).cpu() for name, w in abs_w.items()}
                  for p in range(norms.shape[0])]
    return general_neurons(per_prompt, top_fraction, min_share)
