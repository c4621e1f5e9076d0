"""Checks of a command's numbers and paths that can run before any model is loaded (no torch here).

`cns generate` calls these so that a bad `--seed`, `--out`, `--steps` or size is one line and exit 2 within a
second, not an internal error (or a ten-minute run) after a full model load:

- `check_seeds(seed, n)`: every seed of the run fits `torch.Generator.manual_seed` (0 ≤ seed + n − 1 < 2⁶⁴);
- `check_out_dir(path, flag)`: `path` is a folder or can become one, and its nearest existing ancestor is
  writable (nothing is created here);
- `model_facts(spec)`: what the base's config files on disk say (scheduler training steps, native size), without
  loading weights: a diffusers folder or the bundled model from its folder, a hub id from the local Hugging Face
  cache only; a field is None where it cannot be read (a single .safetensors file, a hub id not cached), and the
  caller checks right after the load instead (`facts_from_configs` on the loaded pipeline's configs);
- `check_steps(steps, facts)` and `check_size(width, height, facts, force)`: the limits those facts imply;
- `check_text(text, what)`: a prompt-like text (prompt, --negative, --region-prompt) is one line of valid UTF-8.
"""

from __future__ import annotations

import json
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes 0 .. 2**64 - 1
SIZE_WARN_AREA = 4  # × the native area (2x per side): slow, and SD models repeat content
SIZE_REFUSE_AREA = 16  # × the native area (4x per side): refused unless --force


def check_seeds(seed: int, n: int, flag: str = "--seed") -> None:
    """Seeds seed .. seed + n - 1 must all be valid torch generator seeds."""
    if seed < 0:
        raise UsageError(f"{flag} must be 0 or more, got {seed}")
    if seed >= SEED_LIMIT:
        raise UsageError(f"{flag} must be below 2^64 ({SEED_LIMIT}), got {seed}")
    if n > SEED_LIMIT:  # not even --seed 0 gives that many seeds: the count is what to change
        raise UsageError(f"-n {n} is more images than there are seeds (2^64 = {SEED_LIMIT}); use a smaller -n")
    if seed + n - 1 >= SEED_LIMIT:
        raise UsageError(f"{flag} {seed} with -n {n} would use seeds up to {seed + n - 1}, past 2^64 - 1; "
                         f"use {flag} {SEED_LIMIT - n} or lower")


