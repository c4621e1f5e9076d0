"""Every way a bank on disk can be wrong, each with its exception class, its message, and the guarantee that
the failing call changed nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import bankfactory as bf
from cns_cli.bank import Bank, Basis, Operation
from cns_cli.bank.history import forget
from cns_cli.bank.models import FORMAT_VERSION, Caches
from cns_cli.bank.revision_io import MAX_REVISION_BYTES, parse_revision, revision_name
from cns_cli.bank.verify import verify
from cns_cli.errors import (
    BankError,
    BankFormatError,
    BankNotFoundError,
    BankVersionError,
    CnsError,
    IntegrityError,
)


VERSION_FIELD = f'"format_version": "{FORMAT_VERSION}"'.encode()


def load_rev(root: Path, n: int) -> dict:
    return json.loads((root / revision_name(n)).read_text())


def write_rev(root: Path, n: int, doc) -> None:
    (root / revision_name(n)).write_text(json.dumps(doc, indent=2))


def edit_rev(root: Path, n: int, fn) -> None:
    doc = load_rev(root, n)
    fn(doc)
    write_rev(root, n, doc)


def test_error_hierarchy():
    # The CLI maps classes to exit codes subclass-first; verify() relies on these being BankFormatErrors.
    assert issubclass(BankVersionError, BankFormatError)
    assert issubclass(IntegrityError, BankFormatError)
    assert issubclass(BankFormatError, BankError) and issubclass(BankNotFoundError, BankError)
    assert issubclass(BankError, CnsError)


# -- not a bank ---------------------------------------------------------------------------------------------


def test_missing_directory(tmp_path):
    with pytest.raises(BankNotFoundError, match="no bank at"):
        Bank.open(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


def test_empty_directory(tmp_path):
    (tmp_path / "e").mkdir()
    with pytest.raises(BankNotFoundError, match="is not a cns bank"):
        Bank.open(tmp_path / "e")
    assert list((tmp_path / "e").iterdir()) == []


def test_directory_without_head(bank, unchanged):
    """Still a bank (its revisions are intact): reading HEAD names the loss and the restore that recovers it."""
    (bank.root / "HEAD").unlink()
    check = unchanged(bank.root, healthy=False)
    with pytest.raises(BankFormatError, match=r"HEAD is missing; `cns restore N` .*latest intact: 2"):
        Bank.open(bank.root).head()
    check()


def test_directory_without_revisions(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "HEAD").write_bytes(b"0\n")
    with pytest.raises(BankNotFoundError, match="not a cns bank"):
        Bank.open(tmp_path / "b")


def test_a_file_is_not_a_bank(tmp_path):
    f = tmp_path / "file.cnsbank"
    f.write_text("hello")
    with pytest.raises(BankNotFoundError, match="not a cns bank"):
        Bank.open(f)
    assert f.read_text() == "hello"


# -- format versions ----------------------------------------------------------------------------------------


def test_unknown_major_version(bank, unchanged):
    edit_rev(bank.root, 2, lambda d: d.update(format_version="2.0"))
    check = unchanged(bank.root, healthy=False)
    with pytest.raises(BankVersionError, match=r"format 2\.0.*upgrade cns"):
        Bank.open(bank.root).head()
    report = verify(bank)
    assert not report.ok and report.problems[0]["where"] == "revisions/000002.json"
    assert "upgrade" in report.problems[0]["problem"]
    check()


def test_older_major_version_says_convert(bank):
    edit_rev(bank.root, 2, lambda d: d.update(format_version="0.9"))
    with pytest.raises(BankVersionError, match="older cns"):
        Bank.open(bank.root).head()


def _add_future_fields(doc: dict) -> None:
    doc["format_version"] = "1.7"
    doc["future_top"] = {"anything": [1, 2, 3]}
    doc["concepts"]["concept-0"]["future_concept_field"] = "x"
    doc["concepts"]["concept-0"]["slice"]["future_nested"] = 3
    doc["base"]["fingerprint"]["future_fp"] = True
    doc["operation"]["future_op"] = None


def test_newer_minor_version_reads_but_refuses_to_write(bank, unchanged):
    expected = bank.head()
    edit_rev(bank.root, 2, _add_future_fields)
    check = unchanged(bank.root)  # opens and verifies fine
    opened = Bank.open(bank.root)
    head = opened.head()
    assert head.format_version == "1.7"
    # unknown fields were pruned; everything known is as it was
    assert head.model_dump(exclude={"format_version"}) == expected.model_dump(exclude={"format_version"})
    assert "future_top" not in head.model_dump()
    with pytest.raises(BankFormatError, match=r"newer cns \(format 1\.7\).*upgrade"):
        with opened.transaction():
            pass
    with pytest.raises(BankFormatError, match="newer cns"):
        forget(opened, "concept-0")
    check()
    assert not (bank.root / revision_name(3)).exists()
    assert (bank.root / "lock").read_bytes() == b"", "the lock must be released after the refusal"


def test_same_minor_unknown_field_is_an_error(bank, unchanged):
    edit_rev(bank.root, 2, lambda d: d.update(surprise=1))
    check = unchanged(bank.root, healthy=False)
    with pytest.raises(BankFormatError, match=r"000002\.json does not follow the bank format: surprise: Extra inputs"):
        Bank.open(bank.root).head()
    check()


def test_same_minor_unknown_field_inside_a_concept(bank):
    edit_rev(bank.root, 2, lambda d: d["concepts"]["concept-1"].update(surprise=1))
    with pytest.raises(BankFormatError, match=r"concepts\.concept-1\.surprise"):
        Bank.open(bank.root).head()


# -- HEAD -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"garbage\n", b"2", b"-1\n", b"", b"\n", b" 2\n", b"2 \n", b"2\n\n", b"+2\n", b"2.0\n", b"\xff\xfe\n",
     b"\xd9\xa2\n", b"1" * 20 + b"\n"],
    ids=repr,
)
def test_invalid_head(bank, unchanged, raw):
    (bank.root / "HEAD").write_bytes(raw)
    check = unchanged(bank.root, healthy=False)
    with pytest.raises(BankFormatError, match="HEAD must hold one revision number"):
        Bank.open(bank.root).head()
    report = verify(bank)
    assert not report.ok and report.problems[0]["where"] == "HEAD" and report.head is None
    check()


def test_head_naming_a_missing_revision(bank, unchanged):
    (bank.root / "HEAD").write_bytes(b"7\n")
    check = unchanged(bank.root, healthy=False)
    with pytest.raises(BankFormatError, match=r"HEAD names revision 7 but revisions/000007\.json is missing"):
        Bank.open(bank.root).head()
    check()


def test_head_may_point_back(bank):
    # HEAD is just a number: pointing it at an earlier revision is a valid (if unusual) bank.
    (bank.root / "HEAD").write_bytes(b"1\n")
    opened = Bank.open(bank.root)
    assert opened.head().number == 1 and list(opened.head().concepts) == ["concept-0"]


# -- revision files -----------------------------------------------------------------------------------------


def _bad_parent(d):
    d["parent"] = 2  # a parent numbered below the revision is valid in 1.1 (numbers may skip); itself is not


def _no_parent(d):
    d["parent"] = None


def _bad_sha(d):
    d["concepts"]["concept-0"]["delta"]["sha256"] = "XYZ"


def _sha_path_mismatch(d):
    d["concepts"]["concept-0"]["delta"]["sha256"] = "0" * 64


def _number_as_list(d):
    d["number"] = [2]


def _number_as_string(d):
    d["number"] = "2"


def _text_dim_as_float(d):
    d["base"]["text_dim"] = 8.0


def _size_as_bool(d):
    d["concepts"]["concept-0"]["delta"]["size"] = True


def _neurons_total(d):
    d["concepts"]["concept-0"]["neurons"]["total"] += 1


def _unknown_layer(d):
    c = d["concepts"]["concept-0"]["neurons"]["per_layer"]
    c["up_blocks.9.attentions.0.transformer_blocks.0.attn2.to_k"] = 0


def _slice_past_basis(d):
    d["concepts"]["concept-0"]["slice"]["start"] = 7


def _shared_token(d):
    d["concepts"]["concept-1"]["token"] = d["concepts"]["concept-0"]["token"]


def _missing_base(d):
    del d["base"]


def _bad_op(d):
    d["operation"] = {"kind": "learn", "argv": []}


def _bad_concept_key(d):
    d["concepts"]["Concept Zero"] = d["concepts"].pop("concept-0")


@pytest.mark.parametrize(
    "mutate, words",
    [
        (_bad_parent, r"revision 2 must have a parent numbered below 2, not 2"),
        (_no_parent, r"revision 2 must have a parent numbered below 2, not None"),
        (_bad_sha, r"concepts\.concept-0\.delta\.sha256: String should match pattern"),
        (_sha_path_mismatch, r"does not match its sha256"),
        (_number_as_list, r"number: Input should be a valid integer"),
        (_number_as_string, r"number: Input should be a valid integer"),
        (_text_dim_as_float, r"base\.text_dim: Input should be a valid integer"),
        (_size_as_bool, r"delta\.size: Input should be a valid integer"),
        (_neurons_total, r"neurons\.total .* != sum of per_layer"),
        (_unknown_layer, r"names layer .* that the base does not have"),
        (_slice_past_basis, r"slice ends past the basis dimension 8"),
        (_shared_token, r"two concepts share a token"),
        (_missing_base, r"base: Field required"),
        (_bad_op, r"operation: .*'learn' needs concept"),
        (_bad_concept_key, r"concepts\.Concept Zero\.\[key\]"),
    ],
    ids=lambda v: getattr(v, "__name__", "")[1:] or None,
)
def test_revision_fails_schema(bank, unchanged, mutate, words):
    edit_rev(bank.root, 2, mutate)
    check = unchanged(bank.root, healthy=False)
    with pytest.raises(BankFormatError, match=r"revisions/000002\.json does not follow the bank format: .*" + words):
        Bank.open(bank.root).head()
    check()


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda raw: raw[: len(raw) // 2], "is not valid JSON"),
        (lambda raw: b"\xff" + raw, "is not valid JSON"),
        (lambda raw: raw.replace(b'"number": 2', b'"number": 2, "number": 2'), "duplicate key 'number'"),
        (lambda raw: raw.replace(b'"loss": 0.25', b'"loss": NaN'), "NaN is not allowed"),
        (lambda raw: raw.replace(b'"loss": 0.25', b'"loss": -Infinity'), "-Infinity is not allowed"),
        (lambda raw: raw.replace(b'"loss": 0.25', b'"loss": 1e999'), "1e999 is out of range"),
        (lambda raw: b"[" + raw + b"]", "must hold a JSON object"),
        (lambda raw: raw.replace(VERSION_FIELD, b'"format_version": "1."'), "no valid format_version"),
        (lambda raw: raw.replace(VERSION_FIELD, b'"format_version": 1.1'), "no valid format_version"),
        (lambda raw: raw.replace(VERSION_FIELD + b",", b""), "no valid format_version"),
    ],
    ids=["truncated", "not-utf8", "duplicate-key", "nan", "infinity", "overflow-float", "array", "version-1.",
         "version-number", "no-version"],
)
def test_revision_not_parseable(bank, unchanged, edit, words):
    p = bank.root / revision_name(2)
    new = edit(p.read_bytes())
    assert new != p.read_bytes()
    p.write_bytes(new)
    check = unchanged(bank.root, healthy=False)
    with pytest.raises(BankFormatError, match=r"revisions/000002\.json .*" + words):
        Bank.open(bank.root).head()
    check()


def test_revision_size_cap():
    with pytest.raises(BankFormatError, match="larger than 64 MiB"):
        parse_revision(b" " * (MAX_REVISION_BYTES + 1), "revisions/000001.json")


def test_renamed_revision(bank, unchanged):
    # a copy of revision 1 placed as revision 2: valid JSON and schema, wrong number
    (bank.root / revision_name(2)).write_bytes((bank.root / revision_name(1)).read_bytes())
    check = unchanged(bank.root, healthy=False)
    with pytest.raises(BankFormatError, match=r"000002\.json says it is revision 1; the file was renamed"):
        Bank.open(bank.root).head()
    check()


def test_broken_older_revision_found_by_verify(bank, unchanged):
    edit_rev(bank.root, 1, lambda d: d.update(parent=None))
    check = unchanged(bank.root, healthy=False)
    opened = Bank.open(bank.root)  # HEAD is fine
    assert opened.head().number == 2
    with pytest.raises(BankFormatError, match=r"000001\.json"):
        list(opened.history())
    report = verify(opened)  # HEAD is healthy: an older revision of its history is a warning, or with --strict a failure
    assert report.ok and report.problems == []
    assert [w["where"] for w in report.warnings] == ["revisions/000001.json"]
    assert report.revisions_checked == 2
    assert not verify(opened, strict=True).ok
    check()


# -- object paths ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, words",
    [
        ("/etc/passwd", "is absolute"),
        ("\\\\server\\share\\x.safetensors", "is absolute"),
        ("C:/objects/x.safetensors", "is absolute"),
        ("objects/../../etc/passwd", "escapes the bank"),
        ("../outside.safetensors", "escapes the bank"),
        ("objects\\abc.safetensors", "escapes the bank"),
    ],
)
@pytest.mark.parametrize("where", ["delta", "embedding", "basis", "cache"])
def test_dangerous_object_paths(bank, unchanged, path, words, where):
    def mutate(d):
        if where == "basis":
            d["basis"]["object"]["path"] = path
        elif where == "cache":
            d["caches"]["general_neurons"] = {"path": path, "sha256": "0" * 64, "size": 1}
        else:
            d["concepts"]["concept-1"][where]["path"] = path

    edit_rev(bank.root, 2, mutate)
    check = unchanged(bank.root, healthy=False)
    with pytest.raises(BankFormatError, match=r"revisions/000002\.json: object path .* " + words):
        Bank.open(bank.root).head()
    check()


def test_object_path_must_be_under_objects(bank):
    def mutate(d):
        ref = d["concepts"]["concept-0"]["delta"]
        ref["path"] = f"revisions/{ref['sha256']}.safetensors"

    edit_rev(bank.root, 2, mutate)
    with pytest.raises(BankFormatError, match=r"delta\.path: String should match pattern"):
        Bank.open(bank.root).head()


# -- objects ----------------------------------------------------------------------------------------------


def _delta_ref(bank, name="concept-0"):
    return bank.head().concepts[name].delta


def test_flipped_byte_in_object(bank):
    ref = _delta_ref(bank)
    p = bank.object_path(ref)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    report = verify(bank)
    assert not report.ok
    assert [x["where"] for x in report.problems] == [ref.path]
    assert "sha256 mismatch" in report.problems[0]["problem"]
    with pytest.raises(IntegrityError, match=rf"object {ref.path} is corrupt"):
        bank.read_object(ref)
    # the neighbours are still readable
    other = bank.head().concepts["concept-1"]
    assert bank.read_object(other.delta) and bank.read_object(_delta_ref(bank, "concept-1"))
    assert Bank.open(bank.root).head_number() == 2  # opening does not read objects


def test_truncated_object(bank):
    ref = bank.head().concepts["concept-1"].embedding
    p = bank.object_path(ref)
    p.write_bytes(p.read_bytes()[:-10])
    report = verify(bank)
    assert [x["where"] for x in report.problems] == [ref.path]
    assert report.problems[0]["problem"].startswith(f"size {ref.size - 10} bytes, the revision says {ref.size}")
    with pytest.raises(IntegrityError, match="corrupt"):
        bank.read_object_bytes(ref)


def test_missing_object(bank):
    ref = bank.head().basis.object
    bank.object_path(ref).unlink()
    report = verify(bank)
    assert not report.ok
    assert [x["where"] for x in report.problems] == [ref.path]
    assert report.problems[0]["problem"] == "missing (referenced by revisions/000002.json)"
    with pytest.raises(IntegrityError, match=rf"object {ref.path} is missing"):
        bank.read_object(ref)


def test_corrupt_object_referenced_only_by_old_revision(bank):
    ref = _delta_ref(bank, "concept-0")
    forget(bank, "concept-0")
    p = bank.object_path(ref)
    p.write_bytes(p.read_bytes()[:-1] + b"!")
    report = verify(bank)  # only older revisions use it: a warning
    assert report.ok and [x["where"] for x in report.warnings] == [ref.path]
    assert "referenced by revisions/000002.json" in report.warnings[0]["warning"]


def test_unreferenced_and_temp_files_are_notes(bank):
    (bank.root / "objects" / ("f" * 64 + ".safetensors")).write_bytes(b"x")
    (bank.root / "objects" / ".tmp-123-abcd-x.safetensors").write_bytes(b"x")
    (bank.root / "revisions" / ".tmp-123-abcd-000003.json").write_bytes(b"x")
    (bank.root / ".tmp-123-abcd-HEAD").write_bytes(b"3\n")
    report = verify(bank)
    assert report.ok
    notes = {n["where"]: n["note"] for n in report.notes}
    assert notes == {
        "objects/" + "f" * 64 + ".safetensors": "not referenced by any revision in HEAD's history",
        "objects/.tmp-123-abcd-x.safetensors": "temp file of an interrupted write",
        "revisions/.tmp-123-abcd-000003.json": "temp file of an interrupted write",
        ".tmp-123-abcd-HEAD": "temp file of an interrupted write",
    }
    assert Bank.open(bank.root).head_number() == 2


# -- object contents (bytes fine, tensors wrong): built through the API, found by verify's layout checks ----


def _commit_concept(bank, **kw):
    return bf.learn(bank, "bad", seed=5, **kw)


def _good_delta(n_rows=3, rank=2):
    return bf.fake_delta(np.random.default_rng(5), rank, n_rows)


def _with(delta, key, value):
    return {**delta, key: value}


K, V = bf.LAYER_K, bf.LAYER_V


@pytest.mark.parametrize(
    "delta, words",
    [
        (_with(_good_delta(), f"{K}.rows", np.array([1, 5, 16], np.int32)), "rows out of range [0, 16)"),
        (_with(_good_delta(), f"{K}.rows", np.array([-1, 5, 9], np.int32)), "rows out of range [0, 16)"),
        (_with(_good_delta(), f"{V}.rows", np.array([1, 5, 5], np.int32)), "rows are not strictly increasing"),
        (_with(_good_delta(), f"{V}.rows", np.array([7, 5, 9], np.int32)), "rows are not strictly increasing"),
        (_with(_good_delta(), f"{K}.rows", np.array([1, 5, 9], np.int64)), "rows must be a 1-d int32 tensor"),
        (_with(_good_delta(), f"{K}.rows", np.array([1, 5], np.int32)), "2 rows, the revision says 3"),
        (_with(_good_delta(), f"{K}.rows", np.array(3, np.int32)), "rows must be a 1-d int32 tensor"),
        (_with(_good_delta(), f"{K}.coef", np.array([[0, 1], [np.nan, 2], [3, 4]], np.float32)), "coef has NaN or Inf"),
        (_with(_good_delta(), f"{V}.coef", np.full((3, 2), np.inf, np.float32)), "coef has NaN or Inf"),
        (_with(_good_delta(), f"{K}.coef", np.zeros((3, 3), np.float32)), "coef must be float32 [3, 2]"),
        (_with(_good_delta(), f"{K}.coef", np.zeros((3, 2), np.float64)), "coef must be float32 [3, 2]"),
        ({k: v for k, v in _good_delta().items() if k != f"{V}.coef"}, "tensor names differ"),
        (_with(_good_delta(), "extra", np.zeros(1, np.float32)), "tensor names differ"),
    ],
    ids=["row-16", "row-neg", "row-dup", "row-order", "row-int64", "row-count", "row-scalar", "coef-nan", "coef-inf",
         "coef-shape", "coef-f64", "missing-tensor", "extra-tensor"],
)
def test_bad_delta_contents(bank, delta, words):
    rev = _commit_concept(bank, delta=delta)
    ref = rev.concepts["bad"].delta
    report = verify(Bank.open(bank.root))
    assert not report.ok
    assert {p["where"] for p in report.problems} == {ref.path}, report.problems
    assert any(p["problem"].startswith("concept 'bad': ") and words in p["problem"] for p in report.problems), report.problems
    # the good concepts are still reported clean
    assert report.head == 3 and report.objects_checked == 7


@pytest.mark.parametrize(
    "emb, words",
    [
        (np.zeros((1, 9), np.float32), "embedding must be float32 [k>=1, 8]"),
        (np.zeros((0, 8), np.float32), "embedding must be float32 [k>=1, 8]"),
        (np.zeros(8, np.float32), "embedding must be float32 [k>=1, 8]"),
        (np.zeros((1, 8), np.float16), "embedding must be float32 [k>=1, 8]"),
        (np.array([[np.nan] + [0.0] * 7], np.float32), "embedding has NaN or Inf"),
    ],
    ids=["wide", "empty", "1d", "f16", "nan"],
)
def test_bad_embedding_contents(bank, emb, words):
    rev = _commit_concept(bank, embedding={"embedding": emb})
    report = verify(bank)
    assert [p["where"] for p in report.problems] == [rev.concepts["bad"].embedding.path]
    assert words in report.problems[0]["problem"]


def test_embedding_with_wrong_tensor_name(bank):
    rev = _commit_concept(bank, embedding={"emb": np.zeros((1, 8), np.float32)})
    report = verify(bank)
    assert [p["where"] for p in report.problems] == [rev.concepts["bad"].embedding.path]
    assert "expected exactly one tensor 'embedding'" in report.problems[0]["problem"]


def test_non_orthogonal_basis(bank):
    head = bank.head()
    with bank.transaction() as tx:
        q = bf.orthogonal_basis()
        q[0, 0] += 0.5
        ref = tx.put({"Q": q}, "basis")
        tx.commit(Operation(kind="learn", concept="concept-0"), basis=Basis(object=ref, dim=8, seed=1))
    report = verify(bank)
    assert [p["where"] for p in report.problems] == [ref.path]
    assert "basis is not orthogonal" in report.problems[0]["problem"]
    assert head.basis.object.path != ref.path


def test_bad_general_neurons_cache(bank):
    with bank.transaction() as tx:
        ref = tx.put({K: np.array([3, 1], np.int32), "unet.other.attn2.to_k": np.array([0], np.int32)}, "general_neurons")
        tx.commit(Operation(kind="learn", concept="concept-0"), caches=Caches(general_neurons=ref))
    report = verify(bank)
    problems = sorted(p["problem"] for p in report.problems)
    assert {p["where"] for p in report.problems} == {ref.path}
    assert problems == [f"{K}: rows are not strictly increasing", "unknown layer 'unet.other.attn2.to_k'"]


def test_object_that_is_not_safetensors(bank):
    with bank.transaction() as tx:
        good = tx.put({K: np.array([1, 3], np.int32)}, "general_neurons")
    # replace the file by non-safetensors bytes and rename it to their hash, through a revision that says so
    from cns_cli.bank.store import object_ref

    junk = b"\x08\x00\x00\x00\x00\x00\x00\x00{notjson"
    ref = object_ref(junk)
    bank.object_path(ref).write_bytes(junk)
    with bank.transaction() as tx:
        tx.commit(Operation(kind="learn", concept="concept-0"), caches=Caches(general_neurons=ref))
    report = verify(bank)
    assert [p["where"] for p in report.problems] == [ref.path]
    assert f"object {ref.path} " in report.problems[0]["problem"]
    with pytest.raises(IntegrityError, match="not a valid safetensors file"):
        bank.read_object(ref)
    with pytest.raises(IntegrityError, match="no valid cns metadata"):
        bank.read_object_metadata(ref)
    assert good.path != ref.path


def test_object_of_the_wrong_kind(bank):
    head = bank.head()
    with bank.transaction() as tx:
        wrong = tx.put(bf.fake_embedding(np.random.default_rng(3)), "delta")  # an embedding labelled as a delta
        c = head.concepts["concept-1"].model_copy(update={"embedding": wrong})
        tx.commit(Operation(kind="learn", concept="concept-1"), concepts={**head.concepts, "concept-1": c})
    report = verify(bank)
    assert [p["where"] for p in report.problems] == [wrong.path]
    assert report.problems[0]["problem"] == "metadata kind is 'delta', expected 'embedding'"


def test_put_repairs_a_corrupt_object(bank):
    # Learning the same content again must not keep a same-size corrupt file just because the name exists.
    ref = bank.head().concepts["concept-0"].delta
    p = bank.object_path(ref)
    good = p.read_bytes()
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    p.write_bytes(bytes(bad))
    assert not verify(bank).ok
    with bank.transaction() as tx:
        assert tx.put(bf.fake_delta(np.random.default_rng(0), 2, 3), "delta", {"concept": "concept-0"}) == ref
    assert p.read_bytes() == good and verify(bank).ok
