"""Revisions that only rearrange what the bank already holds: forget and undo. No tensors are touched,
so these need neither torch nor the base model."""

from __future__ import annotations

from ..errors import ConceptError, UsageError
from .models import Operation, Revision
from .names import check_concept_name
from .store import Bank


def state_of(bank: Bank, rev: Revision) -> Revision:
    """The non-undo revision whose content `rev` holds (undo revisions copy an earlier state)."""
    return bank.revision(rev.operation.restores) if rev.operation.kind == "undo" else rev


def forget(bank: Bank, name: str, argv: list[str] | None = None) -> Revision:
    """New revision without concept `name`. Exact by construction: deltas are additive and each concept's
    objects are its own, so the remaining concepts are bit-for-bit what they were."""
    check_concept_name(name)
    with bank.transaction() as tx:
        concepts = dict(tx.parent.concepts)
        if name not in concepts:
            known = ", ".join(sorted(concepts)) or "none yet"
            raise ConceptError(f"no concept {name!r} in this bank (known: {known}); see `cns inspect`")
        del concepts[name]
        return tx.commit(Operation(kind="forget", concept=name, argv=argv or []), concepts=concepts)


def undo(bank: Bank, argv: list[str] | None = None) -> Revision:
    """Record a revision whose content is the state before HEAD's operation. Repeated undo steps further
    back; history is never rewritten (every revision stays on disk and in `cns log`)."""
    with bank.transaction() as tx:
        current = state_of(bank, tx.parent)
        if current.parent is None:
            raise UsageError("nothing to undo: the bank is at its initial state (see `cns log`)")
        target = state_of(bank, bank.revision(current.parent))
        op = Operation(kind="undo", undone=current.number, restores=target.number, argv=argv or [])
        return tx.commit(op, concepts=target.concepts, basis=target.basis, caches=target.caches)
