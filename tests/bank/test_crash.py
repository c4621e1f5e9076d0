"""Crash safety of the commit protocol (objects, then the revision file, then HEAD), with a real SIGKILL at each
step, and write failures (disk full, I/O errors) that must leave the bank at its previous revision. A revision
file, once on disk, is never replaced: not even the leftover of a killed writer."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

import bankfactory as bf
from cns_cli.bank import Bank, Operation, atomic
from cns_cli.bank.atomic import TMP_PREFIX
from cns_cli.bank.history import forget, undo
from cns_cli.bank.revision_io import parse_revision, revision_name
from cns_cli.bank.verify import verify
from cns_cli.errors import CommitError

# The child learns concept "crashed" (seed 99) and stops at the chosen step of the commit protocol, prints a
# marker and sleeps until the parent kills it. The hook monkeypatches the child's own modules: no production
# code has test hooks.
CHILD = r"""
import os, sys, time
from pathlib import Path
import bankfactory as bf
from cns_cli.bank import Bank, store
from cns_cli.bank.atomic import TMP_PREFIX

root, stage = sys.argv[1], sys.argv[2]
real_write, real_create, real_replace = store.atomic_write, store.create_exclusive, os.replace

def stop(marker):
    print(marker, flush=True)
    time.sleep(120)
    os._exit(3)

def hooked_write(path, data):
    if stage == "head" and path.name == "HEAD":
        stop("about-to-move-head")
    real_write(path, data)

def hooked_create(path, data):
    if stage == "revision" and path.parent.name == "revisions":
        stop("about-to-write-revision")
    real_create(path, data)

def hooked_replace(src, dst):
    # atomic_write has written and fsynced the temp file; stop before renaming it over the object
    if stage == "object-temp" and Path(dst).parent.name == "objects" and Path(src).name.startswith(TMP_PREFIX):
        stop("object-temp-written")
    real_replace(src, dst)

