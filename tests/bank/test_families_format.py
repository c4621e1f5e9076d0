"""Format 1.2 (numpy only): the base's family, prediction type, encoder widths and single-file config pointer, and
per-encoder embeddings; 1.0 / 1.1 revisions keep their bytes and mean SD 1.x."""

from __future__ import annotations

import json

import bankfactory as bf
import numpy as np
import pytest

from cns_cli.bank import Bank
from cns_cli.bank.models import FORMAT_VERSION, BaseModelPointer
from cns_cli.bank.revision_io import dump_revision, parse_revision
from cns_cli.bank.verify import verify
from cns_cli.errors import BankFormatError

XL = {"family": "sdxl", "prediction_type": "epsilon", "embedding_dims": [3, 5]}  # text_dim 8 = 3 + 5


def xl_base(**extra) -> BaseModelPointer:
    return BaseModelPointer(**(bf.make_base().model_dump() | XL | extra))


def test_a_revision_without_family_is_sd1_and_keeps_its_bytes(bank):
    head = bank.head()
    assert (head.base.family, head.base.family_name, head.base.embedding_widths) == (None, "sd1", [8])
    raw = dump_revision(head)
    assert b'"family"' not in raw and b'"config"' not in raw
    assert dump_revision(parse_revision(raw, "x")) == raw


def test_1_2_base_fields_round_trip_byte_exactly(tmp_path):
    bank = Bank.create(tmp_path / "xl", xl_base(kind="single-file", location="/m/x.safetensors", config="/m/cfg"))
    raw = (tmp_path / "xl" / "revisions" / "000000.json").read_bytes()
    doc = json.loads(raw)
    assert doc["format_version"] == FORMAT_VERSION and doc["base"]["config"] == "/m/cfg" and doc["base"]["family"] == "sdxl"
    assert dump_revision(parse_revision(raw, "x")) == raw
    assert bank.head().base.embedding_widths == [3, 5]


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_1_2_fields_in_an_older_revision_are_invalid(empty_bank, version):
    doc = json.loads(dump_revision(empty_bank.head()))
    doc["format_version"] = version
    parse_revision(json.dumps(doc).encode(), "ok")
    doc["base"]["family"] = "sd2"
    with pytest.raises(BankFormatError, match="base.family needs format 1.2"):
        parse_revision(json.dumps(doc).encode(), "old")


@pytest.mark.parametrize("change, words", [
    ({"embedding_dims": [8]}, "embedding_dims has 1 widths; family sdxl has 2"),
    ({"family": "sd2"}, "embedding_dims has 2 widths; family sd2 has 1"),
    ({"config": "/m/cfg"}, "config is set only for single-file bases"),
    ({"family": "sd3"}, "family"),
    ({"prediction_type": "sample"}, "prediction_type"),
])
def test_base_pointer_rules(change, words, empty_bank):
    doc = json.loads(dump_revision(empty_bank.head()))
    doc["base"] |= XL | change
    with pytest.raises(BankFormatError, match=words):
        parse_revision(json.dumps(doc).encode(), "x")


@pytest.fixture
def xl_bank(tmp_path) -> Bank:
    return Bank.create(tmp_path / "xl", xl_base())


def _embedding(k=1, widths=(3, 5), names=("embedding", "embedding_2")):
    rng = np.random.default_rng(0)
    return {n: rng.standard_normal((k, w)).astype(np.float32) for n, w in zip(names, widths)}


def test_sdxl_concepts_store_one_embedding_per_encoder(xl_bank):
    bf.learn(xl_bank, "dog", embedding=_embedding())
    assert verify(xl_bank).ok


@pytest.mark.parametrize("emb, words", [
    (_embedding(names=("embedding",)), "expected exactly the tensors ['embedding', 'embedding_2'] (one per text encoder)"),
    (_embedding(widths=(3, 8)), "embedding_2 must be float32 [k>=1, 5]"),
    ({**_embedding(), "embedding_2": np.zeros((2, 5), np.float32)}, "hold different numbers of vectors"),
    ({**_embedding(), "embedding_3": np.zeros((1, 5), np.float32)}, "expected exactly the tensors"),
])
def test_bad_sdxl_embeddings(xl_bank, emb, words):
    rev = bf.learn(xl_bank, "bad", embedding=emb)
    report = verify(xl_bank)
    assert [p["where"] for p in report.problems] == [rev.concepts["bad"].embedding.path]
    assert words in report.problems[0]["problem"]


def test_a_second_encoder_tensor_on_an_sd1_bank_is_invalid(bank):
    rev = bf.learn(bank, "bad", embedding=_embedding(widths=(8, 5)))
    assert "expected exactly one tensor 'embedding'" in verify(bank).problems[0]["problem"]
    assert rev.base.family is None
