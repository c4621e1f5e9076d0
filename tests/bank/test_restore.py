"""History that cannot be rewritten (format 1.1): a commit never replaces a revision file, numbers skip past
every file on disk, `parent` is the HEAD a revision was made from and history is the chain of parents.
And `restore`: any revision's state as a new revision, also when HEAD is damaged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import bankfactory as bf
from cns_cli.bank import FORMAT_VERSION, Bank, Operation
from cns_cli.bank.history import forget, restore, state_of, undo
from cns_cli.bank.models import Caches
from cns_cli.bank.revision_io import revision_name
from cns_cli.bank.verify import verify
from cns_cli.cli import app
from cns_cli.errors import BankFormatError, UsageError

runner = CliRunner()


def cns(*args: str):
    return runner.invoke(app, list(args))


def revision_files(root) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "revisions").iterdir())}


def object_bytes(bank: Bank, rev) -> dict[str, bytes]:
    return {ref.path: bank.read_object_bytes(ref) for ref in rev.objects()}


@pytest.fixture(scope="module")
def _twelve(tmp_path_factory):
    path = tmp_path_factory.mktemp("twelve") / "b.cnsbank"
    bf.build_bank(path, 11)  # revisions 0 .. 11, HEAD 11
    return path


@pytest.fixture
def twelve(_twelve, tmp_path):
    import shutil

    shutil.copytree(_twelve, tmp_path / "b.cnsbank")
    return tmp_path / "b.cnsbank"


# -- A: the repro -----------------------------------------------------------------------------------


def test_head_edited_back_then_forget_rewrites_nothing(twelve):
    """12 revisions, `echo 10 > HEAD`, `cns forget`: revision 11 used to be silently replaced."""
    (twelve / "HEAD").write_bytes(b"10\n")
    before = revision_files(twelve)
    assert sorted(before) == [f"{n:06d}.json" for n in range(12)]

    r = cns("--bank", str(twelve), "forget", "concept-3", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["revision"] == 12

    after = revision_files(twelve)
    assert {k: after[k] for k in before} == before, "a committed revision file changed"
    assert sorted(after) == sorted(before) + ["000012.json"]
    bank = Bank.open(twelve)
    new = bank.revision(12)
    assert (new.number, new.parent, new.format_version) == (12, 10, FORMAT_VERSION)
    assert sorted(new.concepts) == sorted(bank.revision(10).concepts.keys() - {"concept-3"})
    assert (twelve / "HEAD").read_bytes() == b"12\n"

    # the log is HEAD's history: 12, then its parent 10, down to 0 (11 is not in it)
    log = json.loads(cns("--bank", str(twelve), "log", "--json").stdout)["revisions"]
    assert [e["revision"] for e in log] == [12, *range(10, -1, -1)]
    assert [e["parent"] for e in log][:3] == [10, 9, 8]
    assert [r.number for r in bank.history()] == [12, *range(10, -1, -1)]

    # verify: ok; revision 11 is a note that says how to get it back, not "an interrupted write"
    r = cns("--bank", str(twelve), "verify", "--json")
    assert r.exit_code == 0, r.stdout
    report = json.loads(r.stdout)
    assert report["ok"] and report["head"] == 12 and report["history"] == [12, *range(10, -1, -1)]
    assert report["intact"] == list(range(13)) and report["revisions_checked"] == 13
    only_11 = sorted(ref.path for ref in bank.revision(11).objects()
                     if ref.path not in {r.path for r in bank.revision(10).objects()})
    assert len(only_11) == 2  # concept-10's delta and embedding, learned in revision 11
    assert report["notes"] == [{"where": "revisions/000011.json", "note": (
        "not in HEAD's history: left by an interrupted write or by HEAD moved by hand; "
        "`cns restore 11` brings its state back")}] + [
        {"where": p, "note": "not referenced by any revision in HEAD's history"} for p in only_11]

    # and revision 11's state can be brought back
    r = cns("--bank", str(twelve), "restore", "11")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("restored revision 11; now at revision 13 (concept-0, concept-1, concept-10,")
    assert Bank.open(twelve).head().concepts == bank.revision(11).concepts
    assert revision_files(twelve)["000011.json"] == before["000011.json"]


def test_undo_after_head_was_moved_follows_parents(twelve):
    (twelve / "HEAD").write_bytes(b"5\n")
    bank = Bank.open(twelve)
    learned = bf.learn(bank, "late", seed=77)
    assert (learned.number, learned.parent) == (12, 5)
    assert learned.concepts["late"].learned_in == 12  # the revision that learned it, not parent + 1
    back = undo(bank)
    assert (back.number, back.parent, back.operation.undone, back.operation.restores) == (13, 12, 12, 5)
    assert back.concepts == bank.revision(5).concepts
    assert verify(bank).ok


def test_every_commit_numbers_past_the_highest_file(bank):
    # a leftover far past HEAD (an interrupted write of another tool) is never replaced either
    leftover = bank.root / revision_name(9)
    leftover.write_bytes((bank.root / revision_name(2)).read_bytes().replace(b'"number": 2', b'"number": 9'))
    saved = leftover.read_bytes()
    with bank.transaction() as tx:
        assert (tx.parent.number, tx.number) == (2, 10)
    rev = forget(bank, "concept-0")
    assert (rev.number, rev.parent) == (10, 2) and leftover.read_bytes() == saved
    assert [r.number for r in bank.history()] == [10, 2, 1, 0]


# -- B: restore ---------------------------------------------------------------------------------------------


def test_restore_forward_after_too_many_undos(bank):
    r2 = bank.revision(2)
    original_bytes = object_bytes(bank, r2)
    undo(bank)  # 3: state of 1
    undo(bank)  # 4: state of 0 (no concepts, no basis)
    assert bank.head().concepts == {} and bank.head().basis is None
    rev = restore(bank, 2, argv=["cns", "restore", "2"])
    assert (rev.number, rev.parent, rev.operation.kind, rev.operation.restores) == (5, 4, "restore", 2)
    assert rev.operation.undone is None and rev.operation.argv == ["cns", "restore", "2"]
    assert rev.concepts == r2.concepts and rev.basis == r2.basis and rev.caches == r2.caches
    assert object_bytes(bank, rev) == original_bytes  # the very same objects, byte for byte
    assert state_of(bank, rev).number == 5  # a restore holds its own state
    assert verify(bank).ok and verify(bank).notes == []
    assert bank.revision(2) == r2


def test_undo_right_after_restore_undoes_the_restore(bank):
    forget(bank, "concept-1")  # 3: concept-0
    restore(bank, 2)  # 4: concept-0, concept-1
    back = undo(bank)  # 5: the state before the restore
    assert (back.operation.undone, back.operation.restores) == (4, 3)
    assert sorted(back.concepts) == ["concept-0"]
    again = undo(bank)  # 6: and one further back: before the forget
    assert (again.operation.undone, again.operation.restores) == (3, 2)
    assert sorted(again.concepts) == ["concept-0", "concept-1"]


def test_restore_an_undo_revision_and_revision_zero(bank):
    undo(bank)  # 3: state of 1
    forget(bank, "concept-0")  # 4: nothing
    rev = restore(bank, 3)  # an undo revision holds a full snapshot too
    assert sorted(rev.concepts) == ["concept-0"] and rev.operation.restores == 3
    empty = restore(bank, 0)
    assert empty.concepts == {} and empty.basis is None and empty.parent == rev.number
    assert verify(bank).ok


@pytest.mark.parametrize(
    "head",
    [(b"garbage\n", 3), (b"7\n", 8), (b"", 3)],
    ids=["garbage", "missing-revision", "empty"],
)
def test_restore_on_a_broken_head(bank, head):
    """The new revision is numbered past HEAD's number too (7, whose file is gone, may have named images)."""
    head, number = head
    (bank.root / "HEAD").write_bytes(head)
    with pytest.raises(BankFormatError):
        bank.head()
    told = []
    rev = restore(bank, 2, on_broken_head=told.append)
    assert (rev.number, rev.parent, rev.operation.restores) == (number, 2, 2)  # parent: the restored revision
    assert (bank.root / "HEAD").read_bytes() == f"{number}\n".encode()
    assert rev.concepts == bank.revision(2).concepts
    assert len(told) == 1 and "HEAD could not be read" in told[0] and "parent is revision 2" in told[0]
    report = verify(Bank.open(bank.root))
    assert report.ok and report.notes == [] and report.history == [number, 2, 1, 0]


