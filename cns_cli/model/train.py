"""The passes over a concept's images: neuron scoring (CNS step 1) and the one training loop (`Trainer`, step 6
for `cns learn`; the bench baselines and the benchmarks run the same loop on their own parameters).

Randomness (image choice, timesteps, noise) comes from one CPU torch.Generator, so a seed gives the same
run on any device. Shapes: latents (N, 4, h, w); text states (B, 77, d).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import TrainingError
from ..method.delta import self_regularisation
from ..method.select import row_attribution
from .kv import attach_trainable
from .loading import kv_layers
from .text import encode
from .tokens import attach_trainable_token


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


def frozen_or_live_states(tokenizer, text_encoder, prompts: list[str], frozen: bool, amp=contextlib.nullcontext):
    """texts -> text states (B, 77, d). With a frozen text side (no token trains) each prompt is encoded once,
    up front; otherwise every call runs the text encoder (once per distinct prompt), inside the caller's graph."""
    if not frozen:
        return lambda texts: encode_unique(tokenizer, text_encoder, texts)
    unique = sorted(set(prompts))
    with torch.no_grad(), amp():
        cache = dict(zip(unique, encode(tokenizer, text_encoder, unique)))
    return lambda texts: torch.stack([cache[t] for t in texts])


class Trainer:
    """The one optimisation loop of cns: `cns learn`, every `cns bench` method and the benchmarks run it.

    Each step draws a batch of latents and their prompts, takes the noise-prediction MSE (`diffusion_loss`)
    under `amp` (autocast), adds `extra_loss()` (float32, outside autocast: the self-regularisation), and
    takes one AdamW step on `groups` (torch parameter groups {"params", "lr"}). weight_decay is 0: decay
    would shrink parameters that get no gradient. The trainables and the optimiser stay float32, with loss
    scaling for fp16. Randomness (batch, timesteps, noise) comes from the CPU generator `gen` only, so a seed
    gives the same run on any device. A non-finite loss stops the run with a TrainingError.
    """

    def __init__(self, unet, scheduler, latents: torch.Tensor, prompts: list[str],
                 text_states: Callable[[list[str]], torch.Tensor], groups: list[dict], *, batch: int,
                 gen: torch.Generator, amp=contextlib.nullcontext, fp16: bool = False,
                 extra_loss: Callable[[], torch.Tensor] | None = None):
        self.unet, self.scheduler, self.latents, self.prompts = unet, scheduler, latents, prompts
        self.text_states, self.batch, self.gen, self.amp, self.extra_loss = text_states, batch, gen, amp, extra_loss
        groups = [g for g in groups if g["params"]]
        self.parameters = [p for g in groups for p in g["params"]]
        self.opt = torch.optim.AdamW(groups, weight_decay=0.0)
        self.scaler = torch.amp.GradScaler(latents.device.type, enabled=fp16)
        self.steps_done = 0

    def step(self) -> float:
        lat, texts = sample_batch(self.latents, self.prompts, self.batch, self.gen)
        with self.amp():
            loss = diffusion_loss(self.unet, self.scheduler, lat, self.text_states(texts), self.gen)
        if self.extra_loss is not None:
            loss = loss + self.extra_loss()
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.steps_done += 1
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(f"training diverged at step {self.steps_done} (loss {value}); lower --lr")
        return value

    def run(self, steps: int, on_step: Callable[[int, float], None] | None = None) -> list[float]:
        """`steps` steps; the loss of each."""
        losses = []
        for _ in range(steps):
            losses.append(self.step())
            if on_step:
                on_step(self.steps_done, losses[-1])
        return losses


def cns_trainables(unet, text_encoder, rows: dict[str, torch.Tensor], basis_slice: torch.Tensor, token_id: int,
                   token_init: torch.Tensor, *, lr: float, lr_token: float, reg_lambda: float, gram: torch.Tensor):
    """What CNS step (6) trains, as Trainer inputs: the coefficients A of the concept's rows (lr) and, when
    lr_token > 0, its token vector (lr_token), with the self-regularisation λ Σ tr(A G Aᵀ) as the extra loss.
    Returns (groups, extra_loss or None, the TrainableKV wrappers by layer, the TrainableToken)."""
    kv = attach_trainable(unet, rows, basis_slice)
    token = attach_trainable_token(text_encoder, token_id, token_init)
    coefs = [w.coef for w in kv.values()]
    groups = [{"params": coefs, "lr": lr}]
    if lr_token > 0:
        groups.append({"params": [token.vector], "lr": lr_token})
    extra = None
    if reg_lambda > 0:
        gram = gram.to(basis_slice.device)
        extra = lambda: reg_lambda * self_regularisation(coefs, gram)  # noqa: E731
    return groups, extra, kv, token
