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


# PNDM's Runge-Kutta warm-up reads the last 4 timesteps of the schedule (diffusers' PNDMScheduler.pndm_order, fixed
# at 4), so fewer steps fail inside diffusers (a numpy broadcast error); PLMS (skip_prk_steps) has no warm-up.
PNDM_MIN_STEPS = 4


def min_steps(class_name: str, config) -> int | None:
    """The fewest sampling steps a scheduler (diffusers class name, config mapping) takes; None: 1 is enough."""
    if class_name == "PNDMScheduler" and not config.get("skip_prk_steps", False):
        return PNDM_MIN_STEPS
    return None


def check_min_steps(name: str, steps: int) -> None:
    """--scheduler `name` (canonical) with --steps `steps`: a one-line UsageError below its minimum."""
    least = min_steps(*SCHEDULERS[name])
    if least is not None and steps < least:
        raise UsageError(f"--scheduler {name} needs --steps {least} or more (its Runge-Kutta warm-up alone takes "
                         f"{least}), got --steps {steps}; raise --steps or use --scheduler PLMS, the same sampler "
                         "without the warm-up")


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
