"""Step 2 of a learn: train the plan's rows and the new token with the one training loop (CNS steps 5-6).

ΔW = Sᵀ A Bᵀ per layer: only A (rows x rank) and the token vector train. What must not change is protected by
the drift budget (learning/protection.py: each step's A is projected so the protected prompts' K/V outputs move
by at most √max_drift, relative) and, when reg_lambda > 0, by the older penalty λ Σ tr(A G Aᵀ).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..reporting import Reporter
from .plan import Session
from .protection import calibration_states
from .results import Plan, Trained


def fit(s: Session, plan: Plan, cfg, reporter: Reporter, parent=None) -> Trained:
    """Train in `s.pipe` (its K/V layers and token embedding get trainable wrappers) and return the result."""
    from ..model import runtime, train
    from ..model.text import text_pairs

    from .protection import after_training, budget_for, protected_moments, slice_basis

    encoders = [enc for _, enc in text_pairs(s.pipe)]
    tokens = [train.attach_trainable_token(e, i, v) for e, i, v in zip(encoders, s.token_ids, s.token_init, strict=True)]
    states = train.frozen_or_live_states(s.conditioner, s.prompts, cfg.lr_token == 0, s.amp)
    warm = _warmup_steps(plan, cfg)
    reporter.start(cfg.steps)
    t0 = time.perf_counter()
    try:
        losses = []
        if warm:  # a concept slice: the token alone first, so the slice is chosen from the concept's own states
            token_only = [{"params": [t.vectors for t in tokens], "lr": cfg.lr_token}]
            losses = train.Trainer(s.pipe.unet, s.scheduler, s.latents, s.prompts, states, token_only,
                                   batch=cfg.batch_size, gen=s.gen, amp=s.amp,
                                   fp16=s.dtype == torch.float16, share=s.share).run(warm, on_step=reporter.step)
        b = slice_basis(s, parent, plan).to(s.device)  # (d, r)
        gram = _protection_gram(s, parent, b) if cfg.reg_lambda > 0 else None
        rows = {n: torch.from_numpy(r).long() for n, r in plan.rows.items()}
        groups, extra, kv = train.cns_trainables(s.pipe.unet, rows, b, tokens, lr=cfg.lr, lr_token=cfg.lr_token,
                                                 reg_lambda=cfg.reg_lambda, gram=gram)
        coefs = [w.coef for w in kv.values()]
        # built even with the budget off: the attained drift is recorded either way
        eps = cfg.max_drift if cfg.max_drift is not None else float("inf")
        budget = budget_for(s, parent, plan.class_word, {n: w.base.weight for n, w in kv.items()}, b, eps)
        trainer = train.Trainer(s.pipe.unet, s.scheduler, s.latents, s.prompts, states, groups, batch=cfg.batch_size,
                                gen=s.gen, amp=s.amp, fp16=s.dtype == torch.float16, extra_loss=extra,
                                after_step=None if cfg.max_drift is None else (lambda: budget.project_(coefs)),
                                share=s.share)
        losses += trainer.run(cfg.steps - warm, on_step=lambda n, loss: reporter.step(warm + n, loss))
    finally:
        reporter.stop()
    seconds = time.perf_counter() - t0
    tenth = max(1, len(losses) // 10)  # the loss of one step is noisy: compare means of equal spans
    stats = {
        "final_loss": float(np.mean(losses[-tenth:])), "first_loss": losses[0],
        "first_tenth_loss": float(np.mean(losses[:tenth])), "steps_run": len(losses),
        "seconds": round(time.perf_counter() - s.started, 3), "seconds_scoring": round(s.seconds.get("scoring", 0.0), 3),
        "seconds_training": round(seconds, 3), "seconds_per_step": round(seconds / len(losses), 4),
        "images": len(s.prompts),
        "device": s.device.split(":")[0],  # the kind ("cuda"), as one process records it, not a rank's "cuda:3"
        "precision": runtime.precision_name(s.dtype),
        **after_training(budget, coefs, s, b, protected_moments(s, parent, plan.class_word)["calibration"]),
    }
    return Trained(coef={n: w.coef.detach().float().cpu().numpy() for n, w in kv.items()},
                   embedding=[t.vectors.detach().float().cpu().numpy() for t in tokens], stats=stats,
                   basis=b.float().cpu().numpy() if plan.slice.own else None)


def _warmup_steps(plan: Plan, cfg) -> int:
    """Token-only steps before a concept slice is chosen (none for a shared slice, or when the token is frozen)."""
    from ..method.basis import SLICE_WARMUP

    if not plan.slice.own or cfg.lr_token == 0:
        return 0
    return min(cfg.steps - 1, round(SLICE_WARMUP * cfg.steps))


def _protection_gram(s: Session, parent, b: torch.Tensor) -> torch.Tensor:
    """Gram matrix of the self-regulariser: calibration states + earlier concepts' prompt states, each averaged
    over its own tokens (format/SPEC.md, method step 6)."""
    from ..method.delta import protection_gram
    from ..prompts import training_prompt

    with torch.no_grad():
        gram = protection_gram(calibration_states(s).flatten(0, 1), b)
        if s.earlier:
            prompts = [training_prompt(n, parent.concepts[n].class_word, None) for n in s.earlier]
            with s.amp():
                prev = s.conditioner.states(prompts).float()
            gram = gram + protection_gram(prev.flatten(0, 1), b)
    return gram
