"""The one way to build a personalised pipeline from a bank: load the base a revision points to, check it is
the base the bank was built on, check the objects are intact, apply the concepts, place it where it runs.

`cns generate`, `cns export --format pipeline`, `cns learn` (the base at W_{t-1}) and `cns bench` all call
`load_personalised`; to change the concepts of a loaded pipeline without reloading the base, use
bank_apply.apply_concepts (its handle's `remove()` restores the base exactly).
"""

from __future__ import annotations

from ..bank import Bank, Revision
from ..bank.integrity import require_intact


def load_personalised(bank: Bank, rev: Revision, names: list[str] | None = None, device: str = "cpu",
                      dtype=None, *, fix: str | None = None, spec=None):
    """The base pipeline of `rev` with its concepts `names` applied (default: every concept; [] for the bare,
    fingerprint-checked base), in float32 on the CPU, then placed on `device` in `dtype` (default float32).

    In this order, so that each failure comes before the expensive step it would spoil: the objects of those
    concepts (and the basis) are byte-checked before the model loads (IntegrityError naming the concept; `fix`
    replaces the advice, for a revision that is not HEAD); the loaded base's K/V fingerprint must be the one the
    bank records (ModelMismatchError); the deltas are added at full precision before the pipeline is placed.
    `spec` (a loading.BaseSpec) loads the base from elsewhere than the revision's pointer (`--config`)."""
    import torch

    from . import loading
    from .bank_apply import apply_bank

    require_intact(bank, rev, names, fix=fix)
    pipe = loading.load_pipeline(spec or loading.spec_of(rev.base))
    loading.check_matches(rev.base, pipe)
    apply_bank(pipe, bank, rev, names, check=False)
    return loading.place(pipe, device, dtype or torch.float32)
