"""The delta codec (cns_cli/bank/delta.py): the one place that knows a delta object's tensor names and dtypes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bankfactory as bf
from cns_cli.bank import Bank
from cns_cli.bank.delta import LayerDelta, decode_delta, encode_delta, expected_names, layers_of, read_delta, tensor_names
from cns_cli.bank.store import encode_object
from cns_cli.errors import BankFormatError

K, V = bf.LAYER_K, bf.LAYER_V
GOLDEN = Path(__file__).resolve().parents[2] / "format" / "examples" / "two-concepts.cnsbank"


def test_names_follow_the_spec():
    assert tensor_names(K) == (f"{K}.rows", f"{K}.coef")
    assert expected_names([K, V]) == {f"{K}.rows", f"{K}.coef", f"{V}.rows", f"{V}.coef"}
    assert layers_of([f"{V}.coef", f"{K}.rows", f"{V}.rows", "other"]) == [V, K]


def test_encode_casts_and_round_trips():
    coef = np.arange(6, dtype=np.float64).reshape(3, 2) / 4
    t = encode_delta({K: (np.array([1, 5, 9], np.int64), coef), V: LayerDelta(np.array([], np.int32), np.zeros((0, 2)))})
    assert set(t) == expected_names([K, V])
    assert t[f"{K}.rows"].dtype == np.int32 and t[f"{K}.coef"].dtype == np.float32
    assert t[f"{V}.rows"].shape == (0,) and t[f"{V}.coef"].shape == (0, 2)  # an empty layer is kept
    d = decode_delta(t)
    assert list(d) == [K, V] and d[K].n == 3 and d[K].rank == 2 and d[V].n == 0
    rows, c = d[K]
    assert rows.tolist() == [1, 5, 9] and np.array_equal(c, coef.astype(np.float32))
    assert encode_delta(d).keys() == t.keys()
    assert all(np.array_equal(encode_delta(d)[k], t[k]) for k in t)


@pytest.mark.parametrize("rows, coef, why", [
    ([3, 1], np.zeros((2, 2)), "not strictly increasing"),
    ([1, 1], np.zeros((2, 2)), "not strictly increasing"),
    ([-1, 2], np.zeros((2, 2)), "out of the int32 range"),
    ([1, 2**31], np.zeros((2, 2)), "out of the int32 range"),
    ([[1, 2]], np.zeros((2, 2)), "1-d integer"),
    ([1.0, 2.0], np.zeros((2, 2)), "1-d integer"),
    ([1, 2], np.zeros((3, 2)), r"coef must be \[2, rank\]"),
    ([1, 2], np.zeros(2), r"coef must be \[2, rank\]"),
])
def test_encode_refuses_what_no_writer_may_store(rows, coef, why):
    with pytest.raises(ValueError, match=why):
        encode_delta({K: (np.array(rows), coef)})


def test_decode_names_a_missing_tensor():
    t = encode_delta({K: ([1], np.zeros((1, 2)))})
    del t[f"{K}.coef"]
    with pytest.raises(BankFormatError, match=r"no tensor '.*to_k\.coef'"):
        decode_delta(t, [K])
    assert decode_delta(t, []) == {}


def test_the_factory_and_the_golden_banks_are_encoded_by_the_codec(tmp_path):
    bank = bf.build_bank(tmp_path / "b.cnsbank", 1)
    c = bank.head().concepts["concept-0"]
    raw = bank.read_object(c.delta)
    d = read_delta(bank, c)
    assert list(d) == list(c.neurons.per_layer)
    assert encode_object(encode_delta(d), "delta", {"concept": "concept-0"}) == bank.read_object_bytes(c.delta)
    assert all(np.array_equal(encode_delta(d)[k], raw[k]) for k in raw)
    golden = Bank.open(GOLDEN)
    for name, concept in golden.head().concepts.items():
        d = read_delta(golden, concept)
        assert {layer: x.n for layer, x in d.items()} == concept.neurons.per_layer  # hat keeps its empty to_v
        assert encode_object(encode_delta(d), "delta") == golden.read_object_bytes(concept.delta)
