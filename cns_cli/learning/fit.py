"""Step 2 of a learn: train the plan's rows and the new token with the one training loop (CNS steps 5-6).

ΔW = Sᵀ A Bᵀ per layer: only A (rows x rank) and the token vector train, protected by the self-regulariser
whose Gram matrix is built once from the calibration prompts and the earlier concepts' prompts.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..reporting import Reporter
from .plan import Session, calibration_states
from .results import Plan, Trained


def fit(s: Session, plan: Plan, cfg, reporter: Reporter, parent=None) -> Trained:
    """Train in `s.pipe` (its K/V layers and token embedding get trainable wrappers) and return the result."""
    from ..model import runtime, train
    from ..model.text import text_pairs

    b = torch.from_numpy(plan.q[:, plan.slice.start : plan.slice.start + plan.slice.rank]).to(s.device)
    gram = _protection_gram(s, parent, b)
    rows = {n: torch.from_numpy(r).long() for n, r in plan.rows.items()}
    encoders = [enc for _, enc in text_pairs(s.pipe)]
    groups, extra, kv, tokens = train.cns_trainables(
        s.pipe.unet, encoders, rows, b, s.token_ids, s.token_init,
        lr=cfg.lr, lr_token=cfg.lr_token, reg_lambda=cfg.reg_lambda, gram=gram)
    states = train.frozen_or_live_states(s.conditioner, s.prompts, cfg.lr_token == 0, s.amp)
    trainer = train.Trainer(s.pipe.unet, s.scheduler, s.latents, s.prompts, states, groups, batch=cfg.batch_size,
                            gen=s.gen, amp=s.amp, fp16=s.dtype == torch.float16, extra_loss=extra)
    reporter.start(cfg.steps)
    t0 = time.perf_counter()
    try:
        losses = trainer.run(cfg.steps, on_step=reporter.step)
    finally:
        reporter.stop()
    seconds = time.perf_counter() - t0
    tenth = max(1, len(losses) // 10)  # the loss of one step is noisy: compare means of equal spans
    stats = {
        "final_loss": float(np.mean(losses[-tenth:])), "first_loss": losses[0],
        "first_tenth_loss": float(np.mean(losses[:tenth])), "steps_run": len(losses),
        "seconds": round(time.perf_counter() - s.started, 3), "seconds_scoring": round(s.seconds.get("scoring", 0.0), 3),
        "seconds_training": round(seconds, 3), "seconds_per_step": round(seconds / len(losses), 4),
        "images": len(s.prompts), "device": s.device, "precision": runtime.precision_name(s.dtype),
    }
    return Trained(coef={n: w.coef.detach().float().cpu().numpy() for n, w in kv.items()},
                   embedding=[t.vectors.detach().float().cpu().numpy() for t in tokens], stats=stats)


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
