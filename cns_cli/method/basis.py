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


# Shrinkage of the protected moment in the concept-slice eigenproblem, as a share of its mean eigenvalue. INFERRED
# (ours, not tuned): LayerNormed text states have directions with almost no energy (the lowest is one no token
# reaches); without a floor the ratio there is 0/0 and the "most selective" direction would be estimation noise.
CONCEPT_SLICE_SHRINK = 1e-2
# Share of the steps a concept slice spends training the token alone before its basis is chosen from the token's
# states (INFERRED, ours, not tuned: the slice has to see the concept, and the token starts as its class word).
SLICE_WARMUP = 0.2


def concept_basis(concept_moment, protected_moment, taken, rank: int, shrink: float = CONCEPT_SLICE_SHRINK):
    """A concept-aware slice (format 1.3, docs/method.md): the `rank` directions of the text space that carry the
    most of the concept's state energy per unit of protected energy, orthogonal to the bases `taken` of the
    earlier concepts.

    concept_moment M_c and protected_moment M_p (d, d) torch tensors; taken (d, k) orthonormal columns (k may be
    0). Within U, an orthonormal basis of the complement of `taken`, solve (UᵀM_cU) v = ρ (UᵀM_pU + s·I) v
    (s = shrink · mean eigenvalue of UᵀM_pU), keep the top `rank` v and return B = orth(U V) (d, rank) float32,
    columns sign-fixed (largest entry positive) so the result does not depend on the solver's signs.
    The generalised eigenvectors maximise the ratio κ-like quantity vᵀM_c v / vᵀM_p v, the per-direction form of
    ROME's / Custom Diffusion's M⁻¹c."""
    import torch

    mc, mp = concept_moment.double().cpu(), protected_moment.double().cpu()
    d = mc.shape[0]
    if taken is not None and taken.shape[1]:
        q, _ = torch.linalg.qr(taken.double().cpu(), mode="complete")
        u = q[:, taken.shape[1]:]
    else:
        u = torch.eye(d, dtype=torch.float64)
    if u.shape[1] < rank:
        raise ValueError(f"only {u.shape[1]} text directions are left outside the earlier concepts' slices; "
                         f"a concept slice needs {rank}")
    mc_u, mp_u = u.T @ mc @ u, u.T @ mp @ u
    mp_u = mp_u + shrink * (torch.trace(mp_u) / mp_u.shape[0]) * torch.eye(mp_u.shape[0], dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(mp_u)
    whiten = evecs / evals.clamp(min=torch.finfo(torch.float64).tiny).sqrt()  # Wᵀ M_p W = I
    _, y = torch.linalg.eigh(whiten.T @ mc_u @ whiten)  # ascending
    v = whiten @ y[:, -rank:].flip(1)
    b, _ = torch.linalg.qr(u @ v)
    b = b * torch.sign(b.gather(0, b.abs().argmax(dim=0, keepdim=True)))
    return b.float()
