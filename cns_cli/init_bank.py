"""`cns init`: create a bank on a base model (loads it once to fingerprint its K/V weights)."""

from __future__ import annotations

from pathlib import Path

from .bank import Bank, Revision
from .checks import check_out_dir
from .model import loading
from .protected import of_base, refuse_overlap


def init_bank(root: Path, base: str, argv: list[str] | None = None, config: str | Path | None = None) -> Revision:
    """A new bank on `base` (with `config`, the diffusers folder a single-file checkpoint loads with)."""
    Bank.check_creatable(root)  # an existing bank or other files: said before anything loads
    spec = loading.resolve_base(base, config)  # fails fast on a bad spec, before the (slow) model load
    refuse_overlap(root, "--bank", of_base(spec.kind, spec.location, spec.config))
    check_out_dir(root, "--bank")  # a read-only place: say so before the model load, not after it
    pipe = loading.load_pipeline(spec)  # looked up at each call, so tests' no_model_load fixture holds here too
    return Bank.create(root, loading.describe_base(spec, pipe), argv=argv).head()
