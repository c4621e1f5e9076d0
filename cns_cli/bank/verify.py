"""`cns verify`: check HEAD, HEAD's history (the chain of `parent` links down to revision 0), every object
they reference, and every other revision file on disk.

Problems make the bank unusable or untrustworthy (exit 1): a broken HEAD, a revision of HEAD's history that
is missing or invalid, a damaged object it references, a bad tensor in HEAD. Notes are harmless: temp files
and unreferenced objects of interrupted writers, and revision files outside HEAD's history (an interrupted
write, or HEAD moved by hand), which `cns restore N` can still bring back. Works on a bank whose HEAD is
garbage: then it lists the intact revisions (file valid, objects' bytes intact) to restore from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import BankFormatError
from . import layout
from .atomic import TMP_PREFIX
from .models import ObjectRef, Revision
from .revision_io import number_ranges, revision_name
from .store import Bank, BrokenHeadError


@dataclass
class Report:
    head: int | None = None
    revisions_checked: int = 0  # revision files on disk that parse and validate
    objects_checked: int = 0
    problems: list[dict] = field(default_factory=list)  # {"where": path, "problem": text}
    # {"where": path, "warning": text}: damage in older revisions of HEAD's history only. The revision in use is
    # healthy, so verify passes (exit 0) and warns; `cns verify --strict` counts them as problems.
    warnings: list[dict] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)  # {"where": path, "note": text}
    history: list[int] = field(default_factory=list)  # HEAD's chain as far as it could be followed, newest first
    intact: list[int] = field(default_factory=list)  # revisions whose file and objects are intact, ascending

    strict: bool = False  # warnings fail the check too (`cns verify --strict`)

    @property
    def ok(self) -> bool:
        return not self.problems and not (self.strict and self.warnings)

    def to_json(self) -> dict:
        return {
            "ok": self.ok, "strict": self.strict, "head": self.head, "revisions_checked": self.revisions_checked,
            "objects_checked": self.objects_checked, "problems": self.problems, "warnings": self.warnings,
            "notes": self.notes,
            "history": self.history, "intact": self.intact,
        }


def _check_contents(bank: Bank, rev: Revision) -> list[dict]:
    """Object contents against the revision that references them (shapes, ranges, finiteness)."""
    out = []

    def check(ref: ObjectRef, kind: str, fn) -> None:
        try:
            got = bank.read_object_metadata(ref).get("kind")
            problems = [f"metadata kind is {got!r}, expected {kind!r}"] if got != kind else []
            problems += fn(bank.read_object(ref))
        except BankFormatError as e:
            problems = [str(e)]
        out.extend({"where": ref.path, "problem": p} for p in problems)

    if rev.basis is not None:
        check(rev.basis.object, "basis", lambda t: layout.check_basis(t, rev.basis.dim))
    if rev.caches.general_neurons is not None:
        check(rev.caches.general_neurons, "general_neurons", lambda t: layout.check_general_neurons(t, rev))
    for name, c in sorted(rev.concepts.items()):
        check(c.delta, "delta", lambda t, c=c: [f"concept {name!r}: {p}" for p in layout.check_delta(t, c, rev)])
        check(c.embedding, "embedding", lambda t: [f"concept {name!r}: {p}" for p in layout.check_embedding(t, rev)])
    return out


def verify(bank: Bank, strict: bool = False) -> Report:
    """Problems: what breaks the revision in use (HEAD, its file, its objects and their tensors). Warnings: damage
    that only older revisions of HEAD's history have (a lost or invalid revision file, an object no newer revision
    uses): HEAD is healthy, but undo or restore cannot reach those states. `strict` fails on warnings too."""
    report = Report(strict=strict)
    numbers = bank.revision_numbers()
    revs: dict[int, Revision] = {}
    unreadable: dict[int, str] = {}
    for n in numbers:
        try:
            revs[n] = bank.revision(n)
        except BankFormatError as e:
            unreadable[n] = str(e)
    report.revisions_checked = len(revs)

    bytes_ok: dict[str, str | None] = {}  # object path -> why it is damaged (None: intact), checked once

    def damaged(ref: ObjectRef) -> str | None:
        if ref.path not in bytes_ok:
            bytes_ok[ref.path] = bank.object_problem(ref)
        return bytes_ok[ref.path]

    # HEAD and its history
    try:
        head: int | None = bank.head_number()
    except BrokenHeadError as e:  # the advice to restore is given by the note below
        report.problems.append({"where": "HEAD", "problem": e.why})
        head = None
    report.head = head
    chain: list[int] = []
    complete = head is not None  # the chain was followed down to revision 0
    n, child = head, None
    while n is not None:
        if n in unreadable or n not in revs:
            why = unreadable.get(n) or f"missing (revision {child} names it as its parent)"
            _add(report, n == head, revision_name(n), why)
            complete = False
            break
        chain.append(n)
        n, child = revs[n].parent, n
    report.history = chain

    content_bad: set[str] = set()
    reported: set[str] = set()  # each damaged object once, named with the newest revision that uses it
    for n in chain:
        for ref in revs[n].objects():
            if ref.path not in reported and (why := damaged(ref)):
                reported.add(ref.path)
                _add(report, n == head, ref.path, f"{why} (referenced by {revision_name(n)})")
        if n == head:
            # Tensor contents are checked against HEAD, the revision every command uses; older revisions
            # get the byte-level check above (their objects are immutable and were checked when written).
            broken = {p["where"] for p in report.problems}
            found = [p for p in _check_contents(bank, revs[n]) if p["where"] not in broken]
            content_bad = {p["where"] for p in found}
            report.problems += found

    # every other revision file: intact (restorable) or not
    on_chain = set(chain)
    for n in numbers:
        where = revision_name(n)
        if n in on_chain or (n in unreadable and any(p["where"] == where for p in report.problems + report.warnings)):
            continue
        if n in unreadable:
            report.notes.append({"where": where, "note": f"not in HEAD's history, and unreadable: {unreadable[n]}"})
            continue
        bad = [f"{ref.path}: {why}" for ref in revs[n].objects() if (why := damaged(ref))]
        if complete:
            if bad:
                report.notes.append({"where": where, "note": "not in HEAD's history (left by an interrupted write or "
                                     f"by HEAD moved by hand), and damaged: {'; '.join(bad)}"})
            else:
                report.notes.append({"where": where, "note": "not in HEAD's history: left by an interrupted write or "
                                     f"by HEAD moved by hand; `cns restore {n}` brings its state back"})
        elif bad:  # HEAD's history is unknown: only say what is damaged; the intact ones are summed up below
            report.notes.append({"where": where, "note": f"damaged: {'; '.join(bad)}"})

    report.intact = [n for n in sorted(revs) if not any(damaged(ref) for ref in revs[n].objects())
                     and not (n == head and any(ref.path in content_bad for ref in revs[n].objects()))]
    report.objects_checked = len(bytes_ok)
    if report.problems or report.warnings:
        report.notes.append({"where": "revisions/", "note": _intact_note(report.intact, chain, head)})

    # leftovers of interrupted writers
    for path in sorted((bank.root / "revisions").iterdir()):
        if path.name.startswith(TMP_PREFIX):
            report.notes.append({"where": f"revisions/{path.name}", "note": "temp file of an interrupted write"})
    for path in sorted(bank.root.glob(f"{TMP_PREFIX}*")):
        report.notes.append({"where": path.name, "note": "temp file of an interrupted write"})
    if complete:
        referenced, scope = {ref.path for n in chain for ref in revs[n].objects()}, "in HEAD's history"
    else:
        referenced, scope = {ref.path for rev in revs.values() for ref in rev.objects()}, "on disk"
    objects = bank.root / "objects"
    for path in sorted(objects.iterdir()) if objects.is_dir() else []:
        rel = f"objects/{path.name}"
        if path.name.startswith(TMP_PREFIX):
            report.notes.append({"where": rel, "note": "temp file of an interrupted write"})
        elif rel not in referenced:
            report.notes.append({"where": rel, "note": f"not referenced by any revision {scope}"})
    return report


def _add(report: Report, in_head: bool, where: str, why: str) -> None:
    """A problem when HEAD, the revision in use, is hit; else a warning about an older revision of its history."""
    if in_head:
        report.problems.append({"where": where, "problem": why})
    else:
        report.warnings.append({"where": where, "warning": why})


def _intact_note(intact: list[int], chain: list[int], head: int | None) -> str:
    """Which revisions a user can go back to, and the command (only when HEAD itself is not intact)."""
    if not intact:
        return "intact revisions: none; restore the damaged files from a backup"
    text = f"intact revisions: {number_ranges(intact)}"
    if head is not None and head in intact:
        return text
    in_history = [n for n in chain if n in intact]
    if in_history:
        return text + f"; `cns restore {in_history[0]}` makes a new HEAD from the newest in HEAD's history"
    return text + f"; `cns restore {max(intact)}` makes a new HEAD from the newest"
