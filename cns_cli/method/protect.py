"""CNS step (6), the drift budget: what the concept's rows may change in the K/V outputs of prompts that must not
change (format/SPEC.md, "How cns computes what it stores"; docs/method.md has the reasons and the numbers).

Per layer l, protected set g and concept delta ΔW_l = Sᵀ A_l Bᵀ (S: the concept's rows, A_l (n, r), B (d, r)):

    ρ_{l,g}(A_l) = mean ‖ΔW_l c‖² / mean ‖W_l c‖²  =  tr(A_l G_g A_lᵀ) / E_{l,g}
    G_g = Bᵀ M_g B (r, r),   E_{l,g} = tr(W_l M_g W_lᵀ) over ALL rows of the layer,   M_g = E[c cᵀ] over g

ρ is the mean squared relative change of the layer's outputs on g: a ratio of two quantities in the same units,
so one budget ε means the same on every model, whatever the width or norm of its text states (λ Σ tr(A G Aᵀ),
the loss term it replaces, is in squared K/V units against the denoising MSE and pins the rows on every real
model). After every optimiser step `project_` scales each A_l onto {ρ_{l,g} ≤ ε for every g}: for one set that
is the exact projection in the G_g metric (the feasible set is a ball in it), for several it is the radial point
that satisfies all of them.

INFERRED (ours): the protected sets and their weighting. States are weighted per prompt, not per token (padding
is most of the 77 positions and would otherwise dominate the mean), and split into sets that each get the budget:
  bos          position 0: the same state in every prompt of a causal encoder, read by every image
  calibration  the content positions (1 .. end-of-text) of the calibration prompts: "images in general"
  padding      the positions after end-of-text of every protected prompt (the UNet attends to them too)
  neighbours   the concept's class without its token ("a dog", "a brown dog", the training captions untokened):
               so the identity does not leak into the class
  earlier      the prompts of the concepts learned before ("a photo of <rex> dog"): continual learning
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Colour words of the neighbour prompts "a {colour} {class}" (the basic colour terms; a word the model's tokenizer
# does not know still protects the class word around it).
COLOUR_WORDS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey")
SHRINK = 1e-6  # M + SHRINK·(tr M / d)·I wherever M is inverted: the lowest directions of LayerNormed states are ~0


def neighbour_prompts(class_word: str, captions: list[str | None]) -> list[str]:
    """The concept's class in words, without its token: "a dog", "a photo of a dog", "a brown dog" for every
    colour word, and each distinct caption as a training prompt without the token ("a photo of a dog, on grass")."""
    out = [f"a {class_word}", f"a photo of a {class_word}"] + [f"a {c} {class_word}" for c in COLOUR_WORDS]
    out += [f"a photo of a {class_word}, {c.strip()}" for c in dict.fromkeys(captions) if c and c.strip()]
    return list(dict.fromkeys(out))


def set_moments(states: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    """Second moments of one group of prompts, weighted per prompt: states (P, T, d) float32, lengths (P,) the
    number of real tokens of each prompt (start and end-of-text included, ≤ T). Returns {"bos", "content",
    "padding"} -> (d, d): E over prompts of the mean c cᵀ over that prompt's positions of each kind. A prompt with
    no padding (exactly T tokens) contributes to "padding" with weight 0."""
    p, t, _ = states.shape
    pos = torch.arange(t, device=states.device)[None, :]
    n = lengths.to(states.device)[:, None]
    content = ((pos >= 1) & (pos < n)).float()
    padding = (pos >= n).float()

    def weighted(mask: torch.Tensor) -> torch.Tensor:
        w = mask / mask.sum(dim=1, keepdim=True).clamp(min=1)  # per prompt: mean over its positions
        w = w / max(p, 1)
        return torch.einsum("pt,ptd,pte->de", w, states, states)

    return {"bos": states[:, 0].T @ states[:, 0] / max(p, 1), "content": weighted(content), "padding": weighted(padding)}


@dataclass
class DriftBudget:
    """The budget of one learn: names (g,), grams (g, r, r) = Bᵀ M_g B, energy (L, g) = E_{l,g} for the trained
    layers (in the order their coefficients are passed), eps. Every tensor float32 on the training device."""

    names: list[str]
    grams: torch.Tensor
    energy: torch.Tensor
    eps: float

    @torch.no_grad()
    def ratios(self, coefs: list[torch.Tensor]) -> torch.Tensor:
        """ρ (L, g) of the coefficients A_l (n_l, r), one per trained layer."""
        out = [torch.einsum("nr,grs,ns->g", a.float(), self.grams, a.float()) for a in coefs]
        return torch.stack(out) / self.energy.clamp(min=torch.finfo(torch.float32).tiny)

    @torch.no_grad()
    def project_(self, coefs: list[torch.Tensor]) -> None:
        """A_l <- A_l · min(1, min_g √(ε / ρ_{l,g})) in place: afterwards every ρ_{l,g} ≤ ε."""
        worst = self.ratios(coefs).max(dim=1).values  # (L,)
        scale = torch.where(worst > self.eps, (self.eps / worst).sqrt(), torch.ones_like(worst))
        for a, s in zip(coefs, scale):
            if s < 1:
                a.mul_(s.to(a.dtype))


def layer_energies(moments: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """E (L, g): E_{l,g} = tr(W_l M_g W_lᵀ) = Σ (W_lᵀW_l ⊙ M_g) for the layers `weights` (name -> W_l (out, d), all
    rows) and the sets `moments` (name -> M_g (d, d)), in their orders: one d x d product per layer serves every
    set. Independent of the slice, so a learn computes it once (learning/protection.py)."""
    if not weights:
        return torch.zeros(0, len(moments))
    device = next(iter(weights.values())).device
    m = torch.stack([mg.float().to(device) for mg in moments.values()])  # (g, d, d)
    return torch.stack([torch.einsum("de,gde->g", w.detach().float().T @ w.detach().float(), m)
                        for w in weights.values()])


def drift_budget(moments: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], basis_slice: torch.Tensor,
                 eps: float, energy: torch.Tensor | None = None) -> DriftBudget:
    """The budget for the sets `moments` (name -> M_g (d, d)) and the trained layers `weights` (name -> W_l
    (out, d), all rows); `energy`: their `layer_energies`, when already known."""
    b = basis_slice.float()
    m = torch.stack([mg.float() for mg in moments.values()]).to(b.device)  # (g, d, d)
    energy = layer_energies(moments, weights) if energy is None else energy
    return DriftBudget(list(moments), b.T[None] @ m @ b[None], energy.to(b.device), eps)


def selectivity(states: torch.Tensor, moment: torch.Tensor, basis_slice: torch.Tensor) -> dict[str, float]:
    """How much of a concept's own K/V change one unit of protected change buys, for its states (m, d) against
    the protected second moment M (d, d): κ_B(c) = (Bᵀc)ᵀ (BᵀMB)⁻¹ (Bᵀc) for the slice B, and cᵀ M⁻¹ c, the most
    any slice could reach (ROME's / Custom Diffusion's direction M⁻¹c). Means over the states. A slice drawn
    without looking at the concept gets E[κ] = r for a state drawn like the protected ones."""
    c = states.float().to(basis_slice.device)
    m = moment.float().to(c.device)
    d = m.shape[0]
    m = m + SHRINK * (torch.trace(m) / d) * torch.eye(d, device=c.device)
    b = basis_slice.float()
    proj = c @ b  # (m, r)
    g = b.T @ m @ b
    kappa = (proj @ torch.linalg.inv(g) * proj).sum(dim=1)
    best = (c @ torch.linalg.inv(m) * c).sum(dim=1)
    return {"slice": float(kappa.mean()), "best": float(best.mean()), "rank": int(b.shape[1])}
