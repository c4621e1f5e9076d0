"""A damaged bank: a missing or corrupt object names the concept it belongs to and the command that fixes
it, and `cns verify` works on a garbage HEAD, saying which revisions are intact and how to get one back."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import bankfactory as bf
from cns_cli.bank import Bank
from cns_cli.bank.history import forget
from cns_cli.bank.integrity import find_damage, require_intact
from cns_cli.bank.revision_io import revision_name
from cns_cli.bank.verify import verify
from cns_cli.cli import app
from cns_cli.errors import IntegrityError

runner = CliRunner()


def cns(*args: str):
    return runner.invoke(app, list(args))


def short(ref) -> str:
    return f"objects/{ref.sha256[:12]}….safetensors"


def corrupt(bank: Bank, ref) -> None:
    p = bank.object_path(ref)
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))


# -- C: the message names the concept and the fix ---------------------------------------------------------------


def test_missing_object_names_its_concept_and_the_fix(bank):
    head = bank.head()
    ref = head.concepts["concept-1"].delta
    bank.object_path(ref).unlink()
    with pytest.raises(IntegrityError) as e:
        require_intact(bank, head)
    assert str(e.value) == (
        f"the files of concept concept-1 are damaged ({short(ref)}: missing); `cns forget concept-1` removes it "
        "(or restore the file from a backup); `cns verify` lists every problem")
    assert "cns undo" not in str(e.value)
    require_intact(bank, head, ["concept-0"])  # the other concept alone is fine
    # and the advice works: after forgetting it, HEAD is usable again
    forget(bank, "concept-1")
    require_intact(Bank.open(bank.root), Bank.open(bank.root).head())


def test_several_damaged_concepts_in_one_message(bank):
    head = bank.head()
    a, b = head.concepts["concept-0"].embedding, head.concepts["concept-1"].delta
    corrupt(bank, a)
    bank.object_path(b).write_bytes(b"short")
    with pytest.raises(IntegrityError) as e:
        require_intact(bank, head)
    msg = str(e.value)
    assert msg.startswith(f"the files of concepts concept-0, concept-1 are damaged ({short(a)}: sha256 mismatch")
    assert f"; {short(b)}: size 5 bytes, the revision says {b.size}); " in msg
    assert msg.endswith("`cns forget concept-0` and `cns forget concept-1` remove them (or restore the files from a "
                        "backup); `cns verify` lists every problem")


def test_damaged_basis_says_every_concept_needs_it(bank):
    head = bank.head()
    bank.object_path(head.basis.object).unlink()
    with pytest.raises(IntegrityError, match=rf"^the bank's basis object is damaged \({short(head.basis.object)}: "
                                             r"missing\); every concept is built on it, .*restored from a backup .*"
                                             r"`cns verify` lists every problem$"):
        require_intact(bank, head)
    damage = find_damage(bank, head, basis=False)  # embeddings alone do not need the basis
    assert not damage


def test_apply_bank_checks_every_object_before_touching_the_pipeline(bank):
    from cns_cli.model.bank_apply import apply_bank

    head = bank.head()
    ref = head.concepts["concept-0"].embedding
    bank.object_path(ref).unlink()
    with pytest.raises(IntegrityError, match=r"^the files of concept concept-0 are damaged .*`cns forget concept-0`"):
        apply_bank(None, bank, head)  # fails before using the pipeline at all
    with pytest.raises(AttributeError):  # only concept-1: its objects are fine, so it goes on to the pipeline
        apply_bank(None, bank, head, ["concept-1"])


def test_read_object_messages_do_not_suggest_undo(bank):
    ref = bank.head().concepts["concept-0"].delta
    bank.object_path(ref).unlink()
    with pytest.raises(IntegrityError) as e:
        bank.read_object(ref)
    assert "cns undo" not in str(e.value) and "restore the file from a backup" in str(e.value)


def test_forget_on_a_bank_missing_a_carried_object_is_not_an_internal_error(bank, unchanged):
    bank.object_path(bank.head().basis.object).unlink()
    check = unchanged(bank.root, healthy=False)
    r = cns("--bank", str(bank.root), "forget", "concept-0")
    assert r.exit_code == 2 and "internal" not in r.stderr
    assert "is missing, so nothing was committed; restore the file from a backup" in r.stderr
    check()


# -- D: verify on a garbage HEAD ----------------------------------------------------------------------------------


def test_verify_with_garbage_head_lists_intact_revisions(bank):
    (bank.root / "HEAD").write_bytes(b"garbage\n")
    r = cns("--bank", str(bank.root), "verify", "--json")
    assert r.exit_code == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["head"] is None and doc["history"] == []
    assert doc["problems"] == [{"where": "HEAD", "problem": "HEAD must hold one revision number, found 'garbage\\n'"}]
    assert doc["intact"] == [0, 1, 2] and doc["revisions_checked"] == 3 and doc["objects_checked"] == 5
    assert doc["notes"] == [{"where": "revisions/",
                             "note": "intact revisions: 0-2; `cns restore 2` makes a new HEAD from the newest"}]

    r = cns("--bank", str(bank.root), "verify")
    assert r.exit_code == 1
    assert "problem HEAD: HEAD must hold one revision number" in r.stdout
    assert "note    revisions/: intact revisions: 0-2; `cns restore 2` makes a new HEAD from the newest" in r.stdout

    # and the advice works
    r = cns("--bank", str(bank.root), "restore", "2")
    assert r.exit_code == 0 and r.stdout.startswith("restored revision 2; now at revision 3")
    assert cns("--bank", str(bank.root), "verify").exit_code == 0


def test_verify_with_head_naming_a_missing_revision(bank):
    (bank.root / "HEAD").write_bytes(b"40\n")
    report = verify(Bank.open(bank.root))
    assert [p["where"] for p in report.problems] == ["HEAD"]
    assert report.problems[0]["problem"] == "HEAD names revision 40 but revisions/000040.json is missing"
    assert report.intact == [0, 1, 2] and report.notes[-1]["note"].startswith("intact revisions: 0-2; `cns restore 2`")


def test_garbage_head_and_a_damaged_newest_revision(bank):
    (bank.root / "HEAD").write_bytes(b"\xff\n")
    ref = bank.revision(2).concepts["concept-1"].delta
    bank.object_path(ref).unlink()
    report = verify(Bank.open(bank.root))
    assert report.intact == [0, 1]
    notes = {n["where"]: n["note"] for n in report.notes}
    assert notes == {
        "revisions/000002.json": f"damaged: {ref.path}: missing",
        "revisions/": "intact revisions: 0-1; `cns restore 1` makes a new HEAD from the newest",
    }


def test_damaged_head_revision_suggests_the_newest_intact_one_in_its_history(bank):
    forget(bank, "concept-0")  # 3
    (bank.root / revision_name(9)).write_bytes((bank.root / revision_name(1)).read_bytes().replace(
        b'"number": 1', b'"number": 9'))  # an intact revision outside HEAD's history, numbered higher
    ref = bank.head().concepts["concept-1"].embedding
    corrupt(bank, ref)
    report = verify(Bank.open(bank.root))
    assert not report.ok and [p["where"] for p in report.problems] == [ref.path]
    assert report.intact == [0, 1, 9] and report.history == [3, 2, 1, 0]
    assert report.notes[-1] == {"where": "revisions/", "note": (
        "intact revisions: 0-1, 9; `cns restore 1` makes a new HEAD from the newest in HEAD's history")}


def test_intact_head_gets_no_restore_advice(bank):
    ref = bank.revision(1).concepts["concept-0"].delta
    forget(bank, "concept-0")
    corrupt(bank, ref)  # only revisions 1 and 2 use it
    report = verify(bank)  # HEAD (3) is healthy: the damage of older revisions is a warning
    assert report.ok and report.problems == [] and [w["where"] for w in report.warnings] == [ref.path]
    assert report.intact == [0, 3]
    assert report.notes == [{"where": "revisions/", "note": "intact revisions: 0, 3"}]
    assert not verify(bank, strict=True).ok


def test_a_missing_parent_breaks_the_history(bank):
    (bank.root / revision_name(1)).unlink()
    report = verify(Bank.open(bank.root))  # HEAD (2) is healthy: its lost parent is a warning
    assert report.ok and report.problems == []
    assert report.warnings == [{"where": "revisions/000001.json", "warning": "missing (revision 2 names it as its parent)"}]
    assert not verify(Bank.open(bank.root), strict=True).ok
    assert report.history == [2] and report.intact == [0, 2]
    # revision 0 may or may not be in HEAD's history: it is only counted as intact, not called a leftover
    assert [n["where"] for n in report.notes] == ["revisions/"]


def test_verify_still_refuses_a_folder_that_is_not_a_bank(tmp_path):
    (tmp_path / "photos").mkdir()
    r = cns("--bank", str(tmp_path / "photos"), "verify")
    assert r.exit_code == 2 and "is not a cns bank" in r.stderr
    r = cns("--bank", str(tmp_path / "nothing"), "verify", "--json")
    assert r.exit_code == 2 and "no bank at" in r.stderr and r.stdout == ""