def test_restore_when_heads_revision_is_corrupt(bank):
    (bank.root / revision_name(2)).write_bytes(b"{not json")
    r = cns("--bank", str(bank.root), "restore", "1")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "restored revision 1; now at revision 3 (concept-0)\n"
    assert "HEAD could not be read" in r.stderr and "000002.json is not valid JSON" in r.stderr
    rev = Bank.open(bank.root).head()
    assert (rev.number, rev.parent) == (3, 1)
    assert (bank.root / revision_name(2)).read_bytes() == b"{not json"  # left as it was
    report = verify(Bank.open(bank.root))
    assert report.ok
    # revision 2 is unreadable, so concept-1's objects (learned in 2) are referenced by no revision of HEAD's history
    concept_1 = sorted(p.name for p in (bank.root / "objects").iterdir()
                       if f"objects/{p.name}" not in {ref.path for ref in rev.objects()})
    assert [n["where"] for n in report.notes] == ["revisions/000002.json"] + [f"objects/{n}" for n in concept_1]
    assert len(concept_1) == 2
    assert report.notes[0]["note"].startswith("not in HEAD's history, and unreadable: revisions/000002.json is not valid JSON")


@pytest.mark.parametrize(
    "arg, message",
    [
        ("99", r"^revision 99 does not exist \(revisions on disk: 0-2\); `cns log` lists them$"),
        ("abc", r"^REV must be a revision number \(0, 1, 2, …\), not 'abc'; `cns log` lists them$"),
        ("-1", r"^REV must be a revision number .*not '-1'"),
        ("1.5", r"^REV must be a revision number"),
        ("2", r"^nothing to restore: HEAD \(revision 2\) is revision 2 \(concept-0, concept-1\)$"),
    ],
)
def test_restore_refusals_write_nothing(bank, unchanged, arg, message):
    check = unchanged(bank.root)
    with pytest.raises(UsageError, match=message):
        restore(bank, arg)
    check()


