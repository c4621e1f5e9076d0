"""The UNet's cross-attention K/V projections: applying stored deltas, and a trainable wrapper.

Applying N concepts costs O(total delta size): only rows some concept owns are touched (one (m, d) add per
layer), never a pass over all weights per concept.
"""

from __future__ import annotations

import torch
from torch import nn

from ..method.delta import merged_rows
from .loading import kv_layers


class ConceptTensors:
    """One concept's tensors in torch form: rows/coef per layer and its basis slice B (d, r)."""

    def __init__(self, rows: dict[str, torch.Tensor], coef: dict[str, torch.Tensor], basis_slice: torch.Tensor):
        self.rows, self.coef, self.basis_slice = rows, coef, basis_slice


# layer -> (the rows changed, (m,) long, on the CPU; their weights before the change, (m, d) in the layer's dtype)
SavedRows = dict[str, tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def apply_deltas(unet, concepts: list[ConceptTensors], saved: SavedRows | None = None) -> dict[str, torch.Tensor]:
    """W <- W + Σ_t S_tᵀ A_t B_tᵀ in place, per layer, for the rows any concept owns. Returns the rows
    changed per layer. The sum is computed in float32 and added once, so the order of concepts does not
    change the result beyond float32 addition of their (few) overlapping rows.

    With `saved` (a dict), each changed layer's rows are copied into it before they change, so that
    `restore_rows(unet, saved)` puts back the exact weights (copying, not subtracting: float addition does
    not round-trip)."""
    changed = {}
    for name, layer in kv_layers(unet).items():
        parts = [(c.rows[name], c.coef[name], c.basis_slice) for c in concepts if name in c.rows and c.rows[name].numel()]
        if not parts:
            continue
        rows, delta = merged_rows(parts)
        w = layer.weight
        idx = rows.to(w.device)
        before = w[idx]  # advanced indexing: a copy
        if saved is not None:
            saved[name] = (rows, before)  # never written to: the sum below is a new tensor
        w[idx] = (before.float() + delta.to(w.device)).to(w.dtype)
        changed[name] = rows
    return changed


@torch.no_grad()
def restore_rows(unet, saved: SavedRows) -> None:
    """Put back the rows `apply_deltas(..., saved)` copied: the layers' weights become bit-identical to what
    they were before (on the device and in the dtype they had then)."""
    layers = kv_layers(unet)
    for name, (rows, before) in saved.items():
        w = layers[name].weight
        w[rows.to(w.device)] = before.to(w.device, w.dtype)


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
