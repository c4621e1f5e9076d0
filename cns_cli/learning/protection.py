"""What a learn protects (CNS step 6): the protected sets' second moments, the drift budget built from them, and
the diagnostics that say before any image is drawn whether the concept's rows can move (method/protect.py has
the formulas). Shapes: text states (P, 77, d) float32; moments (d, d); the basis slice B (d, r).
"""

from __future__ import annotations

import numpy as np
import torch

# Session (learning/plan.py) is only named in annotations: plan imports this module, not the other way round.


def calibration_states(s: Session) -> torch.Tensor:
    """(P, 77, d) float32, encoded on first use: the general-neuron scan and the regulariser share them."""
    from ..prompts import calibration_prompts

    if s.calib is None:
        with torch.no_grad(), s.amp():
            s.calib = s.conditioner.states(calibration_prompts(s.model_dir)).float()
    return s.calib


def token_lengths(s: Session, prompts: list[str]) -> torch.Tensor:
    """(P,) real tokens per prompt (start and end-of-text included) in the first tokenizer, capped at its length:
    where padding starts in the states `s.conditioner` gives (SDXL's two tokenizers split words alike)."""
    tok = _first_tokenizer(s)
    return torch.tensor([len(i) for i in _token_ids(tok, prompts)])


def _first_tokenizer(s: Session):
    from ..model.text import text_pairs

    return text_pairs(s.pipe)[0][0]


def _token_ids(tok, prompts: list[str]) -> list[list[int]]:
    """The ids the text encoder reads (multi-vector tokens expanded, as model/text.py does), unpadded."""
    from ..model.tokens import expand_vectors

    return tok([expand_vectors(p, tok) for p in prompts], truncation=True, max_length=tok.model_max_length).input_ids


def _encode(s: Session, prompts: list[str]) -> torch.Tensor:
    with torch.no_grad(), s.amp():
        return s.conditioner.states(prompts).float()


def earlier_prompts(s: Session, parent) -> list[str]:
    from ..prompts import training_prompt

    return [training_prompt(n, parent.concepts[n].class_word, None) for n in s.earlier]


def protected_moments(s: Session, parent, class_word: str) -> dict[str, torch.Tensor]:
    """name -> M_g (d, d) float32 on the session's device, for bos, calibration, padding, neighbours and (when
    the bank has concepts) earlier; computed once per session."""
    from ..method.protect import neighbour_prompts, set_moments
    from ..prompts import calibration_prompts

    if "moments" in s.cache:
        return s.cache["moments"]
    neighbours = neighbour_prompts(class_word, list(s.images.captions))
    groups = {"calibration": (calibration_prompts(s.model_dir), calibration_states(s)),
              "neighbours": (neighbours, _encode(s, neighbours))}
    if s.earlier:
        prompts = earlier_prompts(s, parent)
        groups["earlier"] = (prompts, _encode(s, prompts))
    per = {g: set_moments(states, token_lengths(s, prompts)) for g, (prompts, states) in groups.items()}
    counts = {g: len(prompts) for g, (prompts, _) in groups.items()}
    total = sum(counts.values())
    out = {"bos": per["calibration"]["bos"], "calibration": per["calibration"]["content"],
           "padding": sum(per[g]["padding"] * (counts[g] / total) for g in per)}  # every protected prompt alike
    out.update({g: per[g]["content"] for g in ("neighbours", "earlier") if g in per})
    s.cache["moments"] = out
    return out


def concept_states(s: Session) -> torch.Tensor:
    """(m, d): the states of the concept's training prompts from its token's position to end-of-text (a causal
    encoder carries the concept there), with the token as it is now in the session's text encoder(s)."""
    prompts = sorted(set(s.prompts))
    states = _encode(s, prompts)
    first = s.token_ids[0][0]  # the concept's first token in the first tokenizer
    rows = []
    for p, ids in enumerate(_token_ids(_first_tokenizer(s), prompts)):
        start = ids.index(first) if first in ids else 1
        rows.append(states[p, start : len(ids)])  # to end-of-text: len(ids) is where padding starts
    return torch.cat(rows)


