"""`cns init`: create a bank on a base model (loads it once to fingerprint its K/V weights)."""

from __future__ import annotations

from pathlib import Path

from .bank import Bank, Revision
from .errors import BankExistsError
from .model.loading import describe_base, load_pipeline, resolve_base
from .protected import of_base, refuse_overlap


def init_bank(root: Path, base: str, argv: list[str] | None = None, config: str | Path | None = None) -> Revision:
    """A new bank on `base` (with `config`, the diffusers folder a single-file checkpoint loads with)."""
    if (root / "HEAD").exists():
        raise BankExistsError(f"{root} already holds a bank; use it, or pass another --bank path")
    spec = resolve_base(base, config)  # fails fast on a bad spec, before the (slow) model load
    refuse_overlap(root, "--bank", of_base(spec.kind, spec.location, spec.config))
    pipe = load_pipeline(spec)
    return Bank.create(root, describe_base(spec, pipe), argv=argv).head()
