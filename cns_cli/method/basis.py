"""CNS step (4): the bank-wide orthogonal basis and each concept's slice of it.

INFERRED (ours; the CNS paper, Liao et al., ICCV 2025, is silent on orthogonality; format/SPEC.md, "How cns
computes what it stores"): borrowed from Orthogonal Adaptation (Po et al., CVPR 2024). Concept t's delta only reads the text state through
B_t = Q[:, start:start+r]; disjoint slices make two concepts' deltas act on orthogonal input directions,
so ΔW_s ΔW_tᵀ = 0 and summing them needs no fusion.
"""

from __future__ import annotations

import numpy as np

BASIS_SEED = 0


def orthogonal_basis(dim: int, seed: int = BASIS_SEED) -> np.ndarray:
    """Q (dim x dim, float32, QᵀQ = I): QR of a seeded Gaussian matrix, signs fixed so R has a positive
    diagonal (makes Q unique for a given matrix). Computed in float64 and stored once per bank, so that no
    reader depends on LAPACK giving the same bits everywhere."""
    g = np.random.default_rng(seed).standard_normal((dim, dim))
    q, r = np.linalg.qr(g)
    q = q * np.sign(np.diag(r))[None, :]
    return q.astype(np.float32)


def allocate_slice(used: list[tuple[int, int]], dim: int, rank: int) -> tuple[int, bool]:
    """First free block of `rank` columns given the (start, rank) slices in use.

    Returns (start, full): `full` is True when no disjoint block is left; the slice then reuses the columns
    used by the fewest concepts (deltas still add exactly, but stop being orthogonal to those concepts').
    """
    if rank < 1 or rank > dim:
        raise ValueError(f"rank must be in [1, {dim}], got {rank}")
    load = np.zeros(dim, dtype=np.int64)  # how many concepts use each column
    for start, r in used:
        load[start : start + r] += 1
    window = np.convolve(load, np.ones(rank, dtype=np.int64), mode="valid")  # window[s] = load of [s, s+rank)
    free = np.flatnonzero(window == 0)
    if free.size:
        return int(free[0]), False
    return int(np.argmin(window)), True
