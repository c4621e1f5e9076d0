"""The golden banks in format/examples/ are test vectors (format/SPEC.md): they must stay valid, canonical,
reproducible from make_golden.py, and mean what the spec says (undo semantics, ΔW = Sᵀ A Bᵀ, fingerprint)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from cns_cli.bank import FORMAT_VERSION, Bank
from cns_cli.bank.history import forget, restore, state_of, undo
from cns_cli.bank.revision_io import dump_revision, parse_revision, revision_name
from cns_cli.bank.store import encode_object
from cns_cli.bank.verify import verify
from cns_cli.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "format" / "examples"
SCRIPT = EXAMPLES / "make_golden.py"
SCHEMA = json.loads((ROOT / "format" / "schema" / "revision.schema.json").read_text(encoding="utf-8"))
BANKS = sorted(p.name for p in EXAMPLES.glob("*.cnsbank"))
REVISIONS = sorted(p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.glob("*.cnsbank/revisions/*.json"))
TWO = EXAMPLES / "two-concepts.cnsbank"
XL = EXAMPLES / "sdxl.cnsbank"
OWN = EXAMPLES / "concept-slice.cnsbank"


def load_script():
    spec = importlib.util.spec_from_file_location("make_golden", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def safetensors_metadata(data: bytes) -> dict:
    """The header's __metadata__, read with the standard library only (the format is that simple)."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]).get("__metadata__", {})


def test_golden_banks_exist_and_are_small():
    assert BANKS == ["concept-slice.cnsbank", "minimal.cnsbank", "sdxl.cnsbank", "two-concepts.cnsbank"]
    assert len(REVISIONS) == 11
    for name in BANKS:
        files = tree(EXAMPLES / name)
        assert "lock" not in files  # created by the first writer, not part of a fresh bank
        assert sum(map(len, files.values())) < 32 * 1024, name


# -- every revision ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("rel", REVISIONS)
def test_revision_round_trips_byte_exactly(rel: str):
    raw = (EXAMPLES / rel).read_bytes()
    assert dump_revision(parse_revision(raw, rel)) == raw


@pytest.mark.parametrize("rel", REVISIONS)
def test_revision_validates_against_schema(rel: str):
    doc = json.loads((EXAMPLES / rel).read_bytes())
    errors = [e.message for e in Draft202012Validator(SCHEMA).iter_errors(doc)]
    assert not errors, errors


# -- every bank -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BANKS)
def test_bank_verifies_clean(name: str):
    report = verify(Bank.open(EXAMPLES / name))
    assert report.ok, report.problems
    assert report.notes == []  # no leftovers, no unreferenced objects
    assert report.revisions_checked == report.head + 1


@pytest.mark.parametrize("name", BANKS)
def test_objects_hash_to_their_names_and_declare_their_kind(name: str):
    bank = Bank.open(EXAMPLES / name)
    kinds: dict[str, str] = {}
    for rev in bank.history():
        if rev.basis:
            kinds[rev.basis.object.path] = "basis"
        if rev.caches.general_neurons:
            kinds[rev.caches.general_neurons.path] = "general_neurons"
        for c in rev.concepts.values():
            kinds[c.delta.path], kinds[c.embedding.path] = "delta", "embedding"
    objects = sorted((EXAMPLES / name).glob("objects/*"))
    assert sorted(f"objects/{p.name}" for p in objects) == sorted(kinds)
    for p in objects:
        data = p.read_bytes()
        assert p.name == f"{hashlib.sha256(data).hexdigest()}.safetensors"
        meta = safetensors_metadata(data)
        assert list(meta) == ["cns"]  # one entry: safetensors writes several in a random order
        assert json.loads(meta["cns"])["kind"] == kinds[f"objects/{p.name}"]


def test_minimal_bank_is_an_empty_init():
    bank = Bank.open(EXAMPLES / "minimal.cnsbank")
    head = bank.head()
    assert (head.number, head.operation.kind, head.basis, head.concepts) == (0, "init", None, {})
    assert not (EXAMPLES / "minimal.cnsbank" / "objects").exists()  # readers treat it as empty


def test_make_golden_reproduces_the_committed_banks(tmp_path: Path):
    subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], check=True, cwd=ROOT)
    for name in BANKS:
        assert tree(tmp_path / name) == tree(EXAMPLES / name), f"{name} differs; rerun make_golden.py"
    assert sorted(p.name for p in tmp_path.iterdir()) == BANKS


# -- what two-concepts means ------------------------------------------------------------------------------


