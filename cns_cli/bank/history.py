"""Revisions that only rearrange what the bank already holds: forget, undo and restore. No tensors are
touched, so these need neither torch nor the base model."""

from __future__ import annotations

from ..errors import BankFormatError, ConceptError, UsageError
from .integrity import find_damage
from .models import Caches, Operation, Revision
from .names import check_concept_name
from .revision_io import number_ranges, revision_name
from .store import Bank


def state_of(bank: Bank, rev: Revision) -> Revision:
    """The revision whose content `rev` holds: undo revisions copy an earlier state (`restores`); a relocate
    only re-points the base, so it holds its parent's state (undo after it undoes the operation before it);
    every other revision, a restore included, holds its own (so undo after a restore undoes the restore)."""
    while rev.operation.kind == "relocate":
        rev = bank.revision(rev.parent)
    return bank.revision(rev.operation.restores) if rev.operation.kind == "undo" else rev


def parse_revision_number(text: str | int, what: str = "REV") -> int:
    """A revision number given on the command line ("7"), or a one-line UsageError."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        s = str(text).strip()
        if not (s.isascii() and s.isdigit() and len(s) <= 16):
            raise UsageError(f"{what} must be a revision number (0, 1, 2, …), not {str(text)[:40]!r}; `cns log` lists them")
        value = int(s)
    if value < 0:
        raise UsageError(f"{what} must be a revision number (0, 1, 2, …), not {value}; `cns log` lists them")
    return value


def read_existing_revision(bank: Bank, number: int, why: str) -> Revision:
    """Revision `number` for a command that names it (restore, export --revision), or a one-line UsageError
    saying that it does not exist or cannot be read, and what to do."""
    if not (bank.root / revision_name(number)).is_file():
        raise UsageError(f"revision {number} does not exist (revisions on disk: "
                         f"{number_ranges(bank.revision_numbers())}); `cns log` lists them")
    try:
        return bank.revision(number)
    except BankFormatError as e:
        raise UsageError(f"revision {number} {why}: {e}; `cns verify` lists the intact revisions") from None


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
        current = _undo_read(bank, tx.parent, tx.parent.number, lambda: state_of(bank, tx.parent), tx.parent)
        if current.parent is None:
            raise UsageError("nothing to undo: the bank is at its initial state (see `cns log`)")
        target = _undo_read(bank, current, current.parent, lambda: state_of(bank, bank.revision(current.parent)),
                            tx.parent)
        op = Operation(kind="undo", undone=current.number, restores=target.number, argv=argv or [])
        return tx.commit(op, concepts=target.concepts, basis=target.basis, caches=target.caches)


def _undo_read(bank: Bank, rev: Revision, lost_from: int, read, head: Revision):
    """`read()` (a revision undo needs to step back from `rev`), or, when its file is lost or invalid, one line
    saying so and which restore brings back the newest intact revision below `lost_from` whose state HEAD does not
    already have. Undo does not skip the lost revision on its own: that would undo two operations at once."""
    try:
        return read()
    except BankFormatError as e:
        why = str(e).split("; ")[0]
        latest = bank.latest_intact(below=lost_from, unlike=head)
        fix = (f"`cns restore {latest}` brings back revision {latest}, the newest intact earlier state"
               if latest is not None else "no intact earlier revision holds another state than HEAD's")
        raise BankFormatError(f"cannot undo revision {rev.number}: the state before it is lost ({why}); {fix} "
                              "(`cns log` shows the history)") from None


def restore(bank: Bank, rev: int | str, argv: list[str] | None = None, on_broken_head=None) -> Revision:
    """Record a revision whose state (concepts, basis, caches) is that of revision `rev`, any revision on
    disk: redo after too many undos, a checkout of an old state, or the way back from a damaged HEAD. Its
    parent is HEAD, or `rev` itself when HEAD cannot be read (`tx.head_error` says why).

    Refused, with nothing written, when `rev` does not exist or cannot be read, when the files of its
    concepts or basis are damaged (restoring them would only move the damage to HEAD), and when HEAD
    already has that state. A cache whose object is damaged is dropped (caches are derived from the base
    and recomputed when needed). `on_broken_head(message)` is told when HEAD could not be read."""
    number = parse_revision_number(rev)
    with bank.transaction(allow_broken_head=True) as tx:
        target = read_existing_revision(bank, number, "cannot be restored")
        damage = find_damage(bank, target)
        if damage:
            raise UsageError(f"revision {number} cannot be restored: {damage.what()}; `cns verify` lists the intact revisions")
        head = tx.parent
        if head is not None and (head.concepts, head.basis) == (target.concepts, target.basis):
            shown = ", ".join(sorted(target.concepts)) or "no concepts"
            same = "is" if head.number == number else "already has the state of"
            raise UsageError(f"nothing to restore: HEAD (revision {head.number}) {same} revision {number} ({shown})")
        if head is None:
            tx.parent = target
        caches = target.caches
        if caches.general_neurons is not None and bank.object_problem(caches.general_neurons):
            caches = Caches()
        op = Operation(kind="restore", restores=number, argv=argv or [])
        new = tx.commit(op, concepts=target.concepts, basis=target.basis, caches=caches)
    if head is None and on_broken_head is not None:
        why = tx.head_error.split("; ")[0]  # without any advice to run restore: that is what just happened
        on_broken_head(f"HEAD could not be read ({why}); the new revision's parent is revision {number}")
    return new


def with_current_base(bank: Bank, rev: Revision) -> Revision:
    """`rev` for loading its model: with HEAD's base pointer when both record the same base (fingerprint), since
    a `cns relocate` after `rev` was written moved the pointer and HEAD says where the model is now. Unchanged
    when HEAD cannot be read or names another base."""
    try:
        head = bank.head()
    except BankFormatError:
        return rev
    if head.number == rev.number or head.base.fingerprint != rev.base.fingerprint:
        return rev
    return rev.model_copy(update={"base": head.base})
