"""The Python API for diffusers users (re-exported lazily by `cns_cli/__init__.py`, so `import cns_cli` loads no
torch until a function is called):

    pipe = cns_cli.load_pipeline(".cnsbank")                 # the base + every concept: what `cns generate` runs
    image = pipe(cns_cli.expand_prompt(".cnsbank", "<dog> on a beach"),
                 generator=torch.Generator().manual_seed(7)).images[0]   # = `cns generate ... --seed 7`

    pipe = StableDiffusionPipeline.from_pretrained(BASE)     # a pipeline you already have (float32)
    cns_cli.apply_bank(pipe, ".cnsbank", concepts=["dog"], scales={"dog": 0.7})
    ...
    cns_cli.remove_bank(pipe)                                # the pipeline is bit for bit what it was

    cns_cli.generate_regions(pipe, ".cnsbank", "<dog> and a <hat>", {"dog": (0, 0, .5, 1), "hat": (.5, 0, 1, 1)})

Errors are the CLI's exceptions (cns_cli.errors.CnsError and subclasses) with the same one-line messages.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

from .bank import Bank, Revision
from .errors import CnsError, ModelError, ModelMismatchError, UsageError

PathLike = str | os.PathLike


def _bank(bank: PathLike | Bank) -> Bank:
    if not isinstance(bank, (Bank, str, os.PathLike)):
        raise UsageError(f"bank must be a path or a cns_cli.bank.Bank, got {type(bank).__name__}")
    return bank if isinstance(bank, Bank) else Bank.open(bank)


def _text(value, what: str) -> str:
    """A prompt argument: a str, else UsageError (not a TypeError from deep inside the prompt parser)."""
    if not isinstance(value, str):
        raise UsageError(f"{what} must be a str, got {type(value).__name__}")
    return value


def _revision(bank: Bank, revision: int | None) -> Revision:
    """HEAD, or revision N of the bank (any revision on disk: the bank is history)."""
    from .bank.history import parse_revision_number, read_existing_revision

    if revision is None:
        return bank.head()
    return read_existing_revision(bank, parse_revision_number(revision, "revision"), "cannot be loaded")


def load_pipeline(bank: PathLike | Bank = ".cnsbank", revision: int | None = None, device: str = "auto", dtype=None):
    """The bank's base model as a diffusers pipeline with every concept of `revision` (default HEAD) applied
    and their tokens added: what `cns generate` runs (the same weights, so the same images for the same text,
    seed, steps and guidance). `device`: auto / cpu / cuda / mps; `dtype`: a torch dtype (default: float32 on
    CPU and MPS, bf16 or fp16 on a GPU). `remove_bank(pipe)` takes the concepts out again."""
    import torch

    from .model import loading, runtime
    from .model.personalised import load_personalised

    b = _bank(bank)
    rev = _revision(b, revision)
    device = runtime.resolve_device(device)
    dtype = dtype or runtime.resolve_precision("auto", device)
    pipe = load_personalised(b, rev, [], "cpu", torch.float32)  # the fingerprint-checked base, in float32
    _apply(pipe, b, rev, None, None)  # deltas added in float32, as generate does, but removable
    return loading.place(pipe, device, dtype)


def apply_bank(pipe, bank: PathLike | Bank = ".cnsbank", revision: int | None = None,
               concepts: list[str] | None = None, scales: Mapping[str, float] | None = None):
    """Apply a bank's concepts to a diffusers SD pipeline you loaded: checks that it is the bank's base (its
    K/V fingerprint), adds the concepts' tokens and their deltas, each scaled by `scales[name]` (0..2, default
    1) if given. `concepts`: which ones (default: all of the revision). The pipeline must be in float32 when
    the bank is applied (the fingerprint is of the float32 weights); cast it afterwards if you like. Returns the
    names applied. `remove_bank(pipe)` restores the pipeline exactly."""
    import torch

    from .model import loading

    _check_pipeline(pipe)
    b = _bank(bank)
    rev = _revision(b, revision)
    names = _concepts(rev, concepts)
    _check_scales(rev, scales)
    if pipe.unet.dtype != torch.float32:
        raise ModelError(f"apply_bank needs the pipeline in float32 (it is {pipe.unet.dtype}): the bank's fingerprint is "
                         "of the float32 weights; load it with torch_dtype=torch.float32, apply, then pipe.to(dtype)")
    if loading.fingerprint(pipe.unet) != rev.base.fingerprint.digest:
        raise ModelMismatchError(_why_not_the_base(pipe, rev))
    _refuse_tokens_present(pipe, rev, names)
    return _apply(pipe, b, rev, names, scales).names


def _refuse_tokens_present(pipe, rev: Revision, names: list[str] | None) -> None:
    """The base's weights, but a concept's token already in a tokenizer (its exported embedding loaded with
    load_textual_inversion): say so, instead of the tokenizer clash message meant for a base's own vocabulary."""
    from .model.text import text_pairs

    tokens = [rev.concepts[n].token for n in (rev.concepts if names is None else names)]
    for tokenizer, _ in text_pairs(pipe):
        present = [t for t in tokens if t in tokenizer.get_vocab()]
        if present:
            raise ModelError(f"this pipeline has {present[0]} in its tokenizer already (an embedding loaded with "
                             f"load_textual_inversion?); unload it first (pipe.unload_textual_inversion("
                             f"{present[0]!r})), then apply the bank")


