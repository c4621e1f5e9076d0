"""Checking, before a command uses a revision, that the objects it needs are intact, so that a damaged file
gives one message naming the concept(s) it belongs to and what fixes it (not a bare object path halfway
through loading a model)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import IntegrityError
from .models import ObjectRef, Revision
from .store import Bank

VERIFY_HINT = "`cns verify` lists every problem"


def short_path(ref: ObjectRef) -> str:
    """objects/ab12cd34ef56….safetensors: enough to recognise the file in `cns verify`'s list."""
    return f"objects/{ref.sha256[:12]}….safetensors"


@dataclass
class Damage:
    """What is wrong with the objects of some concepts of one revision."""

    basis: tuple[ObjectRef, str] | None = None  # (ref, why) if the basis object is damaged
    concepts: dict[str, list[tuple[ObjectRef, str]]] = field(default_factory=dict)  # name -> [(ref, why)]

    def __bool__(self) -> bool:
        return self.basis is not None or bool(self.concepts)

    def what(self) -> str:
        """'the files of concept hat are damaged (objects/…: missing)' / 'the basis object … is damaged …'."""
        if self.basis is not None:
            ref, why = self.basis
            return (f"the bank's basis object is damaged ({short_path(ref)}: {why}); every concept is built on it, "
                    "so none can be used until the file is restored from a backup (every revision since the "
                    "first `cns learn` shares it, so restoring another revision does not help)")
        names = list(self.concepts)
        files = "; ".join(f"{short_path(ref)}: {why}" for bad in self.concepts.values() for ref, why in bad)
        return f"the files of concept{'s' if len(names) > 1 else ''} {', '.join(names)} are damaged ({files})"

    def fix(self) -> str:
        """What the user can do about it, for a command that reads HEAD."""
        if self.basis is not None:
            return VERIFY_HINT
        names = list(self.concepts)
        forgets = " and ".join(f"`cns forget {n}`" for n in names)
        return (f"{forgets} remove{'s' if len(names) == 1 else ''} {'it' if len(names) == 1 else 'them'} "
                f"(or restore the file{'s' if sum(map(len, self.concepts.values())) > 1 else ''} from a backup); "
                f"{VERIFY_HINT}")


def find_damage(bank: Bank, rev: Revision, names: list[str] | None = None, basis: bool = True,
                quick: bool = False) -> Damage:
    """Byte-check (size and sha256) the objects of concepts `names` of `rev` (default: all) and, if
    `basis` and some concept is checked, the basis object they are cut from. `quick`: existence and size only
    (a stat per file), for commands that show a bank without using its tensors."""
    names = sorted(rev.concepts) if names is None else sorted(names)
    damage = Damage()
    seen: dict[str, str | None] = {}
    problem = bank.object_quick_problem if quick else bank.object_problem

    def why(ref: ObjectRef) -> str | None:
        if ref.path not in seen:
            seen[ref.path] = problem(ref)
        return seen[ref.path]

    if basis and names and rev.basis is not None and (w := why(rev.basis.object)):
        damage.basis = (rev.basis.object, w)
    for name in names:
        c = rev.concepts[name]
        bad = [(ref, w) for ref in (c.delta, c.embedding) if (w := why(ref))]
        if bad:
            damage.concepts[name] = bad
    return damage


def require_intact(bank: Bank, rev: Revision, names: list[str] | None = None, basis: bool = True,
                   fix: str | None = None) -> None:
    """Raise one IntegrityError naming every damaged concept among `names` (default: all) of `rev`, or the
    damaged basis, and the fix (`fix` replaces the advice for damaged concepts, for a revision that is not
    HEAD); return if all their objects are intact."""
    damage = find_damage(bank, rev, names, basis)
    if damage:
        advice = fix if fix is not None and damage.basis is None else damage.fix()
        raise IntegrityError(f"{damage.what()}; {advice}")
