"""What cns reads must never be where it writes: every output folder is checked against the bank, its base
model and the base's --config folder before anything is written (issue 35: `cns export ./base --format
pipeline --force` used to overwrite the bank's own base model, and `cns verify` could not tell).

An output overlaps a protected path when it is that path, lies inside it, or (for commands that may replace
or remove what is already in their output folder: export --force, demo, bench) contains it. Paths are
compared after Path.resolve(), so a symlink or `..` cannot hide an overlap. `cns generate` only ever adds
new files under fresh names, so a --out that merely contains the bank (`--out .` next to ./.cnsbank) is fine.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from .errors import UsageError


class Protected(NamedTuple):
    """A path cns reads from and never writes to; `what` names it in messages ("this bank's base model")."""

    what: str
    path: Path


def of_bank(bank_root: Path, pointer=None) -> list[Protected]:
    """The bank folder and, given its base pointer (a BaseModelPointer), its base model and --config folder."""
    return [Protected("the bank", Path(bank_root)), *([] if pointer is None else of_base(pointer.kind, pointer.location,
                                                                                         pointer.config))]


def of_base(kind: str, location: str, config: str | Path | None = None) -> list[Protected]:
    """The files of a base model on this machine: its folder (local or bundled), its single .safetensors file, its
    Hugging Face cache folder (hub ids), and the --config folder a single file loads with."""
    from .model.loading import BaseSpec, model_dir

    found = []
    folder = model_dir(BaseSpec(kind, location))
    if folder is not None:
        found.append(Protected("the base model", folder))
    elif kind == "single-file":
        found.append(Protected("the base model", Path(location)))
    elif kind == "hub":
        found.append(Protected("the base model's download", _hub_cache_folder(location)))
    if config is not None:
        found.append(Protected("the base model's --config folder", Path(config)))
    return found


def of_base_named(base: str, config: str | Path | None = None) -> list[Protected]:
    """`of_base` of what the user typed after --base (and --config); a bad name fails here, before any write."""
    from .model.loading import resolve_base

    spec = resolve_base(base, config)
    return of_base(spec.kind, spec.location, spec.config)


def _hub_cache_folder(repo_id: str) -> Path:
    """Where huggingface_hub keeps every snapshot of `repo_id` (its cache layout: models--org--name)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"


def _resolved(path: Path) -> Path:
    """`path` absolute with every link followed; a link loop (RuntimeError on Python 3.11, OSError ELOOP later)
    keeps the loop's own name, so the write that follows fails with ELOOP and says so (errors.from_os_error)."""
    path = Path(path).expanduser()
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return path.absolute()


def refuse_overlap(out: Path, flag: str, protected: list[Protected], contains: bool = True) -> None:
    """Raise UsageError (one line, exit 2) if output `out` is, lies inside or (with `contains`) contains a
    protected path. Writes nothing."""
    target = _resolved(out)
    for item in protected:
        kept = _resolved(item.path)
        if target == kept or kept in target.parents:
            how, fix = ("is" if target == kept else "lies inside"), "pass a folder outside it"
        elif contains and target in kept.parents:
            how, fix = "contains", "pass a folder that does not hold it"
        else:
            continue
        raise UsageError(f"{flag} {out} {how} {item.what} ({kept}); cns never writes there, so nothing was "
                         f"touched: {fix}")