def _why_not_the_base(pipe, rev: Revision) -> str:
    """Why `pipe`'s K/V weights do not fingerprint to the bank's base, most specific first: the bank (or an export
    of it) is in the pipeline already, it is another family or architecture, a LoRA was fused into it, or it is
    other weights. The base on disk is not in question: the pipeline in memory is."""
    from .model.bank_apply import applied_to
    from .model.family import NAMES, family_of_pipeline
    from .model.loading import kv_layers

    base = rev.base
    base_family = base.family or "sd1"  # banks before format 1.2 were all SD 1.x
    load = f"load the bank's base ({base.location}) with from_pretrained in float32, then apply the bank"
    if applied_to(pipe):
        applied = ", ".join(n for handle in applied_to(pipe) for n in handle.names) or "none"
        return (f"this pipeline has a bank applied already (concepts: {applied}); call cns_cli.remove_bank(pipe) "
                "before applying one again")
    vocab = pipe.tokenizer.get_vocab()
    carried = [c.token for c in rev.concepts.values() if c.token in vocab]
    if carried:
        return (f"this pipeline carries the bank's {carried[0]} already (a `cns export --format pipeline` folder, or "
                f"its embedding loaded with load_textual_inversion): use it as it is, or {load}")
    family = family_of_pipeline(pipe)
    if family != base_family:
        return (f"this pipeline is an {NAMES[family]} model and the bank was built on an {NAMES[base_family]} base "
                f"({base.location}); {load}")
    shapes = {name: layer.out_features for name, layer in kv_layers(pipe.unet).items()}
    if shapes != base.kv_layers:
        return (f"this pipeline's UNet has other cross-attention layers than the bank's base ({base.location}), "
                f"an {NAMES[family]} model of another size; {load}")
    if _lora_fused(pipe):
        return (f"a LoRA is fused into this pipeline (fuse_lora), so its weights are not the bank's base; {load}, "
                "and load and fuse LoRAs after that")
    return (f"this pipeline's weights are not those of the bank's base ({base.location}): another checkpoint, a "
            f"LoRA fused and unfused again, or weights edited in place; {load}")


def _lora_fused(pipe) -> bool:
    """A LoRA fused into the UNet and still loaded (diffusers counts them) or merged by PEFT directly."""
    if getattr(pipe, "num_fused_loras", 0):
        return True
    return any(getattr(m, "merged", False) is True for m in pipe.unet.modules())


def _check_pipeline(pipe, function: str = "apply_bank") -> None:
    """A diffusers Stable Diffusion pipeline (a UNet, a tokenizer and a text encoder), else UsageError."""
    if not all(getattr(pipe, part, None) is not None for part in ("unet", "tokenizer", "text_encoder")):
        raise UsageError(f"{function} needs a diffusers Stable Diffusion pipeline (StableDiffusionPipeline or "
                         f"StableDiffusionXLPipeline), got {type(pipe).__name__}")


def remove_bank(pipe) -> None:
    """Take out every concept `apply_bank` / `load_pipeline` put into `pipe`, latest first: its K/V weights, its
    tokenizer and its token embeddings are bit for bit what they were before. Like PEFT's unmerge, it takes out
    exactly what it added and nothing else: a LoRA loaded with diffusers' load_lora_weights since stays (unfused:
    its layers are seen through; fused: the bank's delta is subtracted from the weights that hold the LoRA, which
    is exact within float32 rounding). Tokens added to the tokenizer after the bank's are refused (ModelError:
    unload them first), as is a pipeline whose layers were replaced; nothing changes then."""
    from .model.bank_apply import applied_to

    _check_pipeline(pipe, "remove_bank")
    stack = applied_to(pipe)
    if not stack:
        raise UsageError("this pipeline has no bank applied (cns_cli.apply_bank or cns_cli.load_pipeline adds one)")
    while stack:
        stack[-1].remove()


