"""CNS step (5): a concept's delta ΔW = Sᵀ A Bᵀ, and the self-regularisation of step (6).

Shapes: per layer, S selects n rows of W (out x d), A is (n, r), B = Q[:, s:s+r] is (d, r).
"""

from __future__ import annotations

import torch


def delta_rows(coef: torch.Tensor, basis_slice: torch.Tensor) -> torch.Tensor:
    """The n changed rows of ΔW: A Bᵀ, (n, r) x (d, r) -> (n, d)."""
    return coef @ basis_slice.T


def merged_rows(parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_t S_tᵀ A_t B_tᵀ restricted to the rows any concept touches, for one layer.

    parts: (rows (n_t,), coef (n_t, r_t), B_t (d, r_t)) per concept. Returns (rows (m,) sorted unique,
    delta (m, d)). Cost O(Σ n_t r_t d): proportional to the concepts' size, never to the full weight.
    """
    all_rows = torch.unique(torch.cat([rows for rows, _, _ in parts]))  # sorted
    d = parts[0][2].shape[0]
    out = torch.zeros(all_rows.numel(), d, dtype=parts[0][1].dtype)
    for rows, coef, b in parts:
        out.index_add_(0, torch.searchsorted(all_rows, rows), delta_rows(coef, b))
    return all_rows, out


def protection_gram(states: torch.Tensor, basis_slice: torch.Tensor) -> torch.Tensor:
    """G = (Bᵀ C)(Bᵀ C)ᵀ / m for text states C (m tokens x d): the r x r matrix with which
    ‖ΔW C‖² / m = Σ_rows a G aᵀ. Computed once per learn, so the regulariser costs no UNet pass."""
    p = states.to(basis_slice.dtype) @ basis_slice  # (m, r)
    return p.T @ p / max(states.shape[0], 1)


def self_regularisation(coefs: list[torch.Tensor], gram: torch.Tensor) -> torch.Tensor:
    """CNS step (6), INFERRED form (the paper's L_reg is not public): the mean squared change of the K/V
    outputs of protected prompts (earlier concepts' prompts and the calibration set),
    Σ_l ‖ΔW_l C‖² / m = Σ_l tr(A_l G A_lᵀ). Exact, not an approximation, because ΔW_l = Sᵀ A_l Bᵀ."""
    total = gram.new_zeros(())
    for a in coefs:
        total = total + ((a @ gram) * a).sum()
    return total
