"""Prompt handling (no torch): concept references, their expansion, prompts from argv/stdin, training prompts
and the bundled calibration prompts.

A concept is referenced in a prompt as `<name>`. Before the text encoder sees a prompt, each reference is
followed by the concept's class word ("<dog>" -> "<dog> dog"), so the learned token only has to carry what
sets this dog apart, and the prompt still reads naturally to the model.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import IO, Iterable

from .errors import ConceptError, UsageError

CONCEPT_REF = re.compile(r"<([a-z0-9][a-z0-9_-]{0,63})>")
# The same shape in any case: "<Dog>" is almost surely a typo for "<dog>" (tokenizers lower-case prompts).
_ANY_CASE_REF = re.compile(r"<([A-Za-z0-9][A-Za-z0-9_-]{0,63})>")
_LEARN_HINT = "teach one with `cns learn NAME ./photos`"


def concepts_in(prompt: str) -> list[str]:
    """Names referenced in `prompt`, in order of first appearance, each once."""
    return list(dict.fromkeys(CONCEPT_REF.findall(prompt)))


# "<dog" not followed by ">": almost surely a reference missing its closing bracket
_UNCLOSED_REF = re.compile(r"<([A-Za-z0-9][A-Za-z0-9_-]{0,63})(?![A-Za-z0-9_>-])")


# "<dog:0.7>": a concept at a strength (A1111 writes a LoRA's weight as <lora:name:w>). Any case and spaces around
# the number are matched too ("<Dog:0.7>", "<dog: 0.7>"), so that they get an answer instead of passing as text.
_WEIGHTED_REF = re.compile(r"<([A-Za-z0-9][A-Za-z0-9_-]{0,63})\s*:\s*([^<>\s]*)\s*>")
MAX_STRENGTH = 2.0
# A1111's extra-network tags: <lora:dog:0.7> there is <dog:0.7> here
_A1111_NETWORKS = ("lora", "lyco", "hypernet")


def split_strengths(prompt: str) -> tuple[str, dict[str, float]]:
    """`<name:w>` -> `<name>` and {name: w}: the prompt as the encoder reads it, and each weighted concept's
    strength (its delta is scaled by w; `<name>` is 1). w must be a finite number in [0, 2], one per concept.
    A1111's `<lora:name:w>` and an upper-case name are refused with the spelling cns reads."""
    strengths: dict[str, float] = {}

    def take(m: re.Match) -> str:
        name, raw = m.group(1), m.group(2)
        _refuse_foreign_spelling(name, raw)
        try:
            w = float(raw)
        except ValueError:
            w = float("nan")
        if not (0.0 <= w <= MAX_STRENGTH):  # also false for NaN
            raise UsageError(f"the strength of <{name}> must be a number in [0, {MAX_STRENGTH:g}], got "
                             f"{_shown(raw)} (write <{name}:0.7>)")
        if strengths.get(name, w) != w:
            raise UsageError(f"<{name}> has two strengths in one prompt ({strengths[name]:g} and {w:g}); give it one")
        strengths[name] = w
        return f"<{name}>"

    return _WEIGHTED_REF.sub(take, prompt), strengths


def _refuse_foreign_spelling(name: str, raw: str) -> None:
    """`<lora:dog:0.7>` (A1111's tag) and `<Dog:0.7>` (concept names are lower case) name a concept in a way
    cns does not read: say how cns writes it."""
    if name.lower() in _A1111_NETWORKS and raw and not _is_number(raw):
        inner, _, weight = raw.partition(":")
        ours = f"<{inner.lower()}:{weight}>" if weight else f"<{inner.lower()}>"
        raise UsageError(f"<{name}:{_shown(raw, quote=False)}> is A1111's LoRA tag; cns writes {ours} "
                         "(a concept at a strength, without 'lora:')")
    if name != name.lower():
        raise ConceptError(f"concept names are lower case: write <{name.lower()}:{_shown(raw, quote=False)}> "
                           f"instead of <{name}:{_shown(raw, quote=False)}>")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _shown(text: str, most: int = 24, quote: bool = True) -> str:
    """A user's fragment in a message, cut to `most` characters: a 10,000-character one is not echoed whole."""
    cut = text if len(text) <= most else f"{text[:most]}…"
    return repr(cut) if quote else cut