store.atomic_write = hooked_write
store.create_exclusive = hooked_create
os.replace = hooked_replace
bf.learn(Bank.open(root), "crashed", seed=99)
print("committed", flush=True)
"""


def crash(bank: Bank, stage: str, marker: str) -> int:
    proc = bf.spawn_python(CHILD, str(bank.root), stage)
    try:
        bf.wait_for_line(proc, marker)  # on failure it kills the child and reports its stderr
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        raise
    return bf.kill9(proc)


def new_files(before: dict, root: Path) -> set[str]:
    return set(bf.snapshot(root)) - set(before)


def assert_previous_state_intact(root: Path, before: dict) -> None:
    """Every file that existed before the crash is byte-identical; HEAD still names revision 2."""
    after = bf.snapshot(root)
    assert [k for k in before if after.get(k) != before[k]] == []
    opened = Bank.open(root)
    assert opened.head_number() == 2 and (root / "HEAD").read_bytes() == b"2\n"
    assert sorted(opened.head().concepts) == ["concept-0", "concept-1"]


def crashed_objects(root: Path, before: dict) -> set[str]:
    return {p for p in new_files(before, root) if p.startswith("objects/") and not p.startswith(f"objects/{TMP_PREFIX}")}


def test_killed_before_moving_head(bank):
    root = bank.root
    before = bf.snapshot(root)
    dead = crash(bank, "head", "about-to-move-head")

    assert_previous_state_intact(root, before)
    # the new revision file was completely written; it is a harmless leftover past HEAD
    leftover = root / revision_name(3)
    assert leftover.is_file()
    assert "crashed" in parse_revision(leftover.read_bytes(), "leftover").concepts
    objs = crashed_objects(root, before)
    assert len(objs) == 2  # delta + embedding (the basis already existed)
    assert new_files(before, root) == objs | {"revisions/000003.json"}  # no temp files

    report = verify(Bank.open(root))
    assert report.ok, report.problems
    assert report.head == 2 and report.history == [2, 1, 0] and report.intact == [0, 1, 2, 3]
    notes = {n["where"]: n["note"] for n in report.notes}
    leftover_note = ("not in HEAD's history: left by an interrupted write or by HEAD moved by hand; "
                     "`cns restore 3` brings its state back")
    assert notes == {
        "revisions/000003.json": leftover_note,
        **{p: "not referenced by any revision in HEAD's history" for p in objs},
    }

    # the next writer takes over the dead writer's lock and numbers its revision past the leftover, which it
    # never replaces (it holds a complete state that `cns restore 3` can still bring back)
    leftover_bytes = leftover.read_bytes()
    with bank.transaction() as tx:
        assert tx.stale_pid == dead and tx.parent.number == 2 and tx.number == 4
    rev = forget(bank, "concept-0")
    assert (rev.number, rev.parent) == (4, 2) and (root / "HEAD").read_bytes() == b"4\n"
    assert leftover.read_bytes() == leftover_bytes
    now = Bank.open(root)
    assert now.revision(4).operation.kind == "forget" and sorted(now.revision(4).concepts) == ["concept-1"]
    assert [r.number for r in now.history()] == [4, 2, 1, 0]
    report = verify(bank)
    assert report.ok and report.notes == [{"where": "revisions/000003.json", "note": leftover_note}] + [
        {"where": p, "note": "not referenced by any revision in HEAD's history"} for p in sorted(objs)]


def test_killed_before_writing_the_revision(bank):
    root = bank.root
    before = bf.snapshot(root)
    dead = crash(bank, "revision", "about-to-write-revision")

    assert_previous_state_intact(root, before)
    assert not (root / revision_name(3)).exists()
    objs = crashed_objects(root, before)
    assert len(objs) == 2 and new_files(before, root) == objs

    report = verify(Bank.open(root))
    assert report.ok, report.problems
    assert {n["where"]: n["note"] for n in report.notes} == {p: "not referenced by any revision in HEAD's history" for p in objs}

    # learning the same concept again reuses the identical objects (content-addressed), which become referenced
    with bank.transaction() as tx:
        assert tx.stale_pid == dead
    rev = bf.learn(bank, "crashed", seed=99)
    assert rev.number == 3
    assert {rev.concepts["crashed"].delta.path, rev.concepts["crashed"].embedding.path} == objs
    report = verify(bank)
    assert report.ok and report.notes == []


def test_killed_while_writing_an_object(bank):
    root = bank.root
    before = bf.snapshot(root)
    crash(bank, "object-temp", "object-temp-written")

    assert_previous_state_intact(root, before)
    added = new_files(before, root)
    assert len(added) == 1 and next(iter(added)).startswith(f"objects/{TMP_PREFIX}")
    report = verify(Bank.open(root))
    assert report.ok
    assert report.notes == [{"where": next(iter(added)), "note": "temp file of an interrupted write"}]
    # a later commit is not disturbed by the temp file
    assert bf.learn(bank, "crashed", seed=99).number == 3 and verify(bank).ok


# -- write failures ----------------------------------------------------------------------------------------


class FailingOS:
    """Stands in for `os` inside cns_cli.bank.atomic: os.write on a file whose name ends with `suffix` fails
    with `err`; everything else is the real os module."""

    def __init__(self, suffix: str, err: int):
        self.suffix, self.err, self.paths, self.failures = suffix, err, {}, 0

    def __getattr__(self, name):
        return getattr(os, name)

    def open(self, path, flags, mode=0o777, **kw):
        fd = os.open(path, flags, mode, **kw)
        self.paths[fd] = str(path)
        return fd

    def write(self, fd, data):
        if self.paths.get(fd, "").endswith(self.suffix):
            self.failures += 1
            raise OSError(self.err, os.strerror(self.err))
        return os.write(fd, data)


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.startswith(TMP_PREFIX)]


@pytest.mark.parametrize("suffix", [".safetensors", "-000003.json", "-HEAD"], ids=["object", "revision", "head"])
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT])
def test_disk_full_during_commit(bank, monkeypatch, suffix, err):
    root = bank.root
    before = bf.snapshot(root)
    fake = FailingOS(suffix, err)
    monkeypatch.setattr(atomic, "os", fake)
    with pytest.raises(CommitError, match=r"^disk full while writing .*; free some space and run the command again$"):
        bf.learn(bank, "full", seed=7)
    monkeypatch.undo()
    assert fake.failures == 1
    assert no_temp_files(root)
    assert_previous_state_intact(root, before)
    assert verify(Bank.open(root)).ok
    assert (root / "lock").read_bytes() == b"", "the lock must be released after a failed commit"
    # with space again, the same commit succeeds; a revision file written before HEAD failed stays as it was
    # (outside HEAD's history) and the new one is numbered past it
    leftover = (root / revision_name(3)).read_bytes() if suffix == "-HEAD" else None
    rev = bf.learn(bank, "full", seed=7)
    assert (rev.number, rev.parent) == ((4, 2) if leftover else (3, 2)) and verify(bank).ok
    assert rev.concepts["full"].learned_in == rev.number
    if leftover:
        assert (root / revision_name(3)).read_bytes() == leftover


def test_io_error_during_commit(bank, monkeypatch):
    before = bf.snapshot(bank.root)
    monkeypatch.setattr(atomic, "os", FailingOS("-000003.json", errno.EIO))
    with pytest.raises(CommitError, match=r"could not write .*000003\.json: Input/output error; check the permissions"):
        forget(bank, "concept-1")
    monkeypatch.undo()
    assert no_temp_files(bank.root)
    assert_previous_state_intact(bank.root, before)


def test_rename_failure_during_commit(bank, monkeypatch):
    before = bf.snapshot(bank.root)

    class NoRename(FailingOS):  # neither rename (HEAD, objects) nor link (revision files) works
        def replace(self, src, dst):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def link(self, src, dst):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic, "os", NoRename("never", 0))
    with pytest.raises(CommitError, match="disk full while writing 000003.json"):
        undo(bank)
    monkeypatch.undo()
    assert no_temp_files(bank.root)
    assert_previous_state_intact(bank.root, before)


def test_create_failure_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "os", FailingOS("-HEAD", errno.ENOSPC))
    with pytest.raises(CommitError, match="disk full while writing HEAD"):
        Bank.create(tmp_path / "b", bf.make_base())
    assert list(tmp_path.iterdir()) == []


def test_objects_are_never_rewritten_in_place(bank):
    # An existing object keeps its inode: putting the same content again must not truncate/rewrite it
    # (a reader may have it mmapped).
    ref = bank.head().concepts["concept-0"].delta
    inode = os.stat(bank.object_path(ref)).st_ino
    rng = np.random.default_rng(0)
    with bank.transaction() as tx:
        assert tx.put(bf.fake_delta(rng, 2, 3), "delta", {"concept": "concept-0"}) == ref
    assert os.stat(bank.object_path(ref)).st_ino == inode


# -- revision files are created, never replaced ---------------------------------------------------------------


def test_create_exclusive_never_replaces(tmp_path):
    target = tmp_path / "000003.json"
    target.write_bytes(b"history")
    with pytest.raises(CommitError, match=r"000003\.json already exists and is never replaced"):
        atomic.create_exclusive(target, b"new")
    assert target.read_bytes() == b"history"
    assert [p.name for p in tmp_path.iterdir()] == ["000003.json"]  # no temp file left
    atomic.create_exclusive(tmp_path / "000004.json", b"new")
    assert (tmp_path / "000004.json").read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize("err", [errno.EPERM, errno.EOPNOTSUPP])
def test_create_exclusive_without_hard_links(tmp_path, monkeypatch, err):
    class NoLinks(FailingOS):
        def link(self, src, dst):
            raise OSError(err, os.strerror(err))

    monkeypatch.setattr(atomic, "os", NoLinks("never", 0))
    atomic.create_exclusive(tmp_path / "000001.json", b"one")  # falls back to O_CREAT | O_EXCL
    assert (tmp_path / "000001.json").read_bytes() == b"one"
    with pytest.raises(CommitError, match="already exists and is never replaced"):
        atomic.create_exclusive(tmp_path / "000001.json", b"two")
    assert (tmp_path / "000001.json").read_bytes() == b"one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000001.json"]


def test_a_revision_file_that_appears_during_the_commit_is_not_replaced(bank):
    # Another program writing without the lock takes the number this transaction chose: the commit fails,
    # that file and HEAD stay as they are.
    before = bf.snapshot(bank.root)
    with pytest.raises(CommitError, match=r"revisions/000003\.json already exists and is never replaced"):
        with bank.transaction() as tx:
            assert tx.number == 3
            (bank.root / revision_name(3)).write_bytes(b"someone else's\n")
            tx.commit(Operation(kind="forget", concept="concept-1"), concepts={})
    assert (bank.root / revision_name(3)).read_bytes() == b"someone else's\n"
    assert_previous_state_intact(bank.root, {**before})
    assert no_temp_files(bank.root)
