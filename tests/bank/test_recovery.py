"""Issue 35, bank history: a lost HEAD or revision file, damage left in old revisions, missing objects. What
the user meets through the CLI: one line and exit 2 for a damaged bank, commands that go on where they can,
and revision numbers that never name two states."""

from __future__ import annotations

import os
import json

import bankfactory as bf
from cns_cli.bank import Bank
from cns_cli.bank.revision_io import revision_name
from tests.clitools import cns, one_line_error


def revision_files(root) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "revisions").iterdir())}


# -- 1: a new revision is numbered past every number used, HEAD's included ------------------------------------


def test_restore_after_the_head_revision_file_was_lost_takes_a_new_number(bank):
    """HEAD = 2 and revisions/000002.json lost: `cns restore 1` used to commit a new revision 2, so images named
    r2-… and exports stamped with revision 2 would have pointed at another state."""
    (bank.root / revision_name(2)).unlink()
    r = cns("--bank", bank.root, "restore", "1", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["revision"] == 3
    assert (bank.root / "HEAD").read_bytes() == b"3\n"
    assert not (bank.root / revision_name(2)).exists()
    assert Bank.open(bank.root).head().concepts.keys() == {"concept-0"}


# -- 2: a bank whose HEAD was deleted is still a bank ---------------------------------------------------------


def test_a_deleted_head_is_named_and_the_restore_it_advises_works(bank):
    (bank.root / "HEAD").unlink()
    before = revision_files(bank.root)
    for command in (["inspect"], ["log"], ["forget", "concept-0"], ["undo"], ["export", bank.root.parent / "out"]):
        line = one_line_error(cns("--bank", bank.root, *command))
        assert "HEAD is missing" in line and "`cns restore N`" in line and "latest intact: 2" in line, (command, line)
        assert "not a cns bank" not in line
    assert revision_files(bank.root) == before and not (bank.root / "HEAD").exists()
    r = cns("--bank", bank.root, "restore", "2")
    assert r.exit_code == 0, r.stderr
    assert "HEAD could not be read (HEAD is missing)" in r.stderr
    assert (bank.root / "HEAD").read_bytes() == b"3\n"
    head = Bank.open(bank.root).head()
    assert (head.parent, head.operation.restores, sorted(head.concepts)) == (2, 2, ["concept-0", "concept-1"])


def test_verify_reports_a_deleted_head_and_the_intact_revisions(bank):
    (bank.root / "HEAD").unlink()
    r = cns("--bank", bank.root, "verify", "--json")
    assert r.exit_code == 1, r.stderr
    doc = json.loads(r.stdout)
    assert {"where": "HEAD", "problem": "HEAD is missing"} in doc["problems"]
    assert doc["intact"] == [0, 1, 2]


def test_a_folder_with_an_empty_revisions_folder_is_still_not_a_bank(tmp_path):
    (tmp_path / "b" / "revisions").mkdir(parents=True)
    assert "is not a cns bank" in one_line_error(cns("--bank", tmp_path / "b", "log"))


# -- 7: advice never to delete what may hold data ----------------------------------------------------------------


def test_an_empty_bank_path_is_refused_not_taken_for_the_current_folder(tmp_path, monkeypatch, dog_photos, no_model_load):
    """`--bank ''` was the current folder: learn said it "already holds other files … or remove it first"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    for args in (["--bank", "", "learn", "dog", dog_photos, "--class", "dog"],
                 ["learn", "dog", dog_photos, "--class", "dog", "--bank", ""], ["--bank", " ", "inspect"]):
        line = one_line_error(cns(*args))
        assert "--bank is empty" in line and "remove" not in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_bank_path_with_a_nul_character_is_one_line(tmp_path, monkeypatch, no_model_load):
    """Found by the contract fuzzer: `init --bank 'a<NUL>b'` ended in "internal error: ValueError: embedded null byte"."""
    monkeypatch.chdir(tmp_path)
    for args in (["init", "--bank", "a\0b"], ["--bank", "a\0b", "inspect"], ["log", "--bank", "a\0b"]):
        line = one_line_error(cns(*args))
        assert "NUL" in line, line
    assert list(tmp_path.iterdir()) == []


def test_a_bank_another_learn_created_meanwhile_says_wait_for_its_lock(tmp_path, monkeypatch, dog_photos):
    """Two `cns learn` on a new path: the second finds the bank the first created (and is training into, holding
    its lock) when it goes to create one. It used to advise removing that bank."""
    from types import SimpleNamespace

    from cns_cli.bank.lock import WriterLock
    from cns_cli.learning import plan

    root = tmp_path / "new.cnsbank"
    held = []

    def first_learn_creates_it_meanwhile(*args, **kwargs):
        Bank.create(root, bf.make_base())
        held.append(WriterLock(root).__enter__())  # the first learn trains with the lock held
        return SimpleNamespace(base=bf.make_base())

    monkeypatch.setattr(plan, "open_session", first_learn_creates_it_meanwhile)
    try:
        line = one_line_error(cns("--bank", root, "learn", "dog", dog_photos, "--class", "dog"))
    finally:
        held[0].__exit__(None, None, None)
    assert "another cns command" in line and "wait for it" in line and "remove" not in line, line
    assert Bank.open(root).head().number == 0


# -- 4: a revision lost in the middle of the history ----------------------------------------------------------


def test_log_lists_a_lost_revision_and_goes_on_below_it(bank):
    (bank.root / revision_name(1)).unlink()
    r = cns("--bank", bank.root, "log", "--json")
    assert r.exit_code == 0, r.stderr
    entries = json.loads(r.stdout)["revisions"]
    assert [e["revision"] for e in entries] == [2, 1, 0]
    assert entries[1]["missing"].startswith("revisions/000001.json is missing") and entries[1]["operation"] is None
    assert entries[2]["operation"]["kind"] == "init" and entries[0]["missing"] is None
    r = cns("--bank", bank.root, "log")
    assert r.exit_code == 0, r.stderr
    assert "MISSING" in r.stdout and "init" in r.stdout
    assert "revision 1 is missing" in r.stderr and "cns verify" in r.stderr


def test_undo_onto_a_lost_revision_names_the_restore_that_steps_past_it(bank, unchanged):
    """HEAD 3 = learn concept-2 on revision 2, whose file is lost: undo cannot bring revision 2 back, and says
    which restore brings the newest intact earlier state (it used to say only that the file is missing)."""
    bf.learn(bank, "concept-2", seed=3, start=4)
    (bank.root / revision_name(2)).unlink()
    check = unchanged(bank.root, healthy=False)
    line = one_line_error(cns("--bank", bank.root, "undo"))
    assert "cannot undo revision 3" in line and "revisions/000002.json is missing" in line, line
    assert "`cns restore 1`" in line, line
    check()
    r = cns("--bank", bank.root, "restore", "1")
    assert r.exit_code == 0, r.stderr
    r = cns("--bank", bank.root, "undo", "--json")  # after the restore, undo works again: back to revision 3
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["restores"] == 3


# -- 5: inspect and log flag a missing object ------------------------------------------------------------------


def test_inspect_and_log_flag_a_missing_object(bank):
    hat = bank.head().concepts["concept-1"]
    bank.object_path(hat.delta).unlink()
    r = cns("--bank", bank.root, "inspect")
    assert r.exit_code == 0, r.stderr
    assert "warning:" in r.stderr and "concept concept-1 are damaged" in r.stderr and "missing" in r.stderr
    assert "`cns forget concept-1`" in r.stderr
    r = cns("--bank", bank.root, "inspect", "--json")
    assert "concept concept-1" in json.loads(r.stdout)["damage"]
    r = cns("--bank", bank.root, "log", "--json")
    entries = {e["revision"]: e for e in json.loads(r.stdout)["revisions"]}
    assert entries[2]["damaged"] == [{"where": hat.delta.path, "problem": "missing"}]
    assert entries[1]["damaged"] == [] and entries[0]["damaged"] == []
    r = cns("--bank", bank.root, "log")
    assert "DAMAGED" in r.stdout and "revision 2 has missing or damaged files" in r.stderr


def test_inspect_of_a_healthy_bank_warns_of_nothing(bank):
    r = cns("--bank", bank.root, "inspect", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["damage"] is None and "warning" not in r.stderr


# -- 3: following verify's or generate's advice gives a bank that verifies ------------------------------------


def corrupt(bank: Bank, ref) -> None:
    path = bank.object_path(ref)
    path.write_bytes(b"x" + path.read_bytes()[1:])


def test_after_the_advised_restore_verify_passes_and_warns_of_the_old_damage(bank):
    hat = bank.head().concepts["concept-1"]
    corrupt(bank, hat.delta)
    r = cns("--bank", bank.root, "verify")
    assert r.exit_code == 1 and "cns restore 1" in r.stdout, r.stdout
    assert cns("--bank", bank.root, "restore", "1").exit_code == 0
    r = cns("--bank", bank.root, "verify")
    assert r.exit_code == 0, r.stdout
    assert "ok: HEAD is healthy; 1 warning(s)" in r.stdout and f"warning {hat.delta.path}" in r.stdout
    r = cns("--bank", bank.root, "verify", "--strict", "--json")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["problems"] == [] and [w["where"] for w in doc["warnings"]] == [hat.delta.path] and not doc["ok"]


def test_after_the_advised_forget_verify_passes(bank):
    hat = bank.head().concepts["concept-1"]
    bank.object_path(hat.embedding).unlink()
    assert cns("--bank", bank.root, "forget", "concept-1").exit_code == 0
    r = cns("--bank", bank.root, "verify", "--json")
    assert r.exit_code == 0, r.stdout
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["problems"] == [] and len(doc["warnings"]) == 1


def test_damage_that_head_uses_still_fails_verify(bank):
    """concept-0's delta is used by HEAD (2) and by revision 1: a problem, not a warning."""
    corrupt(bank, bank.head().concepts["concept-0"].delta)
    r = cns("--bank", bank.root, "verify", "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["warnings"] == []


# -- 6: a relocate revision (format 1.4) only re-points the base -------------------------------------------------


def test_undo_after_a_relocate_undoes_the_operation_before_it_and_keeps_the_new_place(bank):
    from cns_cli.bank import Operation

    with bank.transaction() as tx:
        moved = tx.parent.base.model_copy(update={"location": "moved-test-model"})
        tx.commit(Operation(kind="relocate", argv=["cns", "relocate", "moved-test-model"]), base=moved)
    r = cns("--bank", bank.root, "undo", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["undone"], doc["restores"], doc["concepts"]) == (2, 1, ["concept-0"])
    head = Bank.open(bank.root).head()
    assert head.base.location == "moved-test-model" and head.format_version == "1.4"
    r = cns("--bank", bank.root, "verify")
    assert r.exit_code == 0, r.stdout


def test_undo_onto_a_lost_revision_never_advises_a_restore_of_heads_own_state(bank):
    """HEAD 3 restores revision 1 over a damaged 2, then 2's file is lost: undo cannot reach 2, and restoring 1
    would change nothing, so it is not what the message advises."""
    from cns_cli.bank.history import restore

    restore(bank, 1)
    (bank.root / revision_name(2)).unlink()
    line = one_line_error(cns("--bank", bank.root, "undo"))
    assert "cannot undo revision 3" in line and "cns restore 1" not in line, line
    assert "`cns restore 0`" in line, line


def test_a_path_that_is_not_utf8_is_one_line_for_every_path_option(tmp_path, monkeypatch, dog_bank_readonly, no_model_load):
    """Found by the contract fuzzer: `cns export $'\\xff'` (Python hands the byte over as '\\udcff') ended in an
    internal error (UnicodeEncodeError) where the output is strict UTF-8; --bank and --out alike."""
    monkeypatch.chdir(tmp_path)
    bad = os.fsdecode(b"\xff")
    for args in (["export", bad, "--bank", dog_bank_readonly], ["--bank", bad, "inspect"],
                 ["generate", "<dog>", "--out", bad, "--bank", dog_bank_readonly], ["learn", "cat", bad, "--bank", "x"]):
        line = one_line_error(cns(*args))
        assert "not UTF-8" in line and "\\xff" in line, line
    assert list(tmp_path.iterdir()) == []
