"""The training loop every in-memory baseline of `cns bench` shares: the noise-prediction MSE of
`model.train.diffusion_loss` on a concept's photos, AdamW (weight decay 0, so nothing without a gradient moves)
on the method's parameters and on the concept's new token vector. cns itself trains through `cns learn`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..model.train import diffusion_loss, encode_latents, encode_unique, sample_batch


@dataclass(frozen=True)
class ConceptData:
    """One concept of the benchmark: its name (token <name>), class word and folder of captioned photos."""

    name: str
    cls: str
    photos: Path


def prepare(pipe, concept: ConceptData) -> tuple[torch.Tensor, list[str]]:
    """(latents (N, 4, h, w), training prompts) exactly as `cns learn` builds them."""
    from ..images import load_images
    from ..prompts import training_prompt

    resolution = pipe.unet.config.sample_size * pipe.vae_scale_factor
    images = load_images(concept.photos, resolution, warn=False)
    prompts = [training_prompt(concept.name, concept.cls, c) for c in images.captions]
    return encode_latents(pipe.vae, images.pixels, pipe.unet.device), prompts


def train_concept(unet, pipe, latents: torch.Tensor, prompts: list[str], params: list[torch.Tensor], token_vector,
                  *, steps: int, lr: float, lr_token: float, seed: int) -> list[float]:
    """`steps` AdamW steps of batch 1 on `params` (lr) and `token_vector` (lr_token) with `unet` (which may be
    a copy of pipe.unet carrying an adapter); pipe gives the tokenizer, text encoder and noise schedule.
    Returns the loss per step."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    groups = [{"params": params, "lr": lr}] if params else []
    groups.append({"params": [token_vector], "lr": lr_token})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        lat, texts = sample_batch(latents, prompts, 1, gen)
        states = encode_unique(pipe.tokenizer, pipe.text_encoder, texts)
        loss = diffusion_loss(unet, scheduler, lat, states, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
