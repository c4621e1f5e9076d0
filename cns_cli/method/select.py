"""CNS steps (1)-(3): base neurons, general neurons, concept neurons = base − general, within a budget.

A neuron is one output row of an `attn2.to_k` / `attn2.to_v` weight (format/SPEC.md, "How cns computes what
it stores"). All functions are pure: dicts of per-layer tensors in, out.
"""

from __future__ import annotations

import math

import torch

Scores = dict[str, torch.Tensor]  # layer -> (rows,) float importance
Rows = dict[str, torch.Tensor]  # layer -> (n,) int64, strictly increasing


def row_attribution(weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """CNS step (1): first-order importance of each row, Σ_j |W_rj · ∂L/∂W_rj| (Cones-style attribution:
    the loss change if the weight were removed). (rows, d) x (rows, d) -> (rows,)."""
    return (weight * grad).abs().sum(dim=1)


def row_activation(weight_abs: torch.Tensor, state_norms: torch.Tensor) -> torch.Tensor:
    """CNS step (2) score of each row for one prompt: Σ_j |W_rj| · ‖c_:,j‖₂ (Wanda/ConceptPrune-style),
    c = the prompt's text states (tokens x d). INFERRED: needs no images and no UNet pass, so the whole
    calibration set costs one text-encoder pass. (rows, d), (d,) -> (rows,)."""
    return weight_abs @ state_norms


def top_rows(score: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean mask of the top ceil(fraction·rows) rows of one layer (ties broken by row index)."""
    k = min(score.numel(), max(1, math.ceil(fraction * score.numel())))
    mask = torch.zeros_like(score, dtype=torch.bool)
    mask[torch.topk(score, k, sorted=False).indices] = True
    return mask


def general_neurons(per_prompt: list[Scores], top_fraction: float, min_share: float) -> dict[str, torch.Tensor]:
    """CNS step (2): a row is general if it is in its layer's top `top_fraction` for at least `min_share`
    of the calibration prompts. Returns layer -> bool mask (rows,)."""
    return general_from_hits(prompt_hits(per_prompt, top_fraction), len(per_prompt), min_share)


def prompt_hits(per_prompt: list[Scores], top_fraction: float) -> dict[str, torch.Tensor]:
    """Per layer, how many of these prompts have each row in their top `top_fraction`: (rows,) float counts,
    which add up exactly over disjoint sets of prompts (a data-parallel learn splits the prompts over ranks)."""
    layers = per_prompt[0].keys()
    hits = {layer: torch.zeros(per_prompt[0][layer].numel()) for layer in layers}
    for scores in per_prompt:
        for layer in layers:
            hits[layer] += top_rows(scores[layer], top_fraction).float()
    return hits


def general_from_hits(hits: dict[str, torch.Tensor], prompts: int, min_share: float) -> dict[str, torch.Tensor]:
    """Rows in the top of at least `min_share` of `prompts` prompts: layer -> bool mask (rows,)."""
    return {layer: h >= min_share * prompts for layer, h in hits.items()}


def concept_neurons(base: Scores, general: dict[str, torch.Tensor], budget_rows: int) -> Rows:
    """CNS step (3): concept = base − general. The base neurons are the `budget_rows` highest-scoring
    non-general rows over ALL layers together (INFERRED: one global ranking, because the attribution is a
    loss change and so comparable across layers; per-layer quotas would force neurons into layers that do
    not matter for the concept). Rows with zero score are never taken."""
    names = sorted(base)
    flat = torch.cat([base[n].float().masked_fill(general[n], float("-inf")) for n in names])
    k = min(budget_rows, int(torch.isfinite(flat).logical_and(flat > 0).sum()))
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        chosen[torch.topk(flat, k).indices] = True
    return _per_layer(chosen, {n: base[n].numel() for n in names})


def _per_layer(chosen: torch.Tensor, sizes: dict[str, int]) -> Rows:
    """A mask over all layers' rows laid end to end (in `sizes` order) -> sorted row indices per layer."""
    out, offset = {}, 0
    for n, size in sizes.items():
        out[n] = torch.nonzero(chosen[offset : offset + size]).flatten()
        offset += size
    return out


def random_neurons(general: dict[str, torch.Tensor], budget_rows: int, gen: torch.Generator) -> Rows:
    """Ablation of CNS step (1): `budget_rows` non-general rows drawn uniformly over all layers together
    (the same budget and layer set as `concept_neurons`, without looking at the concept)."""
    names = sorted(general)
    eligible = torch.nonzero(~torch.cat([general[n] for n in names])).flatten()
    pick = eligible[torch.randperm(eligible.numel(), generator=gen)[:budget_rows]]
    chosen = torch.zeros(sum(general[n].numel() for n in names), dtype=torch.bool)
    chosen[pick] = True
    return _per_layer(chosen, {n: general[n].numel() for n in names})


def budget_in_rows(budget: float, unet_parameters: int, row_width: int) -> int:
    """The paper's budget (≈0.13 % of UNet parameters per concept) as a number of K/V rows."""
    return max(1, int(budget * unet_parameters / row_width))
