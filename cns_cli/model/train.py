"""The passes over a concept's images: neuron scoring (CNS step 1) and the one training loop (`Trainer`, step 6
for `cns learn`; the bench baselines and the benchmarks run the same loop on their own parameters).

Every family goes through the same loop: the text side is a callable texts -> text.Cond (the states every K/V
layer reads, plus SDXL's added conditioning), and the target is the noise or,
for v-prediction models (SD 2.x 768-v), the velocity `scheduler.get_velocity(latents, noise, t)`.
Randomness (image choice, timesteps, noise) comes from one CPU torch.Generator, so a seed gives the same
run on any device. Shapes: latents (N, C, h, w), C the VAE's latent channels (4 in SD 1.x/2.x/XL); text states (B, 77, d).
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
from .share import BatchShare
from .text import Cond, TextConditioner
from .tokens import attach_trainable_token  # noqa: F401 - learning/fit.py attaches tokens through here


@torch.no_grad()
def encode_latents(vae, pixels, device) -> torch.Tensor:
    """VAE posterior means scaled like diffusers' training scripts: (N, 3, H, W) in [-1, 1] -> (N, C, h, w)."""
    dtype = vae.dtype
    upcast = dtype == torch.float16 and vae.config.get("force_upcast", False)  # SDXL's VAE overflows in fp16
    if upcast:
        vae.to(torch.float32)
    try:
        x = torch.as_tensor(pixels, dtype=vae.dtype, device=device)
        out = [vae.encode(x[i : i + 8]).latent_dist.mean for i in range(0, x.shape[0], 8)]
    finally:
        if upcast:
            vae.to(dtype)
    return (torch.cat(out) * vae.config.scaling_factor).float()  # noise and targets in float32


def sample_batch(latents: torch.Tensor, prompts: list[str], size: int, gen: torch.Generator):
    idx = torch.randint(0, latents.shape[0], (size,), generator=gen)
    return latents[idx.to(latents.device)], [prompts[i] for i in idx.tolist()]


def diffusion_loss(unet, scheduler, latents: torch.Tensor, states: torch.Tensor, gen: torch.Generator,
                   added: dict | None = None, rows: slice | None = None) -> torch.Tensor:
    """The usual denoising MSE at uniformly drawn timesteps: against the noise (epsilon models) or the velocity
    (v_prediction). `added`: SDXL's added conditioning (text_embeds, time_ids), passed to the UNet as is.
    `rows`: a data-parallel rank's part (model/share.py): the timesteps and noise of the whole batch `latents` are
    drawn, as one process draws them, and the loss is taken over these rows only (`states`, `added`: theirs)."""
    n = latents.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=gen).to(latents.device)
    noise = torch.randn(latents.shape, generator=gen).to(latents.device, latents.dtype)
    if rows is not None:
        latents, noise, t = latents[rows], noise[rows], t[rows]
    noisy = scheduler.add_noise(latents, noise, t)
    extra = {} if added is None else {"added_cond_kwargs": added}
    pred = unet(noisy, t, encoder_hidden_states=states, **extra).sample
    kind = scheduler.config.prediction_type
    if kind not in ("epsilon", "v_prediction"):
        raise TrainingError(f"cannot train a model whose scheduler predicts {kind!r}; cns trains epsilon and v_prediction models")
    target = scheduler.get_velocity(latents, noise, t) if kind == "v_prediction" else noise
    return F.mse_loss(pred.float(), target.float())


def score_rows(pipe, scheduler, latents, prompts, steps: int, batch: int, gen: torch.Generator,
               conditioner: Callable[[list[str]], Cond], amp=contextlib.nullcontext,
               share: BatchShare | None = None) -> dict[str, torch.Tensor]:
    """CNS step (1): Σ over `steps` batches of |W ⊙ ∂L/∂W| summed per row, for every K/V layer. Only the
    K/V weights get gradients (nothing else is accumulated). `conditioner`: texts -> text.Cond, what the UNet is
    conditioned with (a text.TextConditioner of the session: SDXL's time ids need the training size).
    `share`: this rank's part of each batch; the ranks' gradients are summed before the attribution, which is
    not linear in them (one all-reduce of every K/V gradient per batch)."""
    layers = kv_layers(pipe.unet)
    weights = [layer.weight for layer in layers.values()]
    scores = {name: torch.zeros(layer.out_features) for name, layer in layers.items()}
    for w in weights:
        w.requires_grad_(True)
    try:
        for _ in range(steps):
            lat, texts = sample_batch(latents, prompts, batch, gen)
            rows = share.rows(batch) if share else None
            with torch.no_grad(), amp():
                cond = conditioner(texts[rows] if share else texts)
            with amp():
                loss = diffusion_loss(pipe.unet, scheduler, lat, cond.states, gen, cond.added, rows)
            if share:
                grads = share.sum_(list(torch.autograd.grad(loss * share.weight(batch), weights)), weights)
            else:
                grads = torch.autograd.grad(loss, weights)
            for (name, w), g in zip(zip(layers, weights), grads):
                scores[name] += row_attribution(w.detach().float(), g.float()).cpu()
    finally:
        for w in weights:
            w.requires_grad_(False)
    return scores


