"""Bank.create / open / transaction / put / commit on healthy banks: what a commit writes, and what it must not."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import bankfactory as bf
from cns_cli.bank import Bank, Operation
from cns_cli.bank.atomic import TMP_PREFIX, canonical_json
from cns_cli.bank.models import FORMAT_VERSION
from cns_cli.bank.revision_io import dump_revision, parse_revision, revision_name
from cns_cli.bank.store import encode_object, object_ref
from cns_cli.bank.verify import verify
from cns_cli.errors import BankExistsError, CommitError


def test_create_writes_revision_zero_and_head(empty_bank):
    root = empty_bank.root
    assert (root / "HEAD").read_bytes() == b"0\n"
    assert sorted(p.name for p in (root / "revisions").iterdir()) == ["000000.json"]
    assert list((root / "objects").iterdir()) == []
    rev = Bank.open(root).head()
    assert (rev.number, rev.parent, rev.operation.kind, rev.basis, rev.concepts) == (0, None, "init", None, {})
    assert rev.base == bf.make_base()
    assert rev.operation.argv == ["cns", "init"]
    # no temp folder left next to the bank
    assert [p.name for p in root.parent.iterdir()] == [root.name]


def test_create_into_an_existing_empty_directory(tmp_path):
    (tmp_path / "b").mkdir()
    Bank.create(tmp_path / "b", bf.make_base())
    assert Bank.open(tmp_path / "b").head_number() == 0


def test_create_refuses_existing_bank_and_nonempty_dir(bank, tmp_path, unchanged):
    check = unchanged(bank.root)
    with pytest.raises(BankExistsError, match="already holds a bank"):
        Bank.create(bank.root, bf.make_base())
    check()
    other = tmp_path / "stuff"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(BankExistsError, match="already holds (other )?files"):
        Bank.create(other, bf.make_base())
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), "temp folder left behind"


def test_built_bank_layout_history_and_objects(bank):
    root = bank.root
    assert (root / "HEAD").read_bytes() == b"2\n"
    assert sorted(p.name for p in (root / "revisions").iterdir()) == ["000000.json", "000001.json", "000002.json"]
    revs = list(Bank.open(root).history())
    assert [r.number for r in revs] == [2, 1, 0]
    assert [r.parent for r in revs] == [1, 0, None]
    assert [r.operation.kind for r in revs] == ["learn", "learn", "init"]
    head = revs[0]
    assert sorted(head.concepts) == ["concept-0", "concept-1"]
    assert head.concepts["concept-0"].learned_in == 1 and head.concepts["concept-1"].learned_in == 2
    # objects on disk are exactly basis + 2 per concept, each named by its sha256
    objs = sorted(p.name for p in (root / "objects").iterdir())
    assert objs == sorted(ref.path.split("/")[1] for ref in head.objects())
    assert len(objs) == 5
    # concept-0 of revision 1 is carried into revision 2 unchanged
    assert revs[1].concepts["concept-0"] == head.concepts["concept-0"]


def test_objects_read_back_exactly(bank):
    rng = np.random.default_rng(0)  # bankfactory.build_bank uses seed 0 for concept-0
    expected_delta = bf.fake_delta(rng, 2, 3)
    expected_emb = bf.fake_embedding(rng)
    c = bank.head().concepts["concept-0"]
    delta = bank.read_object(c.delta)
    assert delta.keys() == expected_delta.keys()
    for k in delta:
        assert delta[k].dtype == expected_delta[k].dtype
        np.testing.assert_array_equal(delta[k], expected_delta[k])
    np.testing.assert_array_equal(bank.read_object(c.embedding)["embedding"], expected_emb["embedding"])
    q = bank.read_object(bank.head().basis.object)["Q"]
    np.testing.assert_array_equal(q, bf.orthogonal_basis())


def test_revision_files_are_canonical_and_round_trip(bank):
    for n in range(3):
        raw = (bank.root / revision_name(n)).read_bytes()
        rev = parse_revision(raw, revision_name(n))
        assert dump_revision(rev) == raw
        assert raw == canonical_json(json.loads(raw))
        assert raw.endswith(b"\n") and b"NaN" not in raw


def test_verify_healthy_bank(bank):
    report = verify(bank)
    assert report.ok and report.problems == [] and report.notes == []
    assert (report.head, report.revisions_checked, report.objects_checked) == (2, 3, 5)
    assert report.to_json()["ok"] is True


def test_put_is_content_addressed(empty_bank):
    t = {"b": np.arange(3, dtype=np.int32), "a": np.ones((2, 2), np.float32)}
    same_other_order = {"a": np.ones((2, 2), np.float32), "b": np.arange(3, dtype=np.int32)}
    with empty_bank.transaction() as tx:
        r1 = tx.put(t, "delta")
        r2 = tx.put(same_other_order, "delta")
        r3 = tx.put(t, "embedding")  # the kind is in the metadata, so the bytes differ
    assert r1 == r2 and r1 != r3
    assert r1 == object_ref(encode_object(t, "delta"))
    data = empty_bank.read_object_bytes(r1)
    assert len(data) == r1.size and r1.path == f"objects/{r1.sha256}.safetensors"
    assert sorted(p.name for p in (empty_bank.root / "objects").iterdir()) == sorted([f"{r1.sha256}.safetensors", f"{r3.sha256}.safetensors"])


def test_transaction_without_commit_leaves_head(bank, unchanged):
    check = unchanged(bank.root)
    with bank.transaction() as tx:
        assert tx.parent.number == 2 and tx.stale_pid is None
    check()
    assert (bank.root / "lock").read_bytes() == b"", "the lock file must be emptied when released"


def test_exception_inside_transaction_commits_nothing(bank, unchanged):
    check = unchanged(bank.root)
    with pytest.raises(KeyError):
        with bank.transaction():
            raise KeyError("boom")
    check()
    with bank.transaction() as tx:  # the lock was released
        assert tx.parent.number == 2


def test_commit_moves_head_and_copies_parent(bank):
    before = bank.head()
    with bank.transaction() as tx:
        rev = tx.commit(Operation(kind="forget", concept="concept-1"), concepts={"concept-0": before.concepts["concept-0"]})
    assert (bank.root / "HEAD").read_bytes() == b"3\n"
    assert rev.number == 3 and rev.parent == 2 and rev.format_version == FORMAT_VERSION == "1.4" and rev.writer.startswith("cns ")
    assert rev.base == before.base and rev.basis == before.basis and rev.caches == before.caches
    assert Bank.open(bank.root).head() == rev
    assert (bank.root / revision_name(3)).read_bytes() == dump_revision(rev)


def test_commit_only_once(bank):
    head = bank.head()
    keep = {"concept-0": head.concepts["concept-0"]}
    with bank.transaction() as tx:
        tx.commit(Operation(kind="forget", concept="concept-1"), concepts=keep)
        with pytest.raises(RuntimeError, match="commits once"):
            tx.commit(Operation(kind="forget", concept="concept-0"), concepts={})
    assert bank.head_number() == 3
    assert not (bank.root / revision_name(4)).exists()


def test_commit_refuses_unwritten_object(bank, unchanged):
    check = unchanged(bank.root)
    head = bank.head()
    ghost = object_ref(b"never written")
    c = head.concepts["concept-0"].model_copy(update={"embedding": ghost})
    with bank.transaction() as tx:
        with pytest.raises(CommitError, match="was not written"):
            tx.commit(Operation(kind="learn", concept="concept-0"), concepts={**head.concepts, "concept-0": c})
    check()


def test_commit_refuses_non_finite_numbers(bank, unchanged):
    check = unchanged(bank.root)
    head = bank.head()
    c = head.concepts["concept-0"].model_copy(update={"stats": {"loss": math.nan}})
    with bank.transaction() as tx:
        with pytest.raises(CommitError, match="non-finite"):
            tx.commit(Operation(kind="learn", concept="concept-0"), concepts={**head.concepts, "concept-0": c})
    check()


def test_no_temp_files_after_commits(bank):
    assert not [p for p in bank.root.rglob("*") if p.name.startswith(TMP_PREFIX)]


def test_annotations_may_hold_any_text(tmp_path):
    # Free-form maps are not object references: a "path" key there must not make the bank unreadable.
    ann = {"path": "/home/me/photos", "note": "..\\x", "source": "C:\\data"}
    Bank.create(tmp_path / "b", bf.make_base(), annotations=ann)
    bank = Bank.open(tmp_path / "b")
    assert bank.head().annotations == ann
    assert verify(bank).ok


def test_put_keeps_tensor_shapes(empty_bank):
    # np.ascontiguousarray alone would turn a 0-d array into shape [1]
    t = {"s": np.array(3, np.int32), "e": np.zeros((0, 4), np.float32), "m": np.arange(6, dtype=np.float32).reshape(2, 3).T}
    with empty_bank.transaction() as tx:
        ref = tx.put(t, "delta")
    back = empty_bank.read_object(ref)
    assert {k: v.shape for k, v in back.items()} == {"s": (), "e": (0, 4), "m": (3, 2)}
    np.testing.assert_array_equal(back["m"], t["m"])


def test_object_bytes_are_deterministic_with_several_metadata_keys(empty_bank):
    # safetensors stores metadata in a hash map whose order varies between calls; content addressing needs
    # the same bytes every time (64 tries: equal by luck with probability 2**-63).
    t = {"x": np.arange(4, dtype=np.float32)}
    meta = {"concept": "dog", "layer": "k", "note": "é"}
    blobs = {encode_object(t, "delta", meta) for _ in range(64)}
    assert len(blobs) == 1
    with empty_bank.transaction() as tx:
        refs = {tx.put(t, "delta", dict(reversed(meta.items()))) for _ in range(16)}
    assert len(refs) == 1
    assert len(list((empty_bank.root / "objects").iterdir())) == 1
    ref = refs.pop()
    assert empty_bank.read_object_metadata(ref) == {"kind": "delta", **meta}
    np.testing.assert_array_equal(empty_bank.read_object(ref)["x"], t["x"])
