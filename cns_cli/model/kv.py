"""The UNet's cross-attention K/V projections: applying stored deltas, and a trainable wrapper.

Applying N concepts costs O(total delta size): only rows some concept owns are touched (one (m, d) add per
layer), never a pass over all weights per concept.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..method.delta import merged_rows
from .loading import kv_layers


class ConceptTensors:
    """One concept's tensors in torch form: rows/coef per layer and its basis slice B (d, r)."""

    def __init__(self, rows: dict[str, torch.Tensor], coef: dict[str, torch.Tensor], basis_slice: torch.Tensor):
        self.rows, self.coef, self.basis_slice = rows, coef, basis_slice


class SavedLayer(NamedTuple):
    """What `apply_deltas` changed in one layer, kept so that `restore_rows` can take it out again."""

    rows: torch.Tensor  # (m,) long, on the CPU: the rows changed
    before: torch.Tensor  # (m, d) in the layer's dtype: their weights before the change
    delta: torch.Tensor  # (m, d) float32: what was added to them


SavedRows = dict[str, SavedLayer]  # layer path -> what changed there


@torch.no_grad()
def apply_deltas(unet, concepts: list[ConceptTensors], saved: SavedRows | None = None) -> dict[str, torch.Tensor]:
    """W <- W + Σ_t S_tᵀ A_t B_tᵀ in place, per layer, for the rows any concept owns. Returns the rows
    changed per layer. The sum is computed in float32 and added once, so the order of concepts does not
    change the result beyond float32 addition of their (few) overlapping rows.

    With `saved` (a dict), each changed layer's rows and the delta added to them are kept there, so that
    `restore_rows(unet, saved)` can take the change out again (see there)."""
    changed = {}
    for name, layer in kv_layers(unet).items():
        parts = [(c.rows[name], c.coef[name], c.basis_slice) for c in concepts if name in c.rows and c.rows[name].numel()]
        if not parts:
            continue
        rows, delta = merged_rows(parts)
        w = layer.weight
        idx = rows.to(w.device)
        before = w[idx]  # advanced indexing: a copy
        delta = delta.to(w.device)
        if saved is not None:
            saved[name] = SavedLayer(rows, before, delta)  # never written to: the sum below is a new tensor
        w[idx] = (before.float() + delta).to(w.dtype)
        changed[name] = rows
    return changed


@torch.no_grad()
def restore_rows(unet, saved: SavedRows) -> list[str]:
    """Take out what `apply_deltas(..., saved)` added, like PEFT's unmerge, and return the layers where that was a
    subtraction. A row that still holds exactly what apply_deltas wrote gets its saved weights back (bit-identical
    to before, on the device and in the dtype it had then; float addition does not round-trip, so subtracting
    would not be); a row changed since (a LoRA fused into the pipeline afterwards) gets current - delta in
    float32, which keeps that later change (within float rounding). Every layer is checked before any is
    written: a layer gone or reshaped is refused (ModelError) with the UNet untouched."""
    layers = _layers_to_restore(unet, saved)
    subtracted = []
    for name, (rows, before, delta) in saved.items():
        w = layers[name].weight
        idx = rows.to(w.device)
        now, delta = w[idx], delta.to(w.device)
        untouched = (now == (before.float().to(w.device) + delta).to(w.dtype)).all(dim=1, keepdim=True)  # (m, 1)
        w[idx] = torch.where(untouched, before.to(w.device, w.dtype), (now.float() - delta).to(w.dtype))
        if not untouched.all():
            subtracted.append(name)
    return subtracted


def _layers_to_restore(unet, saved: SavedRows) -> dict:
    """The UNet's K/V layers, after checking that every layer `saved` names is there with the rows it had."""
    from ..errors import ModelError

    layers = kv_layers(unet)
    for name, (rows, before, _) in saved.items():
        layer = layers.get(name)
        if layer is None or layer.weight.ndim != 2 or layer.weight.shape[1] != before.shape[1] or \
                layer.weight.shape[0] <= int(rows.max()):
            raise ModelError(f"the UNet's layer {name} is not the one the bank was applied to (it was replaced or "
                             "removed since); the concepts cannot be taken out of this pipeline: load the base again")
    return layers


class TrainableKV(nn.Module):
    """Wraps one frozen K/V Linear: y = W x + scatter_rows(A (Bᵀ x)). Only `coef` (A, (n, r)) trains.

    Computing the delta on the activations (like a LoRA) instead of rebuilding W each step keeps the
    backward pass to two thin matmuls: (.., d) @ (d, r) and (.., r) @ (r, n).
    """

    def __init__(self, base: nn.Linear, rows: torch.Tensor, basis_slice: torch.Tensor):
        super().__init__()
        self.base = base
        self.register_buffer("rows", rows.to(base.weight.device), persistent=False)
        self.register_buffer("basis_slice", basis_slice.to(base.weight.device, torch.float32), persistent=False)
        self.coef = nn.Parameter(torch.zeros(rows.numel(), basis_slice.shape[1], device=base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        d = (x.float() @ self.basis_slice) @ self.coef.T  # (..., n)
        return y.index_add(-1, self.rows, d.to(y.dtype))


def attach_trainable(unet, rows: dict[str, torch.Tensor], basis_slice: torch.Tensor) -> dict[str, TrainableKV]:
    """Replace every K/V layer that has selected rows with a TrainableKV; returns them by layer name."""
    wrappers = {}
    for name, layer in kv_layers(unet).items():
        if name in rows and rows[name].numel():
            wrappers[name] = TrainableKV(layer, rows[name], basis_slice)
            unet.set_submodule(name, wrappers[name])
    return wrappers