def excerpt(prompt: str, at: int = 0, width: int = 60) -> str:
    """`prompt` quoted for a message: whole when short, else about `width` characters around position `at`
    (where the reference in question starts) with '…' where text was left out."""
    if len(prompt) <= width:
        return repr(prompt)
    start = max(0, min(at - width // 3, len(prompt) - width))
    part = prompt[start : start + width]
    return ("…" if start else "") + repr(part) + ("…" if start + width < len(prompt) else "")


def unclosed_references(prompt: str) -> list[str]:
    """Names written as `<name` without the closing `>`: the text encoder would read them as plain words."""
    return list(dict.fromkeys(_UNCLOSED_REF.findall(prompt)))


def expand_prompt(prompt: str, concepts: dict[str, str], expand: bool = True) -> str:
    """The exact text for the text encoder. `concepts` maps name -> class word.

    Raises ConceptError for a reference to an unknown concept or one written in the wrong case. With
    `expand`, `<name>` becomes `<name> classword` unless the class word already follows it. Other
    angle-bracket text ("<<", "< dog>") is left alone. Whitespace is collapsed to single spaces.
    """
    text = " ".join(prompt.split())
    for match in _ANY_CASE_REF.finditer(text):
        _check_reference(match.group(1), concepts)
    if not expand:
        return text
    return CONCEPT_REF.sub(lambda m: _expand_one(m, concepts[m.group(1)]), text)


def _check_reference(name: str, concepts: dict[str, str]) -> None:
    """Raise ConceptError unless `<name>` names a known concept exactly as written."""
    if name in concepts:
        return
    if not concepts:
        raise ConceptError(f"prompt uses <{name}> but no concepts learned yet; {_LEARN_HINT}")
    if name.lower() in concepts:
        raise ConceptError(f"concept names are lower case: write <{name.lower()}> instead of <{name}>")
    known = ", ".join(f"<{n}>" for n in sorted(concepts))
    raise ConceptError(f"unknown concept <{name}> in prompt; known: {known} (see `cns inspect`)")


def _expand_one(match: re.Match, class_word: str) -> str:
    """`<name>` plus its class word, unless the prompt already says it right after the reference."""
    word = " ".join(class_word.split())
    after = match.string[match.end() :]
    # Case-insensitive and on a word boundary: "<dog> Dog" is already expanded, "<dog> doghouse" is not.
    if re.match(rf" {re.escape(word)}(?!\w)", after, flags=re.IGNORECASE):
        return match.group(0)
    return f"{match.group(0)} {word}"


def read_prompts(args: Iterable[str], stdin: IO[str] | None) -> list[str]:
    """Each argument is a prompt; "-" reads one prompt per line from stdin (blank and '#' lines skipped)."""
    prompts: list[str] = []
    for arg in args:
        if arg == "-":
            prompts.extend(_stdin_prompts(stdin))
        elif arg.strip():  # an empty argument (e.g. an unset shell variable) is not a prompt
            prompts.append(arg.strip())
    if not prompts:
        raise UsageError("no prompt given; pass a prompt or '-' to read them from stdin")
    return prompts


def _stdin_prompts(stdin: IO[str] | None) -> list[str]:
    if stdin is None:
        return []
    try:
        lines = [line.strip() for line in stdin]
    except UnicodeDecodeError as e:  # a strict UTF-8 stdin (any locale but C/POSIX, where bytes arrive escaped)
        raise UsageError(f"stdin is not UTF-8 text (it holds the byte 0x{e.object[e.start]:02x}); "
                         "save the prompts as UTF-8") from None
    return [line for line in lines if line and not line.startswith("#")]


def training_prompt(name: str, class_word: str, caption: str | None) -> str:
    """The prompt one training image is paired with.

    Our choice: without a caption it is "a photo of <name> classword". A caption (kohya convention) usually
    describes the rest of the image, so it is appended: "a photo of <name> classword, <caption>"; a caption
    that already mentions `<name>` was written for this concept and is used as is.
    """
    base = f"a photo of <{name}> {class_word}"
    if caption is None or not caption.strip():
        return base
    caption = caption.strip()
    if f"<{name}>" in caption:
        return caption
    return f"{base}, {caption}"


# A base model folder may carry its own calibration set: prompts in its domain and its vocabulary (the demo
# model's captions, say), used instead of the bundled everyday prompts, which such a model cannot read.
MODEL_CALIBRATION_FILE = "cns_calibration_prompts.txt"
MIN_CALIBRATION_PROMPTS = 16


def calibration_prompts(model_dir: Path | None = None) -> list[str]:
    """The calibration set: prompts used to find neurons active for almost any prompt (and protected by the
    self-regulariser). The base model's own `cns_calibration_prompts.txt` when its folder has one, else the
    bundled everyday set."""
    return list(_calibration_set(_own_file(model_dir))[0])


def calibration_id(model_dir: Path | None = None) -> str:
    """Names the calibration set in caches and revisions: "builtin-v1:" (bundled) or "model-v1:" (the base
    model's file) + the first 12 hex of the sha256 of its prompts joined by newlines."""
    return _calibration_set(_own_file(model_dir))[1]


def _own_file(model_dir: Path | None) -> tuple[str, int, int] | None:
    """(path, mtime_ns, size) of the model's calibration file, if any: the cache key of its parsed set, so an
    edited file is read again."""
    if model_dir is None:
        return None
    path = Path(model_dir) / MODEL_CALIBRATION_FILE
    if not path.is_file():
        return None
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size


@lru_cache(maxsize=4)
def _calibration_set(key: tuple[str, int, int] | None) -> tuple[tuple[str, ...], str]:
    import hashlib

    own = key[0] if key else None
    if own is None:
        from importlib.resources import files

        text, kind = (files("cns_cli") / "data" / "calibration_prompts.txt").read_text(encoding="utf-8"), "builtin-v1"
    else:
        try:
            text, kind = Path(own).read_text(encoding="utf-8"), "model-v1"
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read the base model's calibration prompts {own}: {e}") from None
    lines = (line.strip() for line in text.splitlines())
    prompts = tuple(line for line in lines if line and not line.startswith("#"))
    if len(prompts) < MIN_CALIBRATION_PROMPTS:
        raise UsageError(f"{own} has {len(prompts)} calibration prompts; it needs at least "
                         f"{MIN_CALIBRATION_PROMPTS} (one per line), or delete it to use the bundled set")
    return prompts, f"{kind}:" + hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:12]