def test_restore_refuses_the_state_head_already_has(bank, unchanged):
    forget(bank, "concept-1")
    undo(bank)  # 4: the state of 2
    check = unchanged(bank.root)
    with pytest.raises(UsageError, match=r"HEAD \(revision 4\) already has the state of revision 2"):
        restore(bank, 2)
    check()


def test_restore_refuses_an_unreadable_revision(bank, unchanged):
    (bank.root / revision_name(1)).write_bytes(b"[]")
    check = unchanged(bank.root, healthy=False)
    with pytest.raises(UsageError, match=r"^revision 1 cannot be restored: revisions/000001\.json must hold a JSON "
                                         r"object; `cns verify` lists the intact revisions$"):
        restore(bank, 1)
    check()


def test_restore_refuses_damaged_objects(bank, unchanged):
    forget(bank, "concept-1")
    ref = bank.revision(2).concepts["concept-1"].embedding
    bank.object_path(ref).unlink()
    check = unchanged(bank.root, healthy=False)
    with pytest.raises(UsageError, match=r"^revision 2 cannot be restored: the files of concept concept-1 are damaged "
                                         rf"\(objects/{ref.sha256[:12]}….safetensors: missing\); `cns verify`"):
        restore(bank, 2)
    check()


def test_restore_drops_a_damaged_cache(bank):
    head = bank.head()
    with bank.transaction() as tx:
        ref = tx.put({bf.LAYER_K: np.array([1, 2], np.int32)}, "general_neurons")
        tx.commit(Operation(kind="forget", concept="concept-1"), concepts={"concept-0": head.concepts["concept-0"]},
                  caches=Caches(general_neurons=ref))
    intact = restore(bank, 2)  # revision 2 has no cache: copied exactly
    assert intact.caches == Caches()
    restored = restore(bank, 3)  # revision 3's cache is intact: kept
    assert restored.caches.general_neurons == ref
    forget(bank, "concept-0")
    bank.object_path(ref).unlink()
    dropped = restore(bank, 3)
    assert dropped.caches == Caches() and sorted(dropped.concepts) == ["concept-0"]