def test_two_concepts_history_and_head_state():
    bank = Bank.open(TWO)
    revs = list(reversed(list(bank.history())))
    ops = [(r.operation.kind, r.operation.concept) for r in revs]
    assert ops == [("init", None), ("learn", "dog"), ("learn", "hat"), ("forget", "hat"), ("undo", None)]
    assert [sorted(r.concepts) for r in revs] == [[], ["dog"], ["dog", "hat"], ["dog"], ["dog", "hat"]]
    assert revs[0].basis is None and all(r.basis == revs[1].basis for r in revs[1:])
    head = bank.head()
    # undo of "forget hat": reverts 3 and restores the state of 2 (SPEC "Operations").
    assert (head.operation.undone, head.operation.restores) == (3, 2)
    assert state_of(bank, head).number == 2
    assert (head.concepts, head.basis, head.caches) == (revs[2].concepts, revs[2].basis, revs[2].caches)
    assert head.concepts["dog"] == revs[1].concepts["dog"]  # learning hat left dog bit-for-bit unchanged
    hat = head.concepts["hat"]
    assert hat.learned_in == 2 and hat.neurons.per_layer[load_script().LAYER_V] == 0  # 0-neuron edge case


def _copy_at(tmp_path: Path, head: int) -> Bank:
    """A copy of two-concepts with HEAD moved back to `head`; later revision files stay as leftovers."""
    root = tmp_path / "bank.cnsbank"
    shutil.copytree(TWO, root)
    (root / "HEAD").write_bytes(f"{head}\n".encode())
    return Bank.open(root)


def _same_but_stamp(a, b, skip=()) -> None:
    skip = {"created", "writer", "format_version", *skip}
    assert a.model_dump(exclude=skip) == b.model_dump(exclude=skip)


def test_golden_banks_are_format_1_0_except_the_sdxl_and_concept_slice_ones():
    # Test vectors for every 1.x reader: a newer writer keeps them at 1.0 (linear history, no restore); the SDXL bank
    # needs 1.2 (its base's family, prediction type, encoder widths and config folder; embedding_2), the concept-slice
    # bank 1.3 (a concept with its own basis).
    versions = {p.relative_to(EXAMPLES).parts[0]: json.loads(p.read_bytes())["format_version"]
                for p in EXAMPLES.glob("*.cnsbank/revisions/*.json")}
    assert versions == {"minimal.cnsbank": "1.0", "two-concepts.cnsbank": "1.0", "sdxl.cnsbank": "1.2",
                        "concept-slice.cnsbank": "1.3"}


def test_concept_slice_bank_reads_its_own_basis():
    """Format 1.3: slice.start null -> B is the delta object's `basis`, orthonormal and orthogonal to the earlier
    concept's columns of Q; ΔW = Sᵀ A Bᵀ with that B."""
    from cns_cli.bank.delta import basis_of, read_delta

    bank = Bank.open(OWN)
    head = bank.head()
    q = bank.read_object(head.basis.object)["Q"]
    hat, dog = head.concepts["hat"], head.concepts["dog"]
    assert hat.slice.start is None and hat.slice.own and not dog.slice.own
    tensors = bank.read_object(hat.delta)
    b = basis_of(tensors, hat, q)
    assert b.shape == (8, 2) and np.array_equal(b, tensors["basis"])
    assert np.abs(b.T @ b - np.eye(2)).max() < 1e-6
    assert np.abs(basis_of(bank.read_object(dog.delta), dog, q).T @ b).max() < 1e-6
    assert not any(np.allclose(np.abs(b[:, i]), np.abs(q[:, j]), atol=1e-3) for i in range(2) for j in range(8))
    layer, part = next(iter(read_delta(bank, hat).items()))
    w = np.zeros((16, 8), np.float32)
    w[part.rows] = part.coef @ b.T  # ΔW = Sᵀ A Bᵀ
    assert np.abs(w).sum() > 0 and set(np.flatnonzero(np.abs(w).sum(axis=1))) <= set(part.rows.tolist())


def test_sdxl_bank_has_a_token_row_per_text_encoder():
    bank = Bank.open(XL)
    head = bank.head()
    base = head.base
    assert (base.family, base.prediction_type, base.embedding_dims, base.text_dim) == ("sdxl", "v_prediction", [3, 5], 8)
    assert base.kind == "single-file" and base.config == "/models/golden-tiny-xl-configs"
    embedding = bank.read_object(head.concepts["dog"].embedding)
    assert {k: v.shape for k, v in embedding.items()} == {"embedding": (1, 3), "embedding_2": (1, 5)}
    assert bank.read_object(head.basis.object)["Q"].shape == (8, 8)  # the basis spans the concatenated text width


