"""`cns verify`: check every revision from HEAD back to 0 and every object they reference.

Problems make the bank unusable or untrustworthy (exit 1). Notes are harmless leftovers of interrupted
writers (temp files, a revision numbered past HEAD, unreferenced objects) that a later commit replaces.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from ..errors import BankFormatError
from . import layout
from .atomic import TMP_PREFIX
from .models import ObjectRef, Revision
from .revision_io import revision_name
from .store import Bank


@dataclass
class Report:
    head: int | None = None
    revisions_checked: int = 0
    objects_checked: int = 0
    problems: list[dict] = field(default_factory=list)  # {"where": path, "problem": text}
    notes: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {
            "ok": self.ok, "head": self.head, "revisions_checked": self.revisions_checked,
            "objects_checked": self.objects_checked, "problems": self.problems, "notes": self.notes,
        }


def _check_object_bytes(bank: Bank, ref: ObjectRef) -> str | None:
    path = bank.object_path(ref)
    if not path.is_file():
        return "missing"
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    if size != ref.size:
        return f"size {size} bytes, the revision says {ref.size}"
    if h.hexdigest() != ref.sha256:
        return f"sha256 mismatch (content is {h.hexdigest()[:12]}…): the file is corrupt"
    return None


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


def verify(bank: Bank) -> Report:
    report = Report()
    try:
        head = bank.head_number()
    except BankFormatError as e:
        report.problems.append({"where": "HEAD", "problem": str(e)})
        return report
    report.head = head
    referenced: set[str] = set()
    checked: dict[str, str | None] = {}
    for n in range(head, -1, -1):
        try:
            rev = bank.revision(n)
        except BankFormatError as e:
            report.problems.append({"where": revision_name(n), "problem": str(e)})
            continue
        report.revisions_checked += 1
        for ref in rev.objects():
            referenced.add(ref.path)
            if ref.path not in checked:
                checked[ref.path] = _check_object_bytes(bank, ref)
                if checked[ref.path]:
                    report.problems.append({"where": ref.path, "problem": f"{checked[ref.path]} (referenced by {revision_name(n)})"})
        if n == head:
            # Tensor contents are checked against HEAD, the revision every command uses; older revisions
            # get the byte-level check above (their objects are immutable and were checked when written).
            broken = {p["where"] for p in report.problems}
            report.problems += [p for p in _check_contents(bank, rev) if p["where"] not in broken]
    report.objects_checked = len(checked)

    for path in sorted((bank.root / "revisions").iterdir()):
        m = re.fullmatch(r"([0-9]{6,})\.json", path.name)
        if m and int(m.group(1)) > head:
            report.notes.append({"where": f"revisions/{path.name}", "note": "past HEAD: left by an interrupted write; ignored"})
        elif path.name.startswith(TMP_PREFIX):
            report.notes.append({"where": f"revisions/{path.name}", "note": "temp file of an interrupted write"})
    for path in sorted(bank.root.glob(f"{TMP_PREFIX}*")):
        report.notes.append({"where": path.name, "note": "temp file of an interrupted write"})
    objects = bank.root / "objects"
    for path in sorted(objects.iterdir()) if objects.is_dir() else []:
        rel = f"objects/{path.name}"
        if path.name.startswith(TMP_PREFIX):
            report.notes.append({"where": rel, "note": "temp file of an interrupted write"})
        elif rel not in referenced:
            report.notes.append({"where": rel, "note": "not referenced by any revision up to HEAD"})
    return report
