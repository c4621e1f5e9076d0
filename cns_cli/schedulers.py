"""`cns generate --scheduler NAME`: the diffusers schedulers under the names people know from A1111 (the
name check has no torch, so a typo is refused before any model loads). A scheduler is built from the
pipeline's own scheduler config (its noise schedule) with the overrides that make it that sampler, as the
diffusers docs recommend (`Scheduler.from_config(pipe.scheduler.config)`). LMS needs scipy, which cns does
not install, so it is not offered."""

from __future__ import annotations

from .errors import UsageError

# name -> (diffusers class, config overrides); the model's own scheduler is the default (no --scheduler)
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "DDIM": ("DDIMScheduler", {}),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}),
    "PNDM": ("PNDMScheduler", {"skip_prk_steps": False}),  # with its Runge-Kutta warm-up steps
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                 "use_karras_sigmas": False}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                        "use_karras_sigmas": True}),
    "UniPC": ("UniPCMultistepScheduler", {}),
}


def canonical(name: str) -> str:
    """The known name `name` means (case and spacing ignored), or a one-line UsageError listing them."""
    key = " ".join(name.split()).lower()
    for known in SCHEDULERS:
        if known.lower() == key:
            return known
    raise UsageError(f"unknown --scheduler {name!r}; known: {', '.join(SCHEDULERS)} (default: the model's own)")


def use(pipe, name: str) -> None:
    """Replace the pipeline's scheduler with `name`, on the pipeline's own noise schedule."""
    import diffusers

    cls_name, overrides = SCHEDULERS[canonical(name)]
    pipe.scheduler = getattr(diffusers, cls_name).from_config(pipe.scheduler.config, **overrides)