def test_library_forget_and_undo_reproduce_golden_revisions(tmp_path: Path):
    bank = _copy_at(tmp_path, 2)  # revisions 3 and 4 are now outside HEAD's history
    assert [n["where"] for n in verify(bank).notes] == [revision_name(3), revision_name(4)]
    before = {n: (TWO / revision_name(n)).read_bytes() for n in range(5)}
    # the same operations again make the same states, as new revisions 5 and 6 (never replacing 3 and 4)
    forgot = forget(bank, "hat", argv=["cns", "forget", "hat"])
    assert (forgot.number, forgot.parent, forgot.format_version) == (5, 2, FORMAT_VERSION)
    _same_but_stamp(forgot, bank.revision(3), skip={"number"})
    undid = undo(bank, argv=["cns", "undo"])
    assert (undid.number, undid.parent, undid.operation.undone, undid.operation.restores) == (6, 5, 5, 2)
    _same_but_stamp(undid, bank.revision(4), skip={"number", "parent", "operation"})
    assert {n: (bank.root / revision_name(n)).read_bytes() for n in range(5)} == before
    assert [r.number for r in bank.history()] == [6, 5, 2, 1, 0]
    report = verify(bank)
    assert report.ok and [n["where"] for n in report.notes] == [revision_name(3), revision_name(4)]


def test_spec_restore_example_is_what_restore_writes(tmp_path: Path):
    """SPEC's format 1.1 example: HEAD moved back to 3 by hand, then `cns restore 2`."""
    import re

    text = (ROOT / "format" / "SPEC.md").read_text(encoding="utf-8")
    [body] = [b for b in re.findall(r"```json\n(.*?)```", text, re.S) if '"kind": "restore"' in b]
    example = parse_revision(body.encode(), "SPEC.md restore example")
    bank = _copy_at(tmp_path, 3)
    rev = restore(bank, 2, argv=["cns", "restore", "2"])
    assert (rev.format_version, example.format_version) == (FORMAT_VERSION, "1.1")  # a 1.2 writer stamps its own
    _same_but_stamp(rev, example)
    assert [r.number for r in bank.history()] == [5, 3, 2, 1, 0]


def test_repeated_undo_steps_further_back(tmp_path: Path):
    bank = _copy_at(tmp_path, 4)
    steps = [undo(bank), undo(bank)]  # HEAD 4 holds the state of 2: undo reverts 2, then 1
    assert [(r.number, r.operation.undone, r.operation.restores) for r in steps] == [(5, 2, 1), (6, 1, 0)]
    assert [sorted(r.concepts) for r in steps] == [["dog"], []]
    assert steps[1].basis is None  # undo back to the init state restores basis null too
    with pytest.raises(UsageError, match="nothing to undo"):
        undo(bank)


def test_delta_math_and_orthogonal_slices():
    """ΔW = Sᵀ A Bᵀ (SPEC "Objects"): only the concept's rows change, and with disjoint slices one concept's
    delta does not respond to another concept's basis directions."""
    bank = Bank.open(TWO)
    head = bank.head()
    q = bank.read_object(head.basis.object)["Q"].astype(np.float64)
    deltas, slices = {}, {}
    for name, c in head.concepts.items():
        t = bank.read_object(c.delta)
        b = q[:, c.slice.start : c.slice.start + c.slice.rank]  # [text_dim, rank]
        slices[name] = b
        for layer, rows_out in head.base.kv_layers.items():
            dw = np.zeros((rows_out, head.base.text_dim))
            if layer in c.neurons.per_layer:
                rows, coef = t[f"{layer}.rows"], t[f"{layer}.coef"].astype(np.float64)
                s = np.zeros((len(rows), rows_out))
                s[np.arange(len(rows)), rows] = 1
                dw = s.T @ coef @ b.T
                untouched = np.setdiff1d(np.arange(rows_out), rows)
                assert not dw[untouched].any()
            deltas[name, layer] = dw
    for layer in head.base.kv_layers:
        assert np.abs(deltas["dog", layer] @ slices["hat"]).max() < 1e-6
        assert np.abs(deltas["hat", layer] @ slices["dog"]).max() < 1e-6


def test_fingerprint_follows_kv_sha256_v1():
    """An implementation of SPEC "Base model and fingerprint" independent of make_golden.py's."""
    weights = load_script().base_weights()
    h = hashlib.sha256()
    for path in sorted(weights):
        w = weights[path]
        h.update(path.encode("utf-8") + b"\x00" + struct.pack("<qq", *w.shape))
        h.update(b"".join(struct.pack("<f", float(x)) for x in w.reshape(-1)))
    digest = Bank.open(TWO).head().base.fingerprint.digest
    assert h.hexdigest() == digest
    assert digest in (ROOT / "format" / "SPEC.md").read_text(encoding="utf-8")


def test_safetensors_serialization_order_invariant():
    rng = np.random.default_rng(0)
    tensors = {"b.attn2.to_v.rows": np.array([1, 5], np.int32), "a.attn2.to_k.coef": rng.random((3, 2), np.float32),
               "a.attn2.to_k.rows": np.array([0, 2, 9], np.int32), "b.attn2.to_v.coef": rng.random((2, 2), np.float32)}
    forward = encode_object(tensors, "delta")
    backward = encode_object(dict(reversed(list(tensors.items()))), "delta")
    assert forward == backward
