"""The drift budget (method/protect.py) on hand-made tensors: ρ is the measured relative change of K/V outputs,
the projection enforces it exactly, it is scale-free, and the protected sets are weighted per prompt."""

from __future__ import annotations

import pytest
import torch

from cns_cli.method.protect import drift_budget, neighbour_prompts, selectivity, set_moments


def _setup(seed=0, d=12, r=3, rows=(5, 7), out=20):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    b = q[:, :r].float()
    weights = {f"l{i}": torch.randn(out, d, generator=g) for i in range(len(rows))}
    coefs = [torch.randn(n, r, generator=g) for n in rows]
    states = torch.randn(40, d, generator=g) * torch.linspace(0.1, 3.0, d)  # anisotropic, like text states
    return b, weights, coefs, states, rows


def _measured(w, rows, coef, b, states):
    """‖ΔW C‖² / ‖W C‖² computed the long way, with ΔW built row by row."""
    delta = torch.zeros_like(w)
    delta[list(range(rows))] = coef @ b.T
    return float((states @ delta.T).pow(2).sum() / (states @ w.T).pow(2).sum())


def test_ratio_is_the_relative_change_of_the_layer_outputs():
    b, weights, coefs, states, rows = _setup()
    budget = drift_budget({"calibration": states.T @ states / len(states)}, weights, b, 1e-3)
    rho = budget.ratios(coefs)
    for i, (w, n, a) in enumerate(zip(weights.values(), rows, coefs)):
        assert rho[i, 0].item() == pytest.approx(_measured(w, n, a, b, states), rel=1e-4)


def test_projection_puts_every_layer_and_set_exactly_on_or_inside_the_budget():
    b, weights, coefs, states, _ = _setup()
    moments = {"a": states.T @ states / len(states), "b": states[:5].T @ states[:5] / 5}
    budget = drift_budget(moments, weights, b, 1e-3)
    small = torch.full_like(coefs[1], 1e-6)  # already inside: must not move
    coefs = [coefs[0] * 100, small.clone()]
    budget.project_(coefs)
    rho = budget.ratios(coefs)
    assert rho.max() <= 1e-3 * (1 + 1e-5)
    assert rho[0].max().item() == pytest.approx(1e-3, rel=1e-5)  # the binding set sits on the boundary
    assert torch.equal(coefs[1], small)


def test_ratio_does_not_change_with_the_scale_of_states_or_weights():
    """The reason for a relative budget: a model with 4x larger text states or 10x larger K/V weights
    (and coefficients in proportion) gets the same ρ, where λ Σ tr(A G Aᵀ) changes by 16x."""
    b, weights, coefs, states, _ = _setup()
    m = states.T @ states / len(states)
    rho = drift_budget({"c": m}, weights, b, 1e-3).ratios(coefs)
    scaled = drift_budget({"c": 16 * m}, {k: 10 * w for k, w in weights.items()}, b, 1e-3)
    assert torch.allclose(scaled.ratios([10 * a for a in coefs]), rho, rtol=1e-4)


def test_moments_weight_each_prompt_alike_and_split_bos_content_padding():
    d = 4
    states = torch.zeros(2, 6, d)
    states[:, 0, 0] = 1.0  # BOS
    states[0, 1:3, 1] = 1.0  # prompt 0: 2 content tokens (1, 2), padding 3..5
    states[1, 1:5, 2] = 2.0  # prompt 1: 4 content tokens (1..4), padding 5
    states[0, 3:, 3] = 1.0
    states[1, 5:, 3] = 3.0
    m = set_moments(states, torch.tensor([3, 5]))
    assert m["bos"][0, 0] == 1.0
    # per prompt then per prompt mean: (1 * e1e1ᵀ + 4 * e2e2ᵀ) / 2, whatever the token counts
    assert torch.allclose(torch.diag(m["content"]), torch.tensor([0.0, 0.5, 2.0, 0.0]))
    assert torch.allclose(torch.diag(m["padding"]), torch.tensor([0.0, 0.0, 0.0, (1 + 9) / 2]))


def test_selectivity_of_a_blind_slice_is_its_rank_and_best_bounds_it():
    """E[κ_B] = r for states drawn like the protected ones; cᵀM⁻¹c ≥ κ_B for every slice."""
    g = torch.Generator().manual_seed(1)
    d, r = 16, 4
    scale = torch.linspace(0.2, 2.0, d)
    protected = torch.randn(20000, d, generator=g) * scale
    m = protected.T @ protected / len(protected)
    b, _ = torch.linalg.qr(torch.randn(d, r, generator=g))
    like = selectivity(torch.randn(20000, d, generator=g) * scale, m, b)
    assert like["slice"] == pytest.approx(r, rel=0.05) and like["best"] == pytest.approx(d, rel=0.05)
    concept = torch.randn(50, d, generator=g) * scale + 3 * b[:, 0]  # a concept that lives along the slice
    sel = selectivity(concept, m, b)
    assert r < sel["slice"] <= sel["best"]


def test_neighbour_prompts_name_the_class_without_the_token():
    out = neighbour_prompts("dog", ["on the beach", None, "on the beach", "  "])
    assert out[:2] == ["a dog", "a photo of a dog"]
    assert "a brown dog" in out and "a photo of a dog, on the beach" in out
    assert len(out) == len(set(out)) and not any("<" in p for p in out)


def test_concept_basis_finds_the_concept_directions_the_protected_prompts_leave_dark():
    from cns_cli.method.basis import concept_basis

    g = torch.Generator().manual_seed(2)
    d, r = 16, 2
    protected = torch.randn(5000, d, generator=g) * torch.linspace(0.5, 2.0, d)
    protected[:, 3] *= 0.05  # a direction protected prompts hardly use ...
    m_p = protected.T @ protected / len(protected)
    concept = torch.randn(200, d, generator=g)
    concept[:, 3] *= 6.0  # ... that the concept uses a lot
    m_c = concept.T @ concept / len(concept)
    b = concept_basis(m_c, m_p, torch.zeros(d, 0), r)
    assert torch.allclose(b.T @ b, torch.eye(r), atol=1e-5)
    assert b[3].abs().max() > 0.9  # the dark direction is in the slice
    blind, _ = torch.linalg.qr(torch.randn(d, r, generator=g))
    assert selectivity(concept, m_p, b)["slice"] > 10 * selectivity(concept, m_p, blind)["slice"]


def test_concept_basis_stays_orthogonal_to_earlier_slices():
    from cns_cli.method.basis import concept_basis

    g = torch.Generator().manual_seed(3)
    d = 12
    earlier, _ = torch.linalg.qr(torch.randn(d, 5, generator=g))
    x = torch.randn(300, d, generator=g)
    b = concept_basis(x.T @ x, torch.eye(d), earlier, 4)
    assert (earlier.T @ b).abs().max() < 1e-5 and torch.allclose(b.T @ b, torch.eye(4), atol=1e-5)
    with pytest.raises(ValueError, match="only 7 text directions are left"):
        concept_basis(x.T @ x, torch.eye(d), earlier, 8)
