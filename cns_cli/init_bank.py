"""`cns init`: create a bank on a base model (loads it once to fingerprint its K/V weights)."""

from __future__ import annotations

from pathlib import Path

from .bank import Bank, Revision
from .bank.store import is_bank_folder
from .errors import BankExistsError
from .model.loading import describe_base, load_pipeline, resolve_base


def init_bank(root: Path, base: str, argv: list[str] | None = None, config: str | Path | None = None) -> Revision:
    """A new bank on `base` (with `config`, the diffusers folder a single-file checkpoint loads with)."""
    if is_bank_folder(root):
        raise BankExistsError(f"{root} already holds a bank; use it, or pass another --bank path for a new one")
    spec = resolve_base(base, config)  # fails fast on a bad spec, before the (slow) model load
    pipe = load_pipeline(spec)
    return Bank.create(root, describe_base(spec, pipe), argv=argv).head()