def expand_prompt(bank: PathLike | Bank, prompt: str, revision: int | None = None, expand: bool = True) -> str:
    """The exact text `cns generate` hands the pipeline for `prompt` (each `<name>` followed by its class word
    unless `expand` is False; a multi-vector `<name>` is read as its k tokens by the pipeline's encode_prompt, so
    pass this text as it is); unknown concepts raise ConceptError, as in the CLI.

    A strength, `<dog:0.7>`, is not text: `cns generate` sends `<dog> dog` to the encoder and draws that image
    with dog's delta scaled by 0.7 (W0 + 0.7·ΔW). So the text returned here has `<dog>`; to draw at that
    strength with your own pipeline, apply the bank with `apply_bank(pipe, bank, scales={"dog": 0.7})`."""
    from .prompts import expand_prompt as expand_text
    from .prompts import split_strengths

    rev = _revision(_bank(bank), revision)
    text, _ = split_strengths(_text(prompt, "prompt"))  # "<dog:0.7>" -> "<dog>", exactly as generate reads it
    return expand_text(text, {n: c.class_word for n, c in rev.concepts.items()}, expand)


def generate_regions(pipe, bank: PathLike | Bank, prompt: str, regions: Mapping[str, Sequence[float]] | None = None, *,
                     layout: str | None = None, region_prompts: Mapping[str, str] | None = None, strength: float = 1.0,
                     revision: int | None = None, expand: bool = True, **call_kwargs):
    """Region control on a pipeline with the bank applied (`load_pipeline` / `apply_bank`): each concept of
    `prompt` is drawn in its own box, exactly as `cns generate --region` draws it.

    `regions`: {name: (x0, y0, x1, y1)} in fractions of the width and height, origin top left, one box per concept
    of the prompt; or `layout="auto"` (one equal column per concept, in order of mention). `region_prompts`:
    {name: text} a box reads instead of its default text; `strength` in [0, 1]. `call_kwargs` go to the pipeline
    call (generator, num_inference_steps, guidance_scale, width, height, negative_prompt, ...). Returns what the
    pipeline returns (`.images`)."""
    from .model.bank_apply import applied_to
    from .model.regional import generate_plans
    from .regions import Box, RegionRequest, plan_regions

    if layout not in (None, "auto"):
        raise UsageError(f"layout {layout!r} is not known; use layout='auto' or give regions")
    rev = _revision(_bank(bank), revision)
    _refuse_strengths([_text(prompt, "prompt"), *(_text(t, "a region prompt") for t in (region_prompts or {}).values())])
    request = RegionRequest(boxes={n: Box(*map(float, b)) for n, b in (regions or {}).items()},
                            auto=layout == "auto", texts=dict(region_prompts or {}), strength=float(strength))
    plan = plan_regions(prompt, request, {n: c.class_word for n, c in rev.concepts.items()}, expand)
    applied = {n for handle in applied_to(pipe) if handle.active for n in handle.names}
    missing = [r.concept for r in plan.regions if r.concept not in applied]
    if missing:
        raise UsageError(f"<{missing[0]}> is not applied to this pipeline; load it with cns_cli.load_pipeline or "
                         "cns_cli.apply_bank first")
    return generate_plans(pipe, [plan], **call_kwargs)


def _refuse_strengths(texts: list[str]) -> None:
    """`<dog:0.7>` scales dog's delta for one `cns generate` call; a pipeline you hold has its concepts at the
    scales `apply_bank` gave them, so here a strength is refused, pointing there, instead of reaching the text
    encoder as words."""
    from .prompts import split_strengths

    for text in texts:
        strengths = split_strengths(text)[1]
        if strengths:
            name, w = next(iter(strengths.items()))
            raise UsageError(f"<{name}:{w:g}> sets a strength, which generate_regions cannot change on your pipeline; "
                             f"write <{name}> and apply the bank with scales={{{name!r}: {w:g}}} instead")


def _apply(pipe, bank: Bank, rev: Revision, names, scales):
    from .model.bank_apply import apply_concepts

    return apply_concepts(pipe, bank, rev, names, scales=dict(scales) if scales else None)


def _concepts(rev: Revision, concepts: list[str] | None) -> list[str] | None:
    if concepts is None:
        return None
    unknown = [n for n in concepts if n not in rev.concepts]
    if unknown:
        known = ", ".join(sorted(rev.concepts)) or "none"
        raise CnsError(f"no concept {unknown[0]!r} in revision {rev.number} (known: {known})")
    return list(concepts)


def _check_scales(rev: Revision, scales: Mapping[str, float] | None) -> None:
    for name, s in (scales or {}).items():
        if name not in rev.concepts:
            raise UsageError(f"a scale for {name!r}, which is not a concept of revision {rev.number}")
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or not 0 <= s <= 2:
            raise UsageError(f"the scale of {name!r} must be a number in [0, 2], got {s!r}")
