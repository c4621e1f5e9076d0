"""Format 1.3 (numpy only): a concept with its own basis — slice.start null and the tensor `basis` [dim, rank] in its
delta object. Older revisions cannot hold one; a damaged or missing basis is a format problem `verify` names."""

from __future__ import annotations

import json

import bankfactory as bf
import numpy as np
import pytest

from cns_cli.bank import FORMAT_VERSION
from cns_cli.bank.delta import encode_delta
from cns_cli.bank.revision_io import dump_revision, parse_revision
from cns_cli.bank.verify import verify
from cns_cli.errors import BankFormatError


def _delta(basis: np.ndarray | None, rank: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    layers = {layer: (np.array([1, 3, 5], np.int32), rng.standard_normal((3, rank)).astype(np.float32))
              for layer in bf.KV_LAYERS}
    return encode_delta(layers, basis)


def _own_basis(rank: int = 2) -> np.ndarray:
    q = bf.orthogonal_basis()
    return np.ascontiguousarray((q[:, -rank:] + 0) @ np.array([[0.6, -0.8], [0.8, 0.6]], np.float32)[:rank, :rank])


def test_a_concept_with_its_own_basis_verifies_and_round_trips(bank):
    rev = bf.learn(bank, "own", delta=_delta(_own_basis()), own=True)
    assert rev.format_version == FORMAT_VERSION and rev.concepts["own"].slice.start is None
    assert verify(bank).ok
    assert parse_revision(dump_revision(rev), "again") == rev


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_an_own_basis_in_an_older_revision_is_invalid(bank, version):
    rev = bf.learn(bank, "own", delta=_delta(_own_basis()), own=True)
    doc = json.loads(dump_revision(rev))
    doc["format_version"] = version
    with pytest.raises(BankFormatError, match="own basis .*needs format 1.3"):
        parse_revision(json.dumps(doc).encode(), "old")


@pytest.mark.parametrize("delta, own, words", [
    (_delta(None), True, "missing ['basis']"),
    (_delta(_own_basis()), False, "extra ['basis']"),
    (_delta(np.ones((8, 2), np.float32)), True, "not orthonormal"),
    (_delta(np.eye(8, 3, dtype=np.float32)), True, "basis must be float32 [8, 2]"),
    (_delta(np.full((8, 2), np.nan, np.float32)), True, "NaN"),
])
def test_bad_own_bases_are_named_by_verify(bank, delta, own, words):
    rev = bf.learn(bank, "bad", delta=delta, own=own, start=None if own else 6)
    report = verify(bank)
    assert [p["where"] for p in report.problems] == [rev.concepts["bad"].delta.path]
    assert words in report.problems[0]["problem"]