def test_restore_through_the_cli_and_the_log(bank):
    forget(bank, "concept-1")
    r = cns("--bank", str(bank.root), "restore", "2", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout) == {"revision": 4, "restores": 2, "parent": 3, "concepts": ["concept-0", "concept-1"]}
    r = cns("--bank", str(bank.root), "log")
    assert r.exit_code == 0
    first = r.stdout.splitlines()[2]
    assert first.split()[0] == "4" and "restore the state of revision 2" in first
    log = json.loads(cns("--bank", str(bank.root), "log", "--json").stdout)["revisions"]
    assert log[0]["operation"] == {"argv": log[0]["operation"]["argv"], "concept": None, "kind": "restore",
                                   "restores": 2, "undone": None}
    r = cns("--bank", str(bank.root), "restore", "99")
    assert r.exit_code == 2 and r.stdout == ""
    assert "revision 99 does not exist" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# -- the rules of the revision document -------------------------------------------------------------------------


def _doc(bank, n: int) -> dict:
    return json.loads((bank.root / revision_name(n)).read_text())


def _parse(doc: dict):
    from cns_cli.bank.revision_io import parse_revision

    return parse_revision(json.dumps(doc).encode(), "revisions/000009.json")


def test_parent_may_skip_in_1_1_but_not_in_1_0(bank):
    doc = _doc(bank, 2) | {"number": 9, "parent": 1}
    doc["concepts"]["concept-1"]["learned_in"] = 9
    assert _parse(doc).parent == 1
    with pytest.raises(BankFormatError, match=r"revision 9 \(format 1\.0\) must have parent 8, not 1"):
        _parse(doc | {"format_version": "1.0"})
    with pytest.raises(BankFormatError, match="must have a parent numbered below 9, not 9"):
        _parse(doc | {"parent": 9})


def test_restore_operation_rules(bank):
    doc = _doc(bank, 2) | {"number": 9, "parent": 2, "operation": {"kind": "restore", "restores": 1}}
    assert _parse(doc).operation.restores == 1
    bad = [
        ({"kind": "restore"}, "restores is set exactly on undo and restore operations"),
        ({"kind": "restore", "restores": 1, "undone": 2}, "undone is set exactly on undo operations"),
        ({"kind": "restore", "restores": 9}, "a restore must copy a revision numbered below its own"),
        ({"kind": "undo", "restores": 1}, "undone is set exactly on undo operations"),
        ({"kind": "forget", "concept": "x", "restores": 1}, "restores is set exactly"),
    ]
    for op, words in bad:
        with pytest.raises(BankFormatError, match=words):
            _parse(doc | {"operation": op})
    with pytest.raises(BankFormatError, match="restore operations need format 1.1"):
        _parse(doc | {"format_version": "1.0", "parent": 8})


def test_no_message_advises_editing_head(bank):
    for raw in (b"garbage\n", b"7\n"):
        (bank.root / "HEAD").write_bytes(raw)
        with pytest.raises(BankFormatError) as e:
            Bank.open(bank.root).head()
        text = str(e.value)
        assert "into HEAD" not in text and "`cns verify`" in text and "`cns restore N`" in text
    import pathlib

    import cns_cli

    for path in pathlib.Path(cns_cli.__file__).parent.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert "into HEAD" not in source and "edit HEAD" not in source, path
