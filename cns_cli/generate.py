"""`cns generate`: images from the base model with every concept of HEAD applied (fusion-free).

The pipeline is a plain diffusers StableDiffusionPipeline with W = W0 + Σ_t ΔW_t and the concept tokens
added; it is called exactly as a user would call diffusers, with a CPU `torch.Generator().manual_seed(seed)`,
so the same text, seed, steps and guidance give the same pixels as diffusers itself (and the same PNG
bytes on every run).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .bank import Bank
from .errors import UsageError
from .regions import RegionPlan, RegionRequest


@dataclass(frozen=True)
class GenerateConfig:
    n: int = 1  # images per prompt; image i uses seed + i
    seed: int = 0
    steps: int = 30
    guidance: float = 7.5
    width: int | None = None  # default: the model's native size
    height: int | None = None
    expand: bool = True
    device: str = "auto"
    precision: str = "auto"  # fp32 on CPU/MPS (bit-identical to diffusers), bf16/fp16 on a GPU
    regions: RegionRequest | None = None  # region control (regions.py); None: the plain pipeline call

    def __post_init__(self) -> None:
        if self.n < 1:
            raise UsageError(f"-n must be at least 1, got {self.n}")
        if self.seed < 0:
            raise UsageError(f"--seed must be 0 or more, got {self.seed}")
        if self.steps < 1:
            raise UsageError(f"--steps must be at least 1, got {self.steps}")
        if not math.isfinite(self.guidance) or self.guidance < 0:
            raise UsageError(f"--guidance must be a finite number ≥ 0, got {self.guidance}")
        for flag, v in (("width", self.width), ("height", self.height)):
            if v is not None and (v < 8 or v % 8):
                raise UsageError(f"--{flag} must be a positive multiple of 8, got {v}")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "image"


def build_pipeline(bank: Bank, rev, device: str = "cpu", dtype=None):
    """The base pipeline with every concept of `rev` applied (in float32), then placed on `device` in
    `dtype` (default float32): what `cns generate` runs."""
    import torch

    from .model import loading
    from .model.bank_apply import apply_bank

    pipe = loading.load_pipeline(loading.spec_of(rev.base))
    loading.check_matches(rev.base, pipe)
    apply_bank(pipe, bank, rev)
    return loading.place(pipe, device, dtype or torch.float32)


def generate(bank_path: Path, prompts: list[str], out_dir: Path, config: GenerateConfig = GenerateConfig(),
             on_image: Callable[[dict], None] | None = None, on_phase: Callable[[str], None] | None = None) -> list[dict]:
    from .model.runtime import resolve_device, resolve_precision
    from .prompts import concepts_in, expand_prompt
    from .regions import plan_regions

    bank = Bank.open(bank_path)
    rev = bank.head()
    classes = {name: c.class_word for name, c in rev.concepts.items()}
    texts = [expand_prompt(p, classes, config.expand) for p in prompts]  # unknown concepts fail before loading
    plans = [plan_regions(p, config.regions, classes, config.expand) if config.regions else None for p in prompts]
    device = resolve_device(config.device)
    dtype = resolve_precision(config.precision, device)
    if on_phase:
        on_phase(f"loading the base model on {device} with {len(rev.concepts)} concept(s)")
    pipe = build_pipeline(bank, rev, device, dtype)
    if config.regions:
        _warn_small_boxes(pipe, plans, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for k, (prompt, text, plan) in enumerate(zip(prompts, texts, plans)):
        for i in range(config.n):
            seed = config.seed + i
            image = _sample(pipe, text, plan, config, seed)
            record = {"prompt": prompt, "text": text, "seed": seed, "steps": config.steps, "guidance": config.guidance,
                      "width": image.width, "height": image.height, "revision": rev.number,
                      "concepts": concepts_in(prompt), "bank": str(bank.root)}
            if plan:
                record["regions"] = plan.record()
            suffix = "-regions" if plan else ""
            path = out_dir / f"r{rev.number}-{k:03d}-{_slug(prompt)}{suffix}-s{seed}.png"
            image.save(path, pnginfo=_png_info(record, plan))
            record["path"] = str(path)
            results.append(record)
            if on_image:
                on_image(record)
    return results


def _sample(pipe, text: str, plan: RegionPlan | None, config: GenerateConfig, seed: int):
    """One image: the plain diffusers call, or the regional one (the context text, each box its own text)."""
    import torch

    kwargs = dict(num_inference_steps=config.steps, guidance_scale=config.guidance, width=config.width,
                  height=config.height, generator=torch.Generator().manual_seed(seed))
    if plan is None:
        return pipe(text, **kwargs).images[0]
    from .model.regional import generate_plans

    return generate_plans(pipe, [plan], **kwargs).images[0]


def _png_info(record: dict, plan: RegionPlan | None):
    """The PNG text chunks: cns's own keys, and an A1111 "parameters" chunk so other tools show how the image was
    made. Without regions exactly the chunks of earlier versions (same bytes)."""
    import json

    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key in ("prompt", "text", "seed", "steps", "guidance", "revision", "concepts"):
        info.add_text(f"cns:{key}", str(record[key]) if key != "concepts" else ",".join(record[key]))
    if plan:
        info.add_text("cns:regions", json.dumps(record["regions"], ensure_ascii=False))
    params = (f"{record['text']}\nSteps: {record['steps']}, CFG scale: {record['guidance']}, Seed: {record['seed']}, "
              f"Size: {record['width']}x{record['height']}, cns revision: {record['revision']}")
    info.add_text("parameters", params + (f", {plan.a1111()}" if plan else ""))
    return info


def _warn_small_boxes(pipe, plans: list[RegionPlan], config: GenerateConfig) -> None:
    """A box below one latent cell is allowed (its mask keeps one cell), but the user should know."""
    from . import output
    from .regions import boxes_below_one_cell

    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    f = pipe.vae_scale_factor
    lh, lw = (config.height or native) // f, (config.width or native) // f
    regions = dict.fromkeys((r.concept, r.box) for plan in plans for r in plan.regions)
    for concept, box in regions:
        if boxes_below_one_cell([box], lh, lw):
            output.warn(f"the box of <{concept}> ({box.text()}) is smaller than one latent cell "
                        f"({lw}x{lh} cells at this size); it will be drawn in the nearest cell")
