"""What is inside each kind of object (safetensors), and the checks `verify` runs on it.

Tensor names (format/SPEC.md, "Objects"):
- basis:           "Q"                 F32 [dim, dim], orthogonal
- delta:           "<layer>.rows"      I32 [n]        strictly increasing output-row indices (the neurons)
                   "<layer>.coef"      F32 [n, rank]  trained coefficients A; dW = S^T A B^T
                   "basis"             F32 [dim, rank] orthonormal: the concept's own B (format 1.3; only when
                                                      its slice.start is null)
                   (encoded and decoded only by bank/delta.py)
- embedding:       "embedding"         F32 [k, w_1], k >= 1 vectors for the concept's token in the (first) text encoder
                   "embedding_2"       F32 [k, w_2] the same k vectors in the second text encoder (SDXL; format 1.2)
                   (w_i = base.embedding_widths: text_dim for SD 1.x / 2.x; names from `embedding_names`)
- general neurons: "<layer>"           I32 [m]        strictly increasing rows
Every object's safetensors `__metadata__` has one entry, "cns": a JSON map whose "kind" is one of the
names above (one entry because safetensors writes several in a random order).
"""

from __future__ import annotations

import numpy as np

from .delta import BASIS, decode_delta, expected_names
from .models import Concept, Revision

def _increasing_rows(rows: np.ndarray, limit: int) -> str | None:
    if rows.dtype != np.int32 or rows.ndim != 1:
        return f"rows must be a 1-d int32 tensor, got {rows.dtype} {list(rows.shape)}"
    if rows.size and (rows[0] < 0 or rows[-1] >= limit):
        return f"rows out of range [0, {limit})"
    if rows.size > 1 and not np.all(np.diff(rows) > 0):
        return "rows are not strictly increasing"
    return None


def check_delta(tensors: dict[str, np.ndarray], concept: Concept, rev: Revision) -> list[str]:
    """Problems with a concept's delta object, as one-line strings (empty list = fine)."""
    problems: list[str] = []
    expected = expected_names(concept.neurons.per_layer, concept.slice.own)
    if set(tensors) != expected:
        extra, missing = sorted(set(tensors) - expected), sorted(expected - set(tensors))
        problems.append(f"tensor names differ from neurons.per_layer (missing {missing[:3]}, extra {extra[:3]})")
        return problems
    layers = decode_delta(tensors, concept.neurons.per_layer)
    for layer, n in concept.neurons.per_layer.items():
        rows, coef = layers[layer]
        why = _increasing_rows(rows, rev.base.kv_layers[layer])
        if why:
            problems.append(f"{layer}: {why}")
        if rows.shape != (n,):
            problems.append(f"{layer}: {rows.size} rows, the revision says {n}")  # size: rows may be 0-d
        if coef.dtype != np.float32 or coef.shape != (n, concept.slice.rank):
            problems.append(f"{layer}: coef must be float32 [{n}, {concept.slice.rank}], got {coef.dtype} {list(coef.shape)}")
        elif not np.isfinite(coef).all():
            problems.append(f"{layer}: coef has NaN or Inf")
    if concept.slice.own:
        problems += _check_own_basis(tensors[BASIS], rev.basis.dim if rev.basis else rev.base.text_dim, concept.slice.rank)
    return problems


def _check_own_basis(b: np.ndarray, dim: int, rank: int) -> list[str]:
    """A concept's own basis (format 1.3): float32 [dim, rank], finite, orthonormal columns."""
    if b.dtype != np.float32 or b.shape != (dim, rank):
        return [f"basis must be float32 [{dim}, {rank}], got {b.dtype} {list(b.shape)}"]
    if not np.isfinite(b).all():
        return ["basis has NaN or Inf"]
    err = float(np.abs(b.T.astype(np.float64) @ b - np.eye(rank)).max())
    return [] if err <= 1e-4 else [f"basis columns are not orthonormal (max |BᵀB - I| = {err:.2e})"]


def embedding_names(n_encoders: int) -> list[str]:
    """Tensor names of an embedding object, one per text encoder in pipeline order: "embedding" (text_encoder),
    "embedding_2" (text_encoder_2, SDXL)."""
    return ["embedding"] + [f"embedding_{i + 1}" for i in range(1, n_encoders)]


def check_embedding(tensors: dict[str, np.ndarray], rev: Revision) -> list[str]:
    widths = rev.base.embedding_widths
    names = embedding_names(len(widths))
    if set(tensors) != set(names):
        want = "one tensor 'embedding'" if len(names) == 1 else f"the tensors {names} (one per text encoder)"
        return [f"expected exactly {want}, got {sorted(tensors)}"]
    rows = {tensors[n].shape[0] if tensors[n].ndim == 2 else None for n in names}
    for name, width in zip(names, widths):
        emb = tensors[name]
        if emb.dtype != np.float32 or emb.ndim != 2 or emb.shape[0] < 1 or emb.shape[1] != width:
            return [f"{name} must be float32 [k>=1, {width}], got {emb.dtype} {list(emb.shape)}"]
        if not np.isfinite(emb).all():
            return [f"{name} has NaN or Inf"]
    if len(rows) != 1:
        return [f"the tensors {names} hold different numbers of vectors"]
    return []


def check_basis(tensors: dict[str, np.ndarray], dim: int) -> list[str]:
    q = tensors.get("Q")
    if set(tensors) != {"Q"}:
        return [f"basis must hold exactly one tensor 'Q', got {sorted(tensors)}"]
    if q is None or q.dtype != np.float32 or q.shape != (dim, dim):
        return [f"basis must hold 'Q' float32 [{dim}, {dim}]"]
    err = float(np.abs(q.T.astype(np.float64) @ q - np.eye(dim)).max())
    if not np.isfinite(err) or err > 1e-4:
        return [f"basis is not orthogonal (max |QᵀQ - I| = {err:.2e})"]
    return []


def check_general_neurons(tensors: dict[str, np.ndarray], rev: Revision) -> list[str]:
    problems = []
    for layer, rows in tensors.items():
        if layer not in rev.base.kv_layers:
            problems.append(f"unknown layer {layer!r}")
            continue
        why = _increasing_rows(rows, rev.base.kv_layers[layer])
        if why:
            problems.append(f"{layer}: {why}")
    return problems
