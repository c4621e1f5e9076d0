"""The two passes of `cns learn` over a concept's images: neuron scoring (CNS step 1) and training (step 6).

Randomness (image choice, timesteps, noise) comes from one CPU torch.Generator, so a seed gives the same
run on any device. Shapes: latents (N, 4, h, w); text states (B, 77, d).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import TrainingError
from ..method.delta import self_regularisation
from ..method.select import row_attribution
from .kv import TrainableKV
from .loading import kv_layers
from .text import encode
from .tokens import TrainableToken


@torch.no_grad()
def encode_latents(vae, pixels, device) -> torch.Tensor:
    """VAE posterior means scaled like diffusers' training scripts: (N, 3, H, W) in [-1, 1] -> (N, 4, h, w)."""
    x = torch.as_tensor(pixels, dtype=vae.dtype, device=device)
    out = [vae.encode(x[i : i + 8]).latent_dist.mean for i in range(0, x.shape[0], 8)]
    return (torch.cat(out) * vae.config.scaling_factor).float()  # noise and targets in float32


def encode_unique(tokenizer, text_encoder, texts: list[str]) -> torch.Tensor:
    """Text states for a batch, running the text encoder once per distinct prompt (a batch of uncaptioned
    images shares one prompt)."""
    unique = sorted(set(texts))
    states = encode(tokenizer, text_encoder, unique)
    return states[torch.tensor([unique.index(t) for t in texts], device=states.device)]


def sample_batch(latents: torch.Tensor, prompts: list[str], size: int, gen: torch.Generator):
    idx = torch.randint(0, latents.shape[0], (size,), generator=gen)
    return latents[idx.to(latents.device)], [prompts[i] for i in idx.tolist()]


def diffusion_loss(unet, scheduler, latents: torch.Tensor, states: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The usual noise-prediction MSE at uniformly drawn timesteps (epsilon or v targets)."""
    n = latents.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=gen).to(latents.device)
    noise = torch.randn(latents.shape, generator=gen).to(latents.device, latents.dtype)
    noisy = scheduler.add_noise(latents, noise, t)
    pred = unet(noisy, t, encoder_hidden_states=states).sample
    target = scheduler.get_velocity(latents, noise, t) if scheduler.config.prediction_type == "v_prediction" else noise
    return F.mse_loss(pred.float(), target.float())


def score_rows(pipe, scheduler, latents, prompts, steps: int, batch: int, gen: torch.Generator,
               amp=contextlib.nullcontext) -> dict[str, torch.Tensor]:
    """CNS step (1): Σ over `steps` batches of |W ⊙ ∂L/∂W| summed per row, for every K/V layer. Only the
    K/V weights get gradients (nothing else is accumulated)."""
    layers = kv_layers(pipe.unet)
    weights = [layer.weight for layer in layers.values()]
    scores = {name: torch.zeros(layer.out_features) for name, layer in layers.items()}
    for w in weights:
        w.requires_grad_(True)
    try:
        for _ in range(steps):
            lat, texts = sample_batch(latents, prompts, batch, gen)
            with torch.no_grad(), amp():
                states = encode(pipe.tokenizer, pipe.text_encoder, texts)
            with amp():
                loss = diffusion_loss(pipe.unet, scheduler, lat, states, gen)
            grads = torch.autograd.grad(loss, weights)
            for (name, w), g in zip(zip(layers, weights), grads):
                scores[name] += row_attribution(w.detach().float(), g.float()).cpu()
    finally:
        for w in weights:
            w.requires_grad_(False)
    return scores


def train(
    pipe, scheduler, latents, prompts, kv: dict[str, TrainableKV], token: TrainableToken, *,
    steps: int, batch: int, lr: float, lr_token: float, reg_lambda: float, gram: torch.Tensor,
    gen: torch.Generator, amp=contextlib.nullcontext, fp16: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """CNS step (6): AdamW on the coefficients A of the concept's rows and on its token vector only.
    weight_decay is 0: decay would shrink parameters that get no gradient. Forward passes run under
    `amp` (autocast); the trainables and the optimiser stay float32, with loss scaling for fp16.
    Returns the loss per step."""
    coefs = [w.coef for w in kv.values()]
    groups = [{"params": coefs, "lr": lr}]
    if lr_token > 0:
        groups.append({"params": [token.vector], "lr": lr_token})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    scaler = torch.amp.GradScaler(latents.device.type, enabled=fp16)
    gram = gram.to(latents.device)
    frozen_states = None
    if lr_token == 0:  # the text states never change: encode each prompt once, not once per step
        unique = sorted(set(prompts))
        with torch.no_grad(), amp():
            frozen_states = dict(zip(unique, encode(pipe.tokenizer, pipe.text_encoder, unique)))
    losses = []
    for step in range(steps):
        lat, texts = sample_batch(latents, prompts, batch, gen)
        with amp():
            if frozen_states is not None:
                states = torch.stack([frozen_states[t] for t in texts])
            else:
                states = encode_unique(pipe.tokenizer, pipe.text_encoder, texts)
            loss = diffusion_loss(pipe.unet, scheduler, lat, states, gen)
        if reg_lambda > 0:
            loss = loss + reg_lambda * self_regularisation(coefs, gram)  # float32, outside autocast
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss.detach()))
        if not torch.isfinite(loss):
            raise TrainingError(f"training diverged at step {step + 1} (loss {losses[-1]}); lower --lr")
        if on_step:
            on_step(step + 1, losses[-1])
    return losses