def frozen_or_live_states(conditioner: TextConditioner, prompts: list[str], frozen: bool, amp=contextlib.nullcontext):
    """texts -> text.Cond for those texts. With a frozen text side (no token trains) each prompt is encoded once,
    up front; otherwise every call runs the text encoders (once per distinct prompt), inside the caller's graph."""
    if not frozen:
        return conditioner.unique
    unique = sorted(set(prompts))
    with torch.no_grad(), amp():
        cache = conditioner(unique)
    return lambda texts: cache.pick(torch.tensor([unique.index(t) for t in texts]))


class Trainer:
    """The one optimisation loop of cns: `cns learn`, every `cns bench` method and the benchmarks run it.

    Each step draws a batch of latents and their prompts, takes the denoising MSE (`diffusion_loss`, with the
    text.Cond `text_states` gives for the prompts) under `amp` (autocast), adds `extra_loss()` (float32, outside
    autocast: the self-regularisation), and
    takes one AdamW step on `groups` (torch parameter groups {"params", "lr"}), then calls `after_step()` (cns: the
    projection onto the drift budget). weight_decay is 0: decay
    would shrink parameters that get no gradient. The trainables and the optimiser stay float32, with loss
    scaling for fp16. Randomness (batch, timesteps, noise) comes from the CPU generator `gen` only, so a seed
    gives the same run on any device. A non-finite loss stops the run with a TrainingError. `share`: this rank's
    part of every batch in a data-parallel learn (model/share.py): the gradients are summed over the ranks
    before the step, so every rank takes the same step; None in one process.
    """

    def __init__(self, unet, scheduler, latents: torch.Tensor, prompts: list[str],
                 text_states: Callable[[list[str]], Cond], groups: list[dict], *, batch: int,
                 gen: torch.Generator, amp=contextlib.nullcontext, fp16: bool = False,
                 extra_loss: Callable[[], torch.Tensor] | None = None, after_step: Callable[[], None] | None = None,
                 share: BatchShare | None = None):
        self.unet, self.scheduler, self.latents, self.prompts = unet, scheduler, latents, prompts
        self.after_step, self.share = after_step, share
        self.text_states, self.batch, self.gen, self.amp, self.extra_loss = text_states, batch, gen, amp, extra_loss
        groups = [g for g in groups if g["params"]]
        self.parameters = [p for g in groups for p in g["params"]]
        self.opt = torch.optim.AdamW(groups, weight_decay=0.0)
        self.scaler = torch.amp.GradScaler(latents.device.type, enabled=fp16)
        self.steps_done = 0

    def step(self) -> float:
        share = self.share
        lat, texts = sample_batch(self.latents, self.prompts, self.batch, self.gen)
        rows = share.rows(self.batch) if share else None
        with self.amp():
            cond = self.text_states(texts[rows] if share else texts)
            loss = diffusion_loss(self.unet, self.scheduler, lat, cond.states, self.gen, cond.added, rows)
        if share:
            loss = loss * share.weight(self.batch)  # the ranks' losses add up to the global batch's mean
        if self.extra_loss is not None and (share is None or share.leads()):
            loss = loss + self.extra_loss()  # once in the sum over ranks
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        value = share.sum_grads_(self.parameters, loss) if share else None
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.after_step is not None:
            self.after_step()
        self.steps_done += 1
        value = float(loss.detach()) if value is None else value
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


def cns_trainables(unet, rows: dict[str, torch.Tensor], basis_slice: torch.Tensor, tokens: list, *, lr: float,
                   lr_token: float, reg_lambda: float, gram: torch.Tensor | None):
    """What CNS step (6) trains, as Trainer inputs: the coefficients A of the concept's rows (lr) and, when
    lr_token > 0, its token vectors (`tokens`: the TrainableTokens already attached, one per text encoder, each
    holding the k vectors of its k tokens, trained jointly: SDXL has two encoders), with the penalty λ Σ tr(A G Aᵀ) as the extra loss when reg_lambda > 0 (the drift
    budget is applied by the caller after each step). Returns (groups, extra_loss or None, the TrainableKV
    wrappers by layer)."""
    kv = attach_trainable(unet, rows, basis_slice)
    coefs = [w.coef for w in kv.values()]
    groups = [{"params": coefs, "lr": lr}]
    if lr_token > 0:
        groups.append({"params": [t.vectors for t in tokens], "lr": lr_token})
    extra = None
    if reg_lambda > 0:
        gram = gram.to(basis_slice.device)
        extra = lambda: reg_lambda * self_regularisation(coefs, gram)  # noqa: E731
    return groups, extra, kv
