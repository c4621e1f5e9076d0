"""The in-memory baselines of `cns bench` train with the one training loop (model.train.Trainer) that
`cns learn` runs: the same loss, optimiser, seeding and divergence check, on the method's parameters and the
concept's new token vectors. cns itself trains through `cns learn`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..model.text import TextConditioner
from ..model.train import Trainer, encode_latents


@dataclass(frozen=True)
class ConceptData:
    """One concept of the benchmark: its name (token <name>), class word and folder of captioned photos."""

    name: str
    cls: str
    photos: Path


def prepare(pipe, concept: ConceptData) -> tuple[torch.Tensor, list[str]]:
    """(latents (N, C, h, w), training prompts) exactly as `cns learn` builds them."""
    from ..images import load_images
    from ..prompts import training_prompt

    resolution = pipe.unet.config.sample_size * pipe.vae_scale_factor
    images = load_images(concept.photos, resolution, warn=False)
    prompts = [training_prompt(concept.name, concept.cls, c) for c in images.captions]
    return encode_latents(pipe.vae, images.pixels, pipe.unet.device), prompts


def train_concept(unet, pipe, latents: torch.Tensor, prompts: list[str], params: list[torch.Tensor], token_vectors,
                  *, steps: int, lr: float, lr_token: float, seed: int) -> list[float]:
    """`steps` steps of batch 1 of the one training loop (model.train.Trainer) on `params` (lr) and
    `token_vectors` ((k, e), lr_token) with `unet` (which may be a copy of pipe.unet carrying an adapter); pipe gives the
    tokenizer, text encoder and noise schedule. Returns the loss per step."""
    from diffusers import DDPMScheduler

    states = TextConditioner(pipe).unique  # the token trains: the text encoder runs in every step, as in `cns learn`
    groups = [{"params": list(params), "lr": lr}, {"params": [token_vectors], "lr": lr_token}]
    trainer = Trainer(unet, DDPMScheduler.from_config(pipe.scheduler.config), latents, prompts, states, groups,
                      batch=1, gen=torch.Generator().manual_seed(seed))
    return trainer.run(steps)
