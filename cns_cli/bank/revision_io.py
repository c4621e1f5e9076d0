"""Reading and writing revision files and HEAD, with errors that say which file is wrong and why."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import BankFormatError, BankVersionError
from .atomic import canonical_json
from .models import BASE_FIELDS_1_2, FORMAT_MAJOR, FORMAT_MINOR, Revision

MAX_REVISION_BYTES = 64 * 1024 * 1024  # a cap so a hostile file cannot make us parse gigabytes of JSON
HEAD_NAME = "HEAD"
# What every "HEAD is broken" message advises (not changing HEAD by hand: a restore records what it did).
RECOVER_HINT = "`cns verify` lists the intact revisions and `cns restore N` makes a new HEAD from one of them"


def revision_name(number: int) -> str:
    return f"revisions/{number:06d}.json"


def number_ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 3, 5, 7, 8] -> "0-3, 5, 7-8" (how messages list revisions)."""
    runs: list[list[int]] = []  # [first, last] of each run of consecutive numbers
    for n in sorted(set(numbers)):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs) or "none"


def parse_head(raw: bytes) -> int:
    """HEAD holds one decimal revision number and a newline."""
    text = raw.decode("ascii", errors="replace")
    if not text.endswith("\n") or not text[:-1].isdigit() or len(text) > 16:
        raise BankFormatError(
            f"HEAD must hold one revision number, found {text[:40]!r}; {RECOVER_HINT}"
        )
    return int(text[:-1])


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"duplicate key {dup!r}")
    return dict(pairs)


def _reject_float_specials(token: str) -> float:
    raise ValueError(f"{token} is not allowed (JSON has no NaN or Infinity)")


def _reject_non_finite(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):  # e.g. 1e400 parses as inf
        raise ValueError(f"{token} is out of range for a finite number")
    return value


def _object_ref_nodes(data: dict) -> list[Any]:
    """The places where the format puts object references (basis.object, caches.general_neurons and each
    concept's delta/embedding). Free-form maps (annotations, training, stats) may hold a "path" key too."""

    def get(node: Any, key: str) -> Any:
        return node.get(key) if isinstance(node, dict) else None

    nodes = [get(get(data, "basis"), "object"), get(get(data, "caches"), "general_neurons")]
    concepts = get(data, "concepts")
    for concept in concepts.values() if isinstance(concepts, dict) else []:
        nodes += [get(concept, "delta"), get(concept, "embedding")]
    return nodes


def _check_paths(data: dict, where: str) -> None:
    """Object paths get their own messages before schema validation: the dangerous cases are named."""
    for node in _object_ref_nodes(data):
        value = node.get("path") if isinstance(node, dict) else None
        if isinstance(value, str):
            if value.startswith(("/", "\\")) or (len(value) > 1 and value[1] == ":"):
                raise BankFormatError(f"{where}: object path {value!r} is absolute; paths must be relative to the bank")
            if ".." in value.replace("\\", "/").split("/") or "\\" in value:
                raise BankFormatError(f"{where}: object path {value!r} escapes the bank; it must be objects/<sha256>.safetensors")


def _prune_unknown(data: Any, model: type[BaseModel]) -> Any:
    """Drop fields this reader does not know, recursively (used only for files of a newer minor version,
    whose additions are optional by the versioning rules)."""
    if not isinstance(data, dict):
        return data
    out = {}
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        out[key] = _prune_value(value, field.annotation)
    return out


def _prune_value(value: Any, annotation: Any) -> Any:
    import typing

    args = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _prune_unknown(value, annotation)
    for arg in args:  # Optional[Model], dict[str, Model]
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            if isinstance(value, dict) and typing.get_origin(annotation) is dict:
                return {k: _prune_unknown(v, arg) for k, v in value.items()}
            return _prune_unknown(value, arg)
    return value


def parse_revision(raw: bytes, where: str) -> Revision:
    """Parse and validate one revision file. `where` names it in error messages."""
    if len(raw) > MAX_REVISION_BYTES:
        raise BankFormatError(f"{where} is larger than {MAX_REVISION_BYTES >> 20} MiB; it is not a cns revision")
    try:
        data = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_float_specials,
            parse_float=_reject_non_finite,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        raise BankFormatError(f"{where} is not valid JSON ({e}); restore it from a backup or run `cns verify`") from None
    if not isinstance(data, dict):
        raise BankFormatError(f"{where} must hold a JSON object")
    version = data.get("format_version")
    if not isinstance(version, str) or not re.fullmatch(r"[0-9]{1,16}\.[0-9]{1,16}", version):
        raise BankFormatError(f"{where} has no valid format_version (MAJOR.MINOR)")
    major, minor = (int(p) for p in version.split("."))
    if major != FORMAT_MAJOR:
        raise BankVersionError(
            f"{where} uses bank format {version}, this cns reads format {FORMAT_MAJOR}.x; "
            f"{'upgrade cns (pip install -U cns-cli)' if major > FORMAT_MAJOR else 'convert the bank with an older cns'}"
        )
    _check_paths(data, where)
    if minor > FORMAT_MINOR:
        data = _prune_unknown(data, Revision)
    try:
        # strict: "3", true or 8.0 are not integers (the JSON Schema says so too)
        return Revision.model_validate(data, strict=True)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise BankFormatError(f"{where} does not follow the bank format: {loc}: {first['msg']}{more}") from None


def dump_revision(rev: Revision) -> bytes:
    """Canonical bytes of a revision (what a writer stores and what round-trips byte-exactly). The base fields
    added in format 1.2 are written only when set, so a 1.0 / 1.1 revision keeps its bytes (SPEC "Canonical JSON")."""
    doc = rev.model_dump(mode="json")
    for name in BASE_FIELDS_1_2:
        if doc["base"][name] is None:
            del doc["base"][name]
    return canonical_json(doc)