def budget_for(s: Session, parent, class_word: str, weights: dict[str, torch.Tensor], basis_slice: torch.Tensor,
               eps: float):
    """The drift budget (method/protect.py) of this learn for the trained layers' weights (name -> W (out, d)).
    The layers' energies depend on the weights and the protected sets only, not on the slice: computed once per
    session (the plan's diagnostics and training share them)."""
    from ..method.protect import drift_budget, layer_energies

    moments = protected_moments(s, parent, class_word)
    key = ("energy", tuple(weights))
    if key not in s.cache:
        s.cache[key] = layer_energies(moments, weights)
    return drift_budget(moments, weights, basis_slice, eps, energy=s.cache[key])


def before_training(s: Session, parent, class_word: str, weights: dict[str, torch.Tensor],
                    basis_slice: torch.Tensor) -> dict:
    """What decides whether the rows can move, known before training (`--dry-run` prints it): per protected set
    the eigenvalues of G = BᵀMB and the spread of the layer energies E_l; the slice's selectivity for the
    concept's states against the calibration prompts (κ; E[κ] = rank for a slice blind to the concept) and the
    best any slice could reach."""
    from ..method.protect import selectivity

    budget = budget_for(s, parent, class_word, weights, basis_slice, float("inf"))
    energy = budget.energy if len(weights) else torch.zeros(1, len(budget.names))
    sets = {g: {"gram_eigenvalues": _round(torch.linalg.eigvalsh(budget.grams[i]).clamp(min=0).flip(0).tolist()),
                "energy_min": _r(energy[:, i].min()), "energy_median": _r(energy[:, i].median()),
                "energy_max": _r(energy[:, i].max())}
            for i, g in enumerate(budget.names)}
    kappa = selectivity(concept_states(s), protected_moments(s, parent, class_word)["calibration"], basis_slice)
    return {"sets": sets, "selectivity": {k: _r(v) if isinstance(v, float) else v for k, v in kappa.items()}}


def after_training(budget, coefs: list[torch.Tensor], s: Session, basis_slice: torch.Tensor,
                   moment: torch.Tensor) -> dict:
    """What the rows did, as flat scalars (a concept's recorded stats): `largest_coefficient` (max |A|),
    `drift_<set>` the attained ρ per protected set, largest over layers (≤ max_drift by construction), and
    `selectivity` κ of the slice for the concept's states with the trained token (`selectivity_best`: any slice)."""
    from ..method.protect import selectivity

    largest = max((float(a.detach().abs().max()) for a in coefs if a.numel()), default=0.0)
    out: dict = {"largest_coefficient": _r(largest)}
    if coefs:
        rho = budget.ratios([a.detach() for a in coefs])
        out.update({f"drift_{g}": _r(rho[:, i].max()) for i, g in enumerate(budget.names)})
    kappa = selectivity(concept_states(s), moment, basis_slice.float())
    out.update({"selectivity": _r(kappa["slice"]), "selectivity_best": _r(kappa["best"])})
    return out


def _r(x) -> float:
    return float(np.format_float_positional(float(x), precision=4, unique=True, fractional=False, trim="-"))


def _round(values: list[float]) -> list[float]:
    return [_r(v) for v in values]


def protected_mix(moments: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ_g M_g / tr(M_g): every protected set weighted alike relative to its own energy, as the budget weighs
    them (each set's ρ is relative to its own E_l). What a concept slice's selectivity is measured against."""
    return sum(m / torch.trace(m).clamp(min=torch.finfo(torch.float32).tiny) for m in moments.values())


def concept_moment(s: Session) -> torch.Tensor:
    """(d, d): mean c cᵀ over the concept's states (`concept_states`), with the token as it is now."""
    c = concept_states(s)
    return c.T @ c / max(c.shape[0], 1)


def slice_basis(s: Session, parent, plan) -> torch.Tensor:
    """B (d, rank) float32 on the CPU: the plan's columns of Q, or for a concept slice (format 1.3) the directions
    with the most concept energy per unit of protected energy outside the earlier concepts' bases
    (method/basis.concept_basis), with the token as it is now (`fit` calls it after the token's warm-up)."""
    from ..method.basis import concept_basis

    if not plan.slice.own:
        return torch.from_numpy(plan.q[:, plan.slice.start : plan.slice.start + plan.slice.rank])
    moments = protected_moments(s, parent, plan.class_word)
    return concept_basis(concept_moment(s), protected_mix(moments), torch.from_numpy(plan.taken), plan.slice.rank)
