"""Validation of the user-chosen strings that end up in a bank: concept names and class words.

A concept name becomes a tokenizer token (`<name>`), a JSON key and, on export, a file name on any OS,
so it is held to a strict alphabet. Each rejection names the offending part and a valid alternative.
"""

from __future__ import annotations

import re
import unicodedata

from ..errors import ConceptError

NAME_MAX = 64
# Lower case only: CLIP tokenizers lower-case their input, so "<Dog>" could never be matched as typed.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)
CLASS_WORD_PATTERN = r"^[^<>\x00-\x1f\x7f]{1,64}$"


def _suggest(name: str) -> str:
    """A valid name close to `name` (it must itself pass check_concept_name): accents are taken off the letters
    first ("été" -> "ete": NFKD splits "é" into "e" and a combining accent, which is dropped), then every other
    character outside the alphabet becomes "-"."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", plain.lower()).strip("-_")[:NAME_MAX].rstrip("-_")
    return cleaned or "my-concept"


def _shown(name: str, most: int = 40) -> str:
    """The name as quoted in a message: a 300-character name is cut, not repeated in full."""
    return repr(name) if len(name) <= most else f"{name[:most]!r}… ({len(name)} characters)"


def check_concept_name(name: str) -> str:
    """Return `name` if it may name a concept, else raise ConceptError saying why and what to use."""
    if not name:
        raise ConceptError("concept name is empty; give a name such as 'dog'")
    problems = [
        ("/" in name, "contains '/'"),
        ("\\" in name, "contains '\\'"),
        (".." in name, "contains '..'"),
        (any(c.isspace() for c in name), "contains whitespace"),
        (any(unicodedata.category(c) == "Cc" for c in name), "contains control characters"),
        ("<" in name or ">" in name, "contains '<' or '>' (the brackets are added for you: <name>)"),
        (len(name) > NAME_MAX, f"is longer than {NAME_MAX} characters"),
        (name != name.lower(), "has upper-case letters (tokenizers lower-case prompts)"),
    ]
    for bad, why in problems:
        if bad:
            raise ConceptError(f"concept name {_shown(name)} {why}; use something like {_suggest(name)!r}")
    if not _NAME_RE.fullmatch(name):
        raise ConceptError(
            f"concept name {_shown(name)} may only use a-z, 0-9, '-' and '_' and must start with a letter or "
            f"digit; use something like {_suggest(name)!r}"
        )
    return name


def check_class_word(word: str) -> str:
    """A class word ("dog", "teddy bear") is plain prompt text: 1-64 characters, no brackets or controls."""
    if not re.fullmatch(CLASS_WORD_PATTERN, word) or not word.strip():  # fullmatch: '$' would accept 'dog\n'
        raise ConceptError(
            f"class word {word!r} must be 1-64 characters of plain text without '<', '>' or control "
            "characters; e.g. --class dog"
        )
    return word


def token_for(name: str) -> str:
    """The placeholder token a concept adds to the tokenizer."""
    return f"<{name}>"


def vector_tokens(token: str, k: int) -> list[str]:
    """The k tokenizer tokens of a concept token whose embedding has k vectors, in row order: `<dog>`, `<dog>_1`,
    …, `<dog>_{k-1}` (diffusers' textual-inversion convention: `load_textual_inversion` adds these for a [k, d]
    embedding, and its pipelines' `maybe_convert_prompt` reads `<dog>` in a prompt as all k of them). k = 1: the
    token alone. No concept token can be one of another's: `<name>_i` does not end in `>`."""
    return [token] + [f"{token}_{i}" for i in range(1, k)]
