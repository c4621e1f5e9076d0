"""The tensor layout of a concept's delta object (format/SPEC.md, "Objects"), in one place.

Per layer l (a K/V module path) the object holds two tensors:
    "<l>.rows"   I32 [n]        strictly increasing output-row indices (the neurons S)
    "<l>.coef"   F32 [n, rank]  the trained coefficients A; ΔW_l = Sᵀ A Bᵀ
and, for a concept with its own basis (format 1.3, slice.start null), one more:
    "basis"      F32 [dim, rank] B itself (orthonormal columns), instead of the bank basis's columns
Every reader and writer goes through `encode_delta` / `decode_delta` (or `read_delta`), so no other module
spells these names. numpy only (no torch): the bank library and `cns inspect` use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import BankFormatError

ROWS, COEF, BASIS = "rows", "coef", "basis"
_SUFFIXES = ("." + ROWS, "." + COEF)


@dataclass(frozen=True, eq=False)
class LayerDelta:
    """One layer's part of a delta: rows (n,) and coef (n, rank), as stored (int32 / float32 when decoded)."""

    rows: np.ndarray
    coef: np.ndarray

    @property
    def n(self) -> int:
        return int(self.rows.shape[0])

    @property
    def rank(self) -> int:
        return int(self.coef.shape[1])

    def __iter__(self):  # rows, coef = layer_delta
        return iter((self.rows, self.coef))


def tensor_names(layer: str) -> tuple[str, str]:
    """The names of the two tensors of `layer`: ("<layer>.rows", "<layer>.coef")."""
    return f"{layer}.{ROWS}", f"{layer}.{COEF}"


def expected_names(layers: Iterable[str], own_basis: bool = False) -> set[str]:
    """Every tensor name a delta object over `layers` holds (exactly these, no others); `own_basis`: the concept
    has its own basis (format 1.3), so the object also holds "basis"."""
    return {name for layer in layers for name in tensor_names(layer)} | ({BASIS} if own_basis else set())


def layers_of(tensors: Iterable[str]) -> list[str]:
    """The layers a delta object's tensor names speak of, in first-seen order (a name that is neither a
    rows nor a coef tensor is ignored here; `expected_names` tells whether a set of names is complete)."""
    seen: dict[str, None] = {}
    for name in tensors:
        for suffix in _SUFFIXES:
            if name.endswith(suffix):
                seen.setdefault(name[: -len(suffix)], None)
    return list(seen)


def _rows_for_writing(layer: str, rows) -> np.ndarray:
    r = np.asarray(rows)
    if r.ndim != 1 or not (np.issubdtype(r.dtype, np.integer) or r.size == 0):
        raise ValueError(f"{layer}: rows must be a 1-d integer array, got {r.dtype} {list(r.shape)}")
    if r.size and (int(r.min()) < 0 or int(r.max()) > np.iinfo(np.int32).max):
        raise ValueError(f"{layer}: rows out of the int32 range [0, 2^31)")
    if r.size > 1 and not np.all(np.diff(r) > 0):
        raise ValueError(f"{layer}: rows are not strictly increasing")
    return np.ascontiguousarray(r, dtype=np.int32)


def encode_delta(layers: Mapping[str, LayerDelta | tuple], basis: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The tensors of a delta object: for each layer (in the given order; layers with n = 0 are kept, as
    written) its rows as int32 [n] and its coef as float32 [n, rank]. Refuses (ValueError) rows that are not
    a strictly increasing 1-d array of non-negative int32 values, or a coef that is not [n, rank]: a writer
    must never store such an object. Values are not otherwise changed (coef is cast to float32). `basis`
    (dim, rank): the concept's own basis (format 1.3), stored as float32 "basis"."""
    out: dict[str, np.ndarray] = {}
    if basis is not None:
        b = np.ascontiguousarray(basis, dtype=np.float32)
        if b.ndim != 2:
            raise ValueError(f"basis must be [dim, rank], got {list(b.shape)}")
        out[BASIS] = b
    for layer, part in layers.items():
        rows, coef = part
        r = _rows_for_writing(layer, rows)
        c = np.ascontiguousarray(coef, dtype=np.float32)
        if c.ndim != 2 or c.shape[0] != r.shape[0]:
            raise ValueError(f"{layer}: coef must be [{r.shape[0]}, rank], got {list(c.shape)}")
        name_rows, name_coef = tensor_names(layer)
        out[name_rows], out[name_coef] = r, c
    return out


def decode_delta(tensors: Mapping[str, np.ndarray], layers: Iterable[str] | None = None) -> dict[str, LayerDelta]:
    """layer -> LayerDelta of a delta object's tensors, for `layers` (a concept's `neurons.per_layer`; default:
    every layer named in `tensors`). The arrays are the stored ones (not copied or converted: `verify`'s checks,
    bank/layout.py, say whether they are well-formed). A missing tensor raises BankFormatError."""
    layers = layers_of(tensors) if layers is None else list(layers)
    out: dict[str, LayerDelta] = {}
    for layer in layers:
        name_rows, name_coef = tensor_names(layer)
        missing = [n for n in (name_rows, name_coef) if n not in tensors]
        if missing:
            raise BankFormatError(f"the delta object has no tensor {missing[0]!r}; `cns verify` lists every problem")
        out[layer] = LayerDelta(tensors[name_rows], tensors[name_coef])
    return out


def basis_of(tensors: Mapping[str, np.ndarray], concept, q: np.ndarray) -> np.ndarray:
    """B (dim, rank) of a concept whose delta object's tensors are `tensors`: its own "basis" (format 1.3,
    slice.start null) or columns [start, start + rank) of the bank basis q (dim, dim). The one place either is
    chosen: generation, export and learning read B through here."""
    if concept.slice.start is None:
        if BASIS not in tensors:
            raise BankFormatError("the delta object of a concept with its own basis has no 'basis' tensor; "
                                  "`cns verify` lists every problem")
        return tensors[BASIS]
    return q[:, concept.slice.start : concept.slice.start + concept.slice.rank]


def read_delta(bank, concept) -> dict[str, LayerDelta]:
    """A concept's delta, read (hash-checked) from `bank`: layer -> LayerDelta for every layer of its
    `neurons.per_layer`, in that order."""
    return decode_delta(bank.read_object(concept.delta), concept.neurons.per_layer)
