"""forget and undo: exact, recorded as new revisions, never rewriting history."""

from __future__ import annotations

import pytest

import bankfactory as bf
from cns_cli.bank import Bank
from cns_cli.bank.history import forget, state_of, undo
from cns_cli.bank.revision_io import revision_name
from cns_cli.bank.verify import verify
from cns_cli.errors import ConceptError, UsageError


def object_bytes(bank: Bank, rev) -> dict[str, bytes]:
    return {ref.path: bank.read_object_bytes(ref) for ref in rev.objects()}


def assert_chain(bank: Bank, kinds: list[str]) -> None:
    """History from 0 to HEAD has exactly these operation kinds, each revision's parent the one before (true of
    these linear histories: numbers skip only past revision files outside HEAD's history, see test_restore.py)."""
    revs = list(Bank.open(bank.root).history())[::-1]
    assert [r.operation.kind for r in revs] == kinds
    assert [r.number for r in revs] == list(range(len(kinds)))
    assert [r.parent for r in revs] == [None] + list(range(len(kinds) - 1))
    assert sorted(p.name for p in (bank.root / "revisions").iterdir()) == [f"{n:06d}.json" for n in range(len(kinds))]


def test_forget_unknown_concept_lists_known_ones(bank, unchanged):
    check = unchanged(bank.root)
    with pytest.raises(ConceptError, match=r"no concept 'cat' in this bank \(known: concept-0, concept-1\)"):
        forget(bank, "cat")
    check()


def test_forget_on_an_empty_bank(empty_bank, unchanged):
    check = unchanged(empty_bank.root)
    with pytest.raises(ConceptError, match=r"no concept 'dog' in this bank \(known: none yet\)"):
        forget(empty_bank, "dog")
    check()


def test_forget_removes_exactly_one_concept(bank):
    before = bank.head()
    rev = forget(bank, "concept-0", argv=["cns", "forget", "concept-0"])
    assert rev.number == 3 and rev.parent == 2
    assert (rev.operation.kind, rev.operation.concept, rev.operation.argv) == ("forget", "concept-0", ["cns", "forget", "concept-0"])
    assert list(rev.concepts) == ["concept-1"]
    assert rev.concepts["concept-1"] == before.concepts["concept-1"]  # same object refs, bit for bit
    assert rev.basis == before.basis and rev.base == before.base and rev.caches == before.caches
    # the forgotten concept's objects stay: older revisions reference them
    for ref in (before.concepts["concept-0"].delta, before.concepts["concept-0"].embedding):
        assert bank.object_path(ref).is_file()
    report = verify(bank)
    assert report.ok and report.notes == []
    assert_chain(bank, ["init", "learn", "learn", "forget"])
    with pytest.raises(ConceptError, match=r"no concept 'concept-0' .*known: concept-1\)"):
        forget(bank, "concept-0")


def test_forget_then_undo_restores_byte_identical(bank):
    original = bank.head()
    original_bytes = object_bytes(bank, original)
    forget(bank, "concept-1")
    rev = undo(bank, argv=["cns", "undo"])
    assert rev.number == 4
    assert (rev.operation.kind, rev.operation.undone, rev.operation.restores) == ("undo", 3, 2)
    assert rev.operation.argv == ["cns", "undo"]
    assert rev.concepts == original.concepts and rev.basis == original.basis and rev.caches == original.caches
    assert object_bytes(bank, rev) == original_bytes
    for name in ("concept-0", "concept-1"):
        c = rev.concepts[name]
        assert bank.read_object(c.delta).keys() == bank.read_object(original.concepts[name].delta).keys()
    assert state_of(bank, rev).number == 2
    assert verify(bank).ok
    assert_chain(bank, ["init", "learn", "learn", "forget", "undo"])


def test_repeated_undo_steps_further_back_then_stops(bank):
    r1, r2 = bank.revision(1), bank.revision(2)
    a = undo(bank)  # revision 3: back to the state of 1
    assert (a.number, a.operation.undone, a.operation.restores) == (3, 2, 1)
    assert a.concepts == r1.concepts and list(a.concepts) == ["concept-0"]
    b = undo(bank)  # revision 4: undo of undo steps further back, to 0
    assert (b.number, b.operation.undone, b.operation.restores) == (4, 1, 0)
    assert b.concepts == {}
    # revision 0 has no basis; undo restores that too
    assert b.basis is None
    before = bf.snapshot(bank.root)
    with pytest.raises(UsageError, match=r"^nothing to undo: the bank is at its initial state"):
        undo(bank)
    assert bf.snapshot(bank.root) == before
    assert bank.head_number() == 4
    assert verify(bank).ok
    assert_chain(bank, ["init", "learn", "learn", "undo", "undo"])
    # nothing was rewritten: the learned revisions are still there, byte for byte
    assert bank.revision(1) == r1 and bank.revision(2) == r2


def test_undo_on_a_fresh_bank(empty_bank, unchanged):
    check = unchanged(empty_bank.root)
    with pytest.raises(UsageError, match="nothing to undo"):
        undo(empty_bank)
    check()


def test_undo_after_new_work_reverts_only_that_work(bank):
    undo(bank)  # 3: state of 1 (concept-0 only)
    bf.learn(bank, "late", seed=42)  # 4: concept-0 + late
    rev = undo(bank)  # 5: back to what 3 held, i.e. the state of 1
    assert (rev.operation.undone, rev.operation.restores) == (4, 1)
    assert list(rev.concepts) == ["concept-0"]
    assert rev.concepts["concept-0"] == bank.revision(1).concepts["concept-0"]
    assert_chain(bank, ["init", "learn", "learn", "undo", "learn", "undo"])


def test_every_operation_is_recorded(bank):
    ops = [lambda: forget(bank, "concept-0"), lambda: undo(bank), lambda: forget(bank, "concept-1"),
           lambda: bf.learn(bank, "third", seed=3), lambda: undo(bank), lambda: undo(bank)]
    for i, op in enumerate(ops, start=3):
        rev = op()
        assert rev.number == i and bank.head_number() == i
        assert (bank.root / revision_name(i)).is_file()
    assert_chain(bank, ["init", "learn", "learn", "forget", "undo", "forget", "learn", "undo", "undo"])
    # 4 undid 3 (restores 2). The last two undos: 7 undoes 6 (learn third) -> state of 5; 8 then undoes 5
    # (forget concept-1) -> the state of 4, which is the content of 2: `restores` always names a non-undo revision
    assert (bank.revision(4).operation.undone, bank.revision(4).operation.restores) == (3, 2)
    assert [(r.operation.undone, r.operation.restores) for r in (bank.revision(7), bank.revision(8))] == [(6, 5), (5, 2)]
    assert sorted(bank.head().concepts) == ["concept-0", "concept-1"]
    assert verify(bank).ok
