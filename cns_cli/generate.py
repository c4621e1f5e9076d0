"""`cns generate`: images from the base model with every concept of HEAD applied (fusion-free).

The pipeline is a plain diffusers StableDiffusionPipeline with W = W0 + Σ_t ΔW_t and the concept tokens
added; it is called exactly as a user would call diffusers, with a CPU `torch.Generator().manual_seed(seed)`,
so the same text, seed, steps and guidance give the same pixels as diffusers itself (and the same PNG
bytes on every run). The text (recorded as `text`) is what the pipeline is handed: `<name>` followed by its class
word; a concept with k > 1 vectors is expanded to its k tokens by the pipeline's own encode_prompt, once.

Bad numbers and paths are refused before the model loads (checks.py). Files are never overwritten: a name is
`r{revision}-{prompt index}-{slug}[-regions]-s{seed}-{settings hash}.png`, where the hash covers every setting
that changes pixels (text, seed, steps, guidance, size, device, precision, sampler, regions, the base's
fingerprint and the bank's objects), and a name already taken gets -2, -3, …; each PNG is written to a temp
file and linked into place exclusively, so no final name ever holds a half-written image.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import NamedTuple
from pathlib import Path

from .bank import Bank
from .checks import (ModelFacts, check_out_dir, check_seeds, check_size, check_steps, check_text, facts_from_configs,
                     model_facts)
from .errors import CnsError, ConceptError, UsageError
from .protected import of_bank, refuse_overlap
from .regions import RegionPlan, RegionRequest
from .reporting import SamplingProgress


# The largest --guidance: ComfyUI's KSampler allows cfg up to 100 (A1111's slider stops at 30). Far beyond it the
# guided noise overflows float arithmetic and the image is NaN (black); values close to it are already useless.
MAX_GUIDANCE = 100.0


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
    force: bool = False  # allow sizes over checks.SIZE_REFUSE_AREA x the model's native area
    negative: str | None = None  # the negative prompt of every image (None: diffusers' default, none)
    revision: int | None = None  # generate from this revision of the bank instead of HEAD
    scheduler: str | None = None  # a name of schedulers.SCHEDULERS; None: the model's own scheduler
    batch_size: int = 1  # images of one prompt per pipeline call (same per-image seeds)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise UsageError(f"-n must be at least 1, got {self.n}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        # A batch never holds more than one prompt's -n images, so a larger --batch-size draws exactly what -n does
        # (and records and names its images alike); frozen, so set once here.
        object.__setattr__(self, "batch_size", min(self.batch_size, self.n))
        check_seeds(self.seed, self.n)
        if self.steps < 1:
            raise UsageError(f"--steps must be at least 1, got {self.steps}")
        if not (0 <= self.guidance <= MAX_GUIDANCE):  # also false for NaN
            raise UsageError(f"--guidance must be a number from 0 to {MAX_GUIDANCE:g}, got {self.guidance} "
                             "(7.5 is typical; far larger values overflow to a black image)")
        for flag, v in (("width", self.width), ("height", self.height)):
            if v is not None and (v < 8 or v % 8):
                raise UsageError(f"--{flag} must be a positive multiple of 8, got {v}")
        if self.negative is not None:  # frozen: the checked text (tabs read as spaces) replaces the typed one
            object.__setattr__(self, "negative", check_text(self.negative, "--negative"))
        for name, text in (self.regions.texts if self.regions else {}).items():
            check_text(text, f"the --region-prompt of <{name}>")
        if self.scheduler is not None:
            from .schedulers import canonical, check_min_steps

            object.__setattr__(self, "scheduler", canonical(self.scheduler))  # frozen: normalise the spelling once
            check_min_steps(self.scheduler, self.steps)
        if self.revision is not None:
            from .bank.history import parse_revision_number

            parse_revision_number(self.revision, "--revision")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "image"


def build_pipeline(bank: Bank, rev, device: str = "cpu", dtype=None):
    """The base pipeline with every concept of `rev` applied (in float32), then placed on `device` in
    `dtype` (default float32): what `cns generate` runs (model.personalised.load_personalised)."""
    from .model.personalised import load_personalised

    return load_personalised(bank, rev, None, device, dtype)


def generate(bank_path: Path, prompts: list[str], out_dir: Path, config: GenerateConfig = GenerateConfig(),
             on_image: Callable[[dict], None] | None = None, on_phase: Callable[[str], None] | None = None,
             progress: SamplingProgress | None = None, skip_existing: bool = False) -> list[dict]:
    """Draw `config.n` images per prompt into `out_dir` and return their records (also passed to `on_image` as
    each is written). `progress` hears of every pipeline call and denoising step (reporting.py). `skip_existing`:
    an image whose name (its settings hash) is already in `out_dir` is not drawn again; its record names that file.

    Under a launcher (distributed.py) the pipeline calls are shared out: the main process checks the input and
    reads HEAD once, every rank loads that revision (a node's ranks in turn) and draws its share of the calls;
    every rank returns all the records, and `on_image` and `progress` run on the main process, in one-process order
    (generate_units.py)."""
    from . import distributed as dist
    from .generate_units import run_units, units_of

    job = dist.on_main(_prepare, bank_path, prompts, Path(out_dir), config)
    if on_phase:
        on_phase(f"loading the base model on {job.device} with {len(job.rev.concepts)} concept(s)")
    pipe, run, config = dist.in_turn(_load, job)
    units = units_of(len(job.prompts), config.n, config.batch_size, config.seed)
    if dist.launched() and on_phase:
        on_phase(f"{dist.size()} processes share {len(units)} pipeline call(s) of {config.batch_size} image(s)")
    progress = (progress or SamplingProgress()) if dist.is_main() else SamplingProgress()

    def draw(unit, emit):
        k = unit.prompt
        with _strengths(pipe, job.bank, job.rev, job.strengths[k]):
            images = _sample(pipe, job.texts[k], job.plans[k], config, list(unit.seeds), progress)
        for seed, image in zip(unit.seeds, images):
            record, stem = _describe(seed, k, job, config, run, image.width, image.height)
            had = _existing(record, stem, job.out_dir) if skip_existing else None
            emit(had or _write(image, record, stem, job.plans[k], job.out_dir))

    def finished(unit):  # the unit's records if all its images are on disk (--skip-existing), else None
        width, height = _size(pipe, config)
        had = [_existing(*_describe(seed, unit.prompt, job, config, run, width, height), job.out_dir)
               for seed in unit.seeds]
        return had if all(had) else None

    progress.start(len(job.prompts) * config.n, config.steps)
    try:
        return run_units(units, draw, finished if skip_existing else None, on_image, progress)
    finally:
        progress.stop()


@dataclass(frozen=True)
class _Job:
    """What `generate` checked and resolved before loading the model (picklable: the main process shares it)."""

    bank: Bank
    rev: object
    typed: list[str]  # the prompts as given ("<dog:0.7> ...")
    prompts: list[str]  # without strengths ("<dog> ...")
    texts: list[str]  # what the pipeline is handed ("<dog> dog ...")
    strengths: list[dict]
    plans: list
    out_dir: Path
    early: ModelFacts
    device: str  # the kind ("cuda"): records and names carry it; each rank places its model with device_of
    dtype: object
    config: GenerateConfig


def _prepare(bank_path: Path, prompts: list[str], out_dir: Path, config: GenerateConfig) -> _Job:
    """Every check that needs no weights, in the order the user's mistakes are reported; HEAD is read here, once."""
    from .model import loading
    from .model.runtime import resolve_device, resolve_precision
    from .prompts import expand_prompt, split_strengths
    from .regions import plan_regions

    prompts = [check_text(p, f"the prompt {_shown(p)}") for p in prompts]  # before the bank: bad input first
    bank = Bank.open(bank_path)
    if config.revision is None:
        rev = bank.head()
    else:
        from .bank.history import read_existing_revision, with_current_base

        rev = with_current_base(bank, read_existing_revision(bank, config.revision, "cannot be generated from"))
        _check_concepts_at(bank, rev, prompts)
    classes = {name: c.class_word for name, c in rev.concepts.items()}
    typed = prompts
    prompts, strengths = zip(*[split_strengths(p) for p in typed]) if typed else ((), ())  # "<dog:0.7>" -> "<dog>"
    if config.regions and config.regions.strengths:  # "--region-prompt '<dog>=a <dog:0.5>'": one strength per image
        from .regions import merged_strengths

        strengths = [merged_strengths(s, config.regions.strengths, "the prompt and a --region-prompt") for s in strengths]
    texts = [expand_prompt(p, classes, config.expand) for p in prompts]  # unknown concepts fail before loading
    _refuse_negative_strengths(config.negative)
    _warn_unclosed(prompts)
    plans = [plan_regions(p, config.regions, classes, config.expand) if config.regions else None for p in prompts]
    out_dir = Path(out_dir)
    refuse_overlap(out_dir, "--out", of_bank(bank.root, rev.base), contains=False)  # new files only: see protected.py
    check_out_dir(out_dir)
    early = model_facts(loading.spec_of(rev.base))  # what the base's config files say, before any weights load
    _check_limits(early, config)
    device = resolve_device(config.device)
    dtype = resolve_precision(config.precision, device)
    return _Job(bank, rev, list(typed), list(prompts), texts, list(strengths), plans, out_dir, early, device, dtype,
                config)


def _load(job: _Job):
    """(the personalised pipeline on this rank's device, the run's shared record fields, the final config)."""
    from . import distributed as dist

    config, early = job.config, job.early
    pipe = build_pipeline(job.bank, job.rev, dist.device_of(job.device), job.dtype)  # a damaged concept is named before the model loads
    loaded = pipeline_facts(pipe)  # the limits not readable before the load (a single file, a hub id not cached)
    _check_limits(ModelFacts(loaded.max_steps if early.max_steps is None else None, loaded.train_steps,
                             loaded.native if early.native is None else None,
                             loaded.min_steps if early.min_steps is None else None), config)
    _warn_truncated(pipe.tokenizer, [*job.texts, *([config.negative] if config.negative else [])])
    config = _both_sides(config, pipe)
    if config.regions:
        _warn_small_boxes(pipe, job.plans, config)
    if config.scheduler:
        from . import schedulers

        schedulers.use(pipe, config.scheduler)
    sampler, schedule = sampler_name(type(pipe.scheduler).__name__, pipe.scheduler.config)
    identity = model_identity(job.rev, pipe.scheduler)
    model = model_name(job.rev.base)
    try:
        job.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(job.out_dir, e) from None
    return pipe, _Run(job.rev, job.bank, sampler, schedule, model, job.device, job.dtype, identity), config


def _size(pipe, config: GenerateConfig) -> tuple[int, int]:
    """(width, height) of the images a call draws: the pipeline's own default is the native size of both sides."""
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return config.width or native, config.height or native


def _check_concepts_at(bank: Bank, rev, prompts: list[str]) -> None:
    """With --revision: a concept of the prompts that this revision does not hold but another one does is one line
    naming where it is (expand_prompt's own message would say no concept was ever learned)."""
    from .prompts import concepts_in, split_strengths

    missing = [n for p in prompts for n in concepts_in(split_strengths(p)[0]) if n not in rev.concepts]
    if not missing:
        return
    name = missing[0]
    holding = [n for n in bank.revision_numbers() if name in _concepts_of(bank, n)]
    has = ", ".join(f"<{n}>" for n in sorted(rev.concepts)) or "no concepts"
    if not holding:
        raise ConceptError(f"revision {rev.number} has {has}, and no revision of the bank has <{name}>; "
                           "see `cns log`")
    head = bank.head_number()
    where = (f"drop --revision to draw from HEAD, revision {head}" if head in holding
             else f"pass --revision {holding[-1]}")
    raise ConceptError(f"revision {rev.number} has {has}; <{name}> was learned in revision {holding[0]} ({where})")


def _concepts_of(bank: Bank, number: int) -> dict:
    """The concepts of revision `number`; none for a revision that cannot be read (`cns verify` reports those)."""
    try:
        return bank.revision(number).concepts
    except CnsError:
        return {}


def _shown(prompt: str, limit: int = 40) -> str:
    """A prompt in a message: quoted with its control characters escaped (repr), cut to `limit` characters."""
    return repr(prompt if len(prompt) <= limit else prompt[:limit] + "…")


class _Run(NamedTuple):
    """What every image of one `cns generate` shares in its record and name."""

    rev: object
    bank: Bank
    sampler: str
    schedule: str | None
    model: str
    device: str
    dtype: object
    identity: dict


def _describe(seed: int, k: int, job: _Job, config: GenerateConfig, run: _Run, width: int,
              height: int) -> tuple[dict, str]:
    """(the record of prompt k's image at `seed`, its file name without -N suffix or extension)."""
    from .model.runtime import precision_name
    from .prompts import concepts_in

    rev, bank, sampler, schedule, model, device, dtype, identity = run
    prompt, plan, strength = job.prompts[k], job.plans[k], job.strengths[k]
    record = {"prompt": job.typed[k], "text": job.texts[k], "seed": seed, "steps": config.steps,
              "guidance": config.guidance, "width": width, "height": height, "revision": rev.number,
              "concepts": concepts_in(prompt), "bank": str(bank.root), "sampler": sampler, "model": model,
              "device": device, "precision": precision_name(dtype)}
    if schedule:
        record["schedule"] = schedule
    if config.negative is not None:
        record["negative"] = config.negative
    if strength:
        record["strengths"] = strength
    if config.batch_size > 1:
        record["batch_size"] = config.batch_size
    if plan:
        record["regions"] = plan.record()
    suffix = "-regions" if plan else ""
    return record, f"r{rev.number}-{k:03d}-{slug(prompt)}{suffix}-s{seed}-{settings_hash(record, identity)}"


def _write(image, record: dict, stem: str, plan, out_dir: Path) -> dict:
    """Write one image under a name of its own (never replacing a file); its record with the path it took."""
    path = write_new_file(out_dir, stem, ".png", _png_bytes(image, _png_info(record, plan)))
    return {**record, "path": str(path)}


def _existing(record: dict, stem: str, out_dir: Path) -> dict | None:
    """The record of the image already at `stem`.png (the settings hash names it exactly), or None. A file under
    a final name is always whole: images are moved into place complete (write_new_file)."""
    path = out_dir / f"{stem}.png"
    return {**record, "path": str(path)} if path.is_file() else None


def _strengths(pipe, bank: Bank, rev, strengths: dict[str, float]):
    """The weights W0 + Σ s·ΔW of a prompt's `<name:s>` concepts for one call (model.bank_apply.at_strengths);
    a prompt without strengths leaves the pipeline alone."""
    import contextlib

    if not strengths:
        return contextlib.nullcontext()
    from .model.bank_apply import at_strengths

    return at_strengths(pipe, bank, rev, strengths)


def _check_limits(facts: ModelFacts, config: GenerateConfig) -> None:
    from . import output

    if config.scheduler:  # --scheduler replaces the model's own, whose fewest steps then do not matter
        facts = replace(facts, min_steps=None)
    check_steps(config.steps, facts)
    warning = check_size(config.width, config.height, facts, config.force)
    if warning:
        output.warn(warning)


def pipeline_facts(pipe) -> ModelFacts:
    """The sampling limits of a loaded pipeline, from its scheduler, UNet and VAE configs."""
    return facts_from_configs(dict(pipe.scheduler.config), dict(pipe.unet.config), dict(pipe.vae.config))


# diffusers scheduler class -> the sampler name AUTOMATIC1111 writes (its k-diffusion / compvis samplers).
_A1111_SAMPLERS = {
    "DDIMScheduler": "DDIM",
    "DDPMScheduler": "DDPM",
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "LMSDiscreteScheduler": "LMS",
    "HeunDiscreteScheduler": "Heun",
    "KDPM2DiscreteScheduler": "DPM2",
    "KDPM2AncestralDiscreteScheduler": "DPM2 a",
    "DPMSolverSDEScheduler": "DPM++ SDE",
    "UniPCMultistepScheduler": "UniPC",
    "LCMScheduler": "LCM",
}
_A1111_DPM_MULTISTEP = {("dpmsolver++", 2): "DPM++ 2M", ("sde-dpmsolver++", 2): "DPM++ 2M SDE",
                        ("sde-dpmsolver++", 3): "DPM++ 3M SDE"}
_A1111_SCHEDULES = {"use_karras_sigmas": "Karras", "use_exponential_sigmas": "Exponential", "use_beta_sigmas": "Beta"}


def sampler_name(class_name: str, config: Mapping) -> tuple[str, str | None]:
    """(A1111's name for this diffusers scheduler, its "Schedule type" or None). PNDMScheduler with skip_prk_steps
    runs only the linear multistep part of PNDM, which is what A1111 (CompVis) calls PLMS; without it, it also runs
    Runge-Kutta warm-up steps, which no A1111 sampler does, so it is named PNDM. Multistep DPM-Solver variants
    without an A1111 counterpart, and unknown schedulers, keep the diffusers class name."""
    if class_name == "PNDMScheduler":
        name = "PLMS" if config.get("skip_prk_steps", False) else "PNDM"
    elif class_name == "DPMSolverMultistepScheduler":
        key = (config.get("algorithm_type", "dpmsolver++"), config.get("solver_order", 2))
        name = _A1111_DPM_MULTISTEP.get(key, class_name)
    else:
        name = _A1111_SAMPLERS.get(class_name, class_name)
    schedule = next((label for key, label in _A1111_SCHEDULES.items() if config.get(key)), None)
    return name, schedule


def model_name(base) -> str:
    """What A1111's `Model:` field shows: the base's name (the bundled model's, a folder's or file's last path
    component, or the hub id)."""
    if base.kind == "local-dir":
        return Path(base.location).name or base.location
    if base.kind == "single-file":
        return Path(base.location).stem
    return base.location


def model_identity(rev, scheduler=None) -> dict:
    """Everything of the model that decides the pixels: the base's fingerprint, the bank's basis and each concept's
    objects and slice (all of HEAD's concepts change W, not only those in the prompt), and the scheduler."""
    doc = {"fingerprint": rev.base.fingerprint.digest, "basis": rev.basis.object.sha256 if rev.basis else None,
           "concepts": {name: {"token": c.token, "delta": c.delta.sha256, "embedding": c.embedding.sha256,
                               "slice": [c.slice.start, c.slice.rank]} for name, c in sorted(rev.concepts.items())}}
    if scheduler is not None:
        doc["scheduler"] = {"class": type(scheduler).__name__,
                            "config": {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}}
    return doc


def settings_hash(record: dict, identity: dict) -> str:
    """8 hex digits of sha256 over every setting that changes pixels (the file name's last part)."""
    doc = {key: record[key] for key in ("text", "seed", "steps", "width", "height", "device", "precision")}
    doc.update(guidance=float(record["guidance"]), regions=record.get("regions"), model=identity)
    for key in ("negative", "strengths", "batch_size"):  # only when set, so the names of runs without them stay as they were
        if key in record:
            doc[key] = record[key]
    text = json.dumps(doc, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def _sample(pipe, text: str, plan: RegionPlan | None, config: GenerateConfig, seeds: list[int],
            progress: SamplingProgress) -> list:
    """One call, one image per seed: the plain diffusers call, or the regional one (the context text, each box
    its own text). One seed is the exact call of earlier versions (a single generator, not a list of one).
    Diffusers' step callback reports progress; it hands the step's tensors back unchanged."""
    import numpy as np
    import torch

    def on_step(pipe, i, t, tensors):
        if not torch.isfinite(tensors["latents"]).all():  # stop at once: every later step stays NaN
            raise _non_finite(config, pipe.unet.dtype, f"the latents at step {i + 1}")
        progress.step(i + 1, pipe.num_timesteps)  # num_timesteps: Heun-like samplers take more than --steps
        return tensors

    generators = [torch.Generator().manual_seed(s) for s in seeds]
    # output_type="np": the pixels as floats, so that NaN can be seen before diffusers' own numpy_to_pil (used
    # below, the same conversion as output_type="pil") would cast it to black; the pixels are the same.
    kwargs = dict(num_inference_steps=config.steps, guidance_scale=config.guidance, width=config.width,
                  height=config.height, generator=generators[0] if len(seeds) == 1 else generators,
                  callback_on_step_end=on_step, output_type="np")
    if config.negative is not None:
        # the unconditional half (regions leave it untouched); diffusers wants one per prompt when prompts are a list
        kwargs["negative_prompt"] = config.negative if len(seeds) == 1 else [config.negative] * len(seeds)
    if plan is None:
        images = pipe(text if len(seeds) == 1 else [text] * len(seeds), **kwargs).images
    else:
        from .model.regional import generate_plans

        images = generate_plans(pipe, [plan] * len(seeds), **kwargs).images
    if not np.isfinite(images).all():  # (batch, height, width, 3) floats in [0, 1]
        raise _non_finite(config, pipe.vae.dtype, "the decoded image")
    return pipe.numpy_to_pil(images)


def _non_finite(config: GenerateConfig, dtype, what: str) -> CnsError:
    """The one-line error for NaN/inf during sampling (no image is written), naming the flag to change: half
    precision overflows (the SD 1.x VAE in fp16 is the usual case), and so does a very large guidance."""
    import torch

    if dtype in (torch.float16, torch.bfloat16):
        fix = "use --precision fp32"
    else:
        fix = f"lower --guidance (now {config.guidance:g}; 7.5 is typical)"
    return CnsError(f"{what} became NaN/inf (numbers too large for {str(dtype).removeprefix('torch.')}); "
                    f"no image was written: {fix}")


def _a1111_quote(value) -> str:
    """A value of an A1111 infotext field, quoted as A1111 does when it holds a comma, colon or newline."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def a1111_infotext(record: dict, plan: RegionPlan | None = None) -> str:
    """The A1111 `parameters` text: the prompt line, a "Negative prompt:" line when there is one, then
    `Steps: N, Sampler: NAME, CFG scale: X, Seed: N, Size: WxH, Model: NAME` and cns's own fields."""
    fields = [f"Steps: {record['steps']}", f"Sampler: {record['sampler']}"]
    if record.get("schedule"):
        fields.append(f"Schedule type: {record['schedule']}")
    fields += [f"CFG scale: {record['guidance']}", f"Seed: {record['seed']}",
               f"Size: {record['width']}x{record['height']}", f"Model: {_a1111_quote(record['model'])}",
               f"cns revision: {record['revision']}"]
    if plan:
        fields.append(plan.a1111())
    negative = f"Negative prompt: {record['negative']}\n" if record.get("negative") else ""
    return f"{record['text']}\n{negative}" + ", ".join(fields)


def _png_info(record: dict, plan: RegionPlan | None):
    """The PNG text chunks: cns's own keys, and an A1111 "parameters" chunk so other tools show how the image was
    made."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key in ("prompt", "text", "seed", "steps", "guidance", "revision", "concepts"):
        info.add_text(f"cns:{key}", str(record[key]) if key != "concepts" else ",".join(record[key]))
    if "negative" in record:
        info.add_text("cns:negative", record["negative"])
    if plan:
        info.add_text("cns:regions", json.dumps(record["regions"], ensure_ascii=False))
    info.add_text("parameters", a1111_infotext(record, plan))
    return info


def _png_bytes(image, info) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="png", pnginfo=info)
    return buf.getvalue()


MAX_SAME_NAME = 10_000


def write_new_file(folder: Path, stem: str, ext: str, data: bytes) -> Path:
    """Write `data` as folder/stem+ext, or stem-2+ext, stem-3+ext, … if taken, never replacing an existing file:
    the bytes go to a hidden, fsynced temp file that then takes the first free name (bank.atomic.place_new),
    so a crash or Ctrl-C never leaves a partial file under a final name and a concurrent run never overwrites."""
    from .bank.atomic import fsync_dir, place_new, temp_name, write_new

    tmp = temp_name(folder / f"{stem}{ext}")
    try:
        write_new(tmp, data)
        for i in range(1, MAX_SAME_NAME + 1):
            path = folder / (f"{stem}{ext}" if i == 1 else f"{stem}-{i}{ext}")
            if place_new(tmp, path):
                fsync_dir(folder)
                return path
    except OSError as e:
        raise _write_error(folder, e) from None
    finally:
        tmp.unlink(missing_ok=True)
    raise CnsError(f"{MAX_SAME_NAME} images named {stem}-N{ext} already exist in {folder}; use another --out")


def _write_error(folder: Path, e: OSError) -> CnsError:
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return CnsError(f"disk full while writing images to {folder}; free some space and run the command again")
    return CnsError(f"could not write images to {folder}: {e.strerror or e}; check the permissions and free space")


def _refuse_negative_strengths(negative: str | None) -> None:
    """`--negative '<dog:0.5>'` would reach the encoder as words: a strength scales the concept's delta, which the
    negative and the positive half share, so it has no meaning there (prompts.split_strengths also answers
    A1111's <lora:…> tag)."""
    from .prompts import split_strengths

    strengths = split_strengths(negative)[1] if negative else {}
    if strengths:
        name, w = next(iter(strengths.items()))
        raise UsageError(f"--negative cannot give <{name}> a strength ({w:g}): a strength scales the concept in the "
                         f"whole image; write <{name}> in --negative, and the strength in the prompt")


def _warn_unclosed(prompts: list[str]) -> None:
    """`<dog on a beach` passes as text (the encoder reads "<dog" as plain words); the user meant `<dog>`."""
    from . import output
    from .prompts import excerpt, unclosed_references

    for prompt in prompts:
        for name in unclosed_references(prompt):
            output.warn(f"<{name} in {excerpt(prompt, prompt.find('<' + name))} has no closing '>', so it is plain "
                        f"text, not a concept; write <{name.lower()}> to use the concept")


def _both_sides(config: GenerateConfig, pipe) -> GenerateConfig:
    """`--width` alone (or `--height` alone) with the other side the model's native size: diffusers' pipelines
    fall back to the native size for BOTH sides when either is missing, which would silently drop the one given."""
    if (config.width is None) == (config.height is None):
        return config
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return replace(config, width=config.width or native, height=config.height or native)


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


def _warn_truncated(tokenizer, texts: list[str]) -> None:
    """The text encoder reads model_max_length tokens (77 for CLIP, the start and end tokens included) and the
    pipeline cuts the rest off; diffusers logs that, but cns silences diffusers' logging, so it is said here,
    once per distinct text. Counted as the pipeline tokenizes: multi-vector tokens expanded first."""
    from . import output
    from .model.tokens import expand_vectors
    from .prompts import excerpt

    limit = tokenizer.model_max_length
    for text in dict.fromkeys(texts):
        ids = tokenizer(expand_vectors(text, tokenizer), truncation=False).input_ids  # with start and end tokens
        if len(ids) > limit:
            dropped = ids[limit - 1 : -1]  # the pipeline keeps the first limit - 1 and puts the end token last
            output.warn(f"the text {excerpt(text)} is {len(ids) - 2} tokens; the text encoder reads {limit - 2}, so the "
                        f"last {len(dropped)} ({excerpt(tokenizer.decode(dropped))}) are dropped; shorten it")