def check_out_dir(path: Path, flag: str = "--out") -> None:
    """`path` must be a folder, or not exist yet under a writable folder. Creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a folder; pass a folder for the images")
    ancestor = path.absolute()
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{flag} {path} cannot be created: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        where = "it" if ancestor == path.absolute() else f"its nearest existing folder {ancestor}"
        raise UsageError(f"{flag} {path} is not writable ({where} is read-only or not yours); "
                         "pass a folder you can write to")


@dataclass(frozen=True)
class ModelFacts:
    """What limits a base model puts on sampling; None: not known (yet)."""

    max_steps: int | None = None  # the most sampling steps its scheduler can take
    train_steps: int | None = None  # the scheduler's num_train_timesteps
    native: int | None = None  # pixels per side it was trained at (unet sample_size × VAE scale factor)
    min_steps: int | None = None  # the fewest sampling steps its own scheduler takes, when more than 1 (PNDM: 4)


def facts_from_configs(scheduler: dict | None, unet: dict | None, vae: dict | None) -> ModelFacts:
    """ModelFacts from the three config dicts (any may be None).

    max_steps: diffusers refuses more steps than num_train_timesteps; with "leading" timestep spacing and a
    steps_offset (SD 1.x's DDIM/PNDM configs: offset 1) the last of exactly num_train_timesteps steps indexes past
    the schedule (an IndexError in DDIM, PNDM and DDPM), so the limit there is num_train_timesteps - steps_offset.
    native: unet sample_size × 2^(len(vae block_out_channels) - 1), as StableDiffusionPipeline computes it (None
    without both configs)."""
    max_steps = train_steps = native = least = None
    if scheduler is not None:
        from .schedulers import min_steps

        least = min_steps(scheduler.get("_class_name", ""), scheduler)
        t = scheduler.get("num_train_timesteps", 1000)
        if isinstance(t, int) and t > 0:
            train_steps = max_steps = t
            offset = scheduler.get("steps_offset", 0)
            if scheduler.get("timestep_spacing", "leading") == "leading" and isinstance(offset, int) and 0 < offset < t:
                max_steps = t - offset
    if unet is not None and vae is not None:
        size = unet.get("sample_size")
        blocks = vae.get("block_out_channels")
        if isinstance(size, int) and size > 0 and isinstance(blocks, (list, tuple)) and blocks:
            native = size * 2 ** (len(blocks) - 1)
    return ModelFacts(max_steps, train_steps, native, least)


def _read_json(path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def model_facts(spec) -> ModelFacts:
    """The facts readable from disk for a BaseSpec (model/loading.py), loading no weights."""
    files = ("scheduler/scheduler_config.json", "unet/config.json", "vae/config.json")
    if spec.kind in ("local-dir", "builtin"):
        from .model.loading import model_dir

        folder = model_dir(spec)
        configs = [_read_json(folder / f) for f in files]
    elif spec.kind == "hub":
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return ModelFacts()
        configs = []
        for f in files:
            try:
                found = try_to_load_from_cache(spec.location, f, revision=spec.revision)
            except Exception:  # a malformed id or revision: the loader will say so
                found = None
            configs.append(_read_json(found) if isinstance(found, str) else None)
    elif getattr(spec, "config", None):  # a single .safetensors file loaded with the configs of a --config folder
        configs = [_read_json(Path(spec.config) / f) for f in files]
    else:  # a single .safetensors file without one: its configs are only known once diffusers has built the pipeline
        return ModelFacts()
    return facts_from_configs(*configs)


def check_steps(steps: int, facts: ModelFacts) -> None:
    if facts.min_steps is not None and steps < facts.min_steps:  # the model's own scheduler (no --scheduler)
        raise UsageError(f"--steps {steps} is fewer than this model's own scheduler takes (at least {facts.min_steps}: "
                         f"PNDM's Runge-Kutta warm-up); use --steps {facts.min_steps} or more, or --scheduler PLMS")
    if facts.max_steps is not None and steps > facts.max_steps:
        why = (f"its scheduler was trained with {facts.train_steps} timesteps" if facts.max_steps == facts.train_steps
               else f"{facts.train_steps} training timesteps, less its steps_offset")
        raise UsageError(f"--steps {steps} is more than this model can sample with (at most {facts.max_steps}: "
                         f"{why}); use --steps {facts.max_steps} or fewer")


def check_size(width: int | None, height: int | None, facts: ModelFacts, force: bool = False) -> str | None:
    """Refuse a size over SIZE_REFUSE_AREA × the native area without `force`; a warning text over SIZE_WARN_AREA×."""
    n = facts.native
    if n is None or (width is None and height is None):
        return None
    w, h = width or n, height or n
    ratio = (w * h) / (n * n)
    if ratio <= SIZE_WARN_AREA:
        return None
    what = f"{w}x{h} is {ratio:.3g}x the pixels of this model's native {n}x{n}"
    if ratio > SIZE_REFUSE_AREA and not force:
        side = 4 * n
        raise UsageError(f"{what}: sampling would be very slow and need a lot of memory, and the model repeats "
                         f"itself at that size; stay within {SIZE_REFUSE_AREA}x the native area (e.g. {side}x{side}) "
                         "or add --force")
    return f"{what}; expect slow sampling and repeated or broken content (the model was trained at {n}x{n})"


# Unicode categories a prompt may not hold: control characters (NUL truncates a PNG text chunk, a newline forges
# A1111 "parameters" fields, ESC moves a terminal's cursor), line and paragraph separators (str.splitlines splits
# there), and lone surrogates (how Python hands over command-line bytes that are not UTF-8: surrogateescape).
_REFUSED_CATEGORIES = {"Cc": "control character", "Zl": "line separator", "Zp": "paragraph separator",
                       "Cs": "byte that is not UTF-8"}


def check_text(text: str, what: str) -> str:
    """`text` with each tab read as a space, or a one-line UsageError naming the first character that a prompt may
    not hold (see _REFUSED_CATEGORIES) and where it is. `what` names the text in the message ("--negative")."""
    text = text.replace("\t", " ")  # the text encoder reads a tab as a space anyway; the records then agree
    for i, ch in enumerate(text):
        kind = _REFUSED_CATEGORIES.get(unicodedata.category(ch))
        if kind is None:
            continue
        escaped = 0xDC80 <= ord(ch) <= 0xDCFF  # surrogateescape's stand-in for the byte ord(ch) - 0xDC00
        shown = f"byte 0x{ord(ch) - 0xDC00:02x}" if escaped else f"U+{ord(ch):04X}"
        fix = ("write it in UTF-8 (the encoding of your terminal or file)" if kind.startswith("byte")
               else "give one line per prompt (cns generate - reads several from stdin)")
        raise UsageError(f"{what} holds a {kind} ({shown}) at character {i + 1}; {fix}")
    return text
