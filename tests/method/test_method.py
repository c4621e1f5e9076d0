"""The method's pure functions on hand-made tensors: scores, masks, budget, basis, slices, deltas, regulariser."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cns_cli.method.basis import allocate_slice, orthogonal_basis
from cns_cli.method.delta import delta_rows, merged_rows, protection_gram, self_regularisation
from cns_cli.method.select import (budget_in_rows, concept_neurons, general_neurons, row_activation,
                                   row_attribution, top_rows)


def test_row_attribution_is_abs_weight_times_grad_summed_per_row():
    w = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    g = torch.tensor([[3.0, 1.0], [-4.0, 9.0]])
    assert torch.equal(row_attribution(w, g), torch.tensor([5.0, 2.0]))


def test_row_activation_weights_inputs_by_their_norm():
    w_abs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert torch.equal(row_activation(w_abs, torch.tensor([2.0, 3.0])), torch.tensor([2.0, 3.0, 5.0]))


def test_top_rows_takes_the_ceiling_share():
    mask = top_rows(torch.tensor([0.1, 0.9, 0.5, 0.3, 0.7]), 0.3)  # ceil(1.5) = 2 rows
    assert mask.tolist() == [False, True, False, False, True]


def test_general_neurons_need_a_majority_of_prompts():
    # Row 0 is top in all 3 prompts, row 1 in 1 of 3, row 2 in 2 of 3.
    prompts = [{"l": torch.tensor([9.0, 1.0, 5.0, 0.0])}, {"l": torch.tensor([9.0, 8.0, 0.0, 0.0])},
               {"l": torch.tensor([9.0, 0.0, 7.0, 0.0])}]
    assert general_neurons(prompts, 0.5, 0.6)["l"].tolist() == [True, False, True, False]
    assert general_neurons(prompts, 0.5, 1.0)["l"].tolist() == [True, False, False, False]


def test_concept_neurons_are_base_minus_general_ranked_globally():
    base = {"a": torch.tensor([5.0, 4.0, 0.0]), "b": torch.tensor([3.0, 6.0, 1.0, 2.0])}
    general = {"a": torch.tensor([True, False, False]), "b": torch.tensor([False, False, False, False])}
    rows = concept_neurons(base, general, budget_rows=3)
    assert rows["a"].tolist() == [1] and rows["b"].tolist() == [0, 1]  # 6, 4, 3 — never general row a0
    rows = concept_neurons(base, general, budget_rows=100)  # zero scores are never taken
    assert rows["a"].tolist() == [1] and rows["b"].tolist() == [0, 1, 2, 3]


def test_budget_matches_the_papers_share_at_sd15_shapes():
    # 0.13 % of SD 1.5's 859.5 M UNet parameters in rows of 768: ≈1,455 of 24,960 K/V rows.
    assert budget_in_rows(0.0013, 859_520_964, 768) == 1454


def test_basis_is_orthogonal_and_reproducible():
    q = orthogonal_basis(64, seed=3)
    assert q.dtype == np.float32 and q.shape == (64, 64)
    assert np.abs(q.T.astype(np.float64) @ q - np.eye(64)).max() < 1e-5
    assert np.array_equal(q, orthogonal_basis(64, seed=3)) and not np.array_equal(q, orthogonal_basis(64, seed=4))


def test_slices_are_disjoint_until_the_basis_is_full():
    used: list[tuple[int, int]] = []
    for expected in (0, 4, 8, 12):
        start, full = allocate_slice(used, 16, 4)
        assert (start, full) == (expected, False)
        used.append((start, 4))
    start, full = allocate_slice(used, 16, 4)
    assert full and 0 <= start <= 12
    assert allocate_slice([(0, 4), (8, 4)], 16, 4) == (4, False)  # a freed (forgotten) slice is reused
    assert allocate_slice([(0, 4), (8, 4)], 16, 6)[1]  # no 6 free columns in a row: full


def test_delta_is_a_rank_r_product_in_the_selected_rows():
    q = torch.from_numpy(orthogonal_basis(8))
    b = q[:, 2:4]
    a = torch.randn(3, 2)
    rows, delta = merged_rows([(torch.tensor([1, 5, 6]), a, b)])
    assert rows.tolist() == [1, 5, 6] and torch.allclose(delta, a @ b.T)
    assert torch.linalg.matrix_rank(delta) <= 2


def test_merged_rows_add_overlapping_concepts():
    q = torch.from_numpy(orthogonal_basis(8))
    a1, a2 = torch.randn(2, 2), torch.randn(2, 2)
    rows, delta = merged_rows([(torch.tensor([0, 3]), a1, q[:, :2]), (torch.tensor([3, 7]), a2, q[:, 2:4])])
    assert rows.tolist() == [0, 3, 7]
    assert torch.allclose(delta[1], delta_rows(a1, q[:, :2])[1] + delta_rows(a2, q[:, 2:4])[0])


def test_orthogonal_slices_do_not_interact():
    """ΔW_s ΔW_tᵀ = 0 for disjoint slices: the reason summing concepts needs no fusion."""
    q = torch.from_numpy(orthogonal_basis(16)).double()
    d1 = torch.randn(5, 4).double() @ q[:, :4].T
    d2 = torch.randn(5, 4).double() @ q[:, 4:8].T
    assert (d1 @ d2.T).abs().max() < 1e-5 * d1.norm() * d2.norm()  # Q is float32: orthogonal to ~1e-7


def test_regulariser_equals_the_kv_drift_it_stands_for():
    """Σ_l tr(A G Aᵀ) with G from protection_gram equals ‖ΔW C‖² / m computed directly."""
    torch.manual_seed(0)
    q = torch.from_numpy(orthogonal_basis(12)).double()
    b = q[:, 3:6]
    states = torch.randn(40, 12).double()
    coefs = [torch.randn(4, 3).double(), torch.randn(2, 3).double()]
    direct = sum(((a @ b.T) @ states.T).pow(2).sum() for a in coefs) / states.shape[0]
    assert torch.allclose(self_regularisation(coefs, protection_gram(states, b)), direct)


def test_regulariser_is_zero_when_protected_states_are_orthogonal_to_the_slice():
    q = torch.from_numpy(orthogonal_basis(6)).double()
    states = torch.randn(10, 2).double() @ q[:, :2].T  # states live in columns 0-1
    assert self_regularisation([torch.randn(3, 2).double()], protection_gram(states, q[:, 2:4])) < 1e-10


@pytest.mark.parametrize("rank", [0, 17])
def test_allocate_slice_rejects_impossible_ranks(rank):
    with pytest.raises(ValueError):
        allocate_slice([], 16, rank)


def test_random_neurons_take_the_budget_from_non_general_rows_only():
    import torch

    from cns_cli.method.select import random_neurons

    general = {"a": torch.tensor([True, False, False, True, False]), "b": torch.tensor([False, False, True])}
    eligible = {("a", 1), ("a", 2), ("a", 4), ("b", 0), ("b", 1)}
    picks = []
    for seed in range(6):
        rows = random_neurons(general, 3, torch.Generator().manual_seed(seed))
        chosen = {(n, int(r)) for n, rs in rows.items() for r in rs}
        assert len(chosen) == 3 and chosen <= eligible
        assert all(torch.equal(rs, torch.sort(rs).values) for rs in rows.values())
        picks.append(frozenset(chosen))
    assert len(set(picks)) > 1  # the stream matters
    everything = random_neurons(general, 100, torch.Generator().manual_seed(0))
    assert {(n, int(r)) for n, rs in everything.items() for r in rs} == eligible


def test_the_selection_knob_is_checked():
    import pytest

    from cns_cli.errors import UsageError
    from cns_cli.learn import LearnConfig

    with pytest.raises(UsageError, match="--selection must be attribution or random"):
        LearnConfig(selection="best")
