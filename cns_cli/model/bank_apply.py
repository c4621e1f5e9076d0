"""Putting a bank revision into a loaded pipeline: W = W0 + Σ_t ΔW_t and every concept token. Fusion-free:
the deltas are simply added; nothing is optimised or merged at load time."""

from __future__ import annotations

import torch

from ..bank import Bank, Revision
from ..bank.integrity import require_intact
from ..errors import BankFormatError
from .kv import ConceptTensors, apply_deltas
from .tokens import add_tokens


def ordered(rev: Revision, names: list[str] | None = None) -> list[str]:
    """Concepts in the order their tokens are added: by the revision that learned them, then by name."""
    names = list(rev.concepts) if names is None else names
    return sorted(names, key=lambda n: (rev.concepts[n].learned_in, n))


def basis_matrix(bank: Bank, rev: Revision) -> torch.Tensor:
    return torch.from_numpy(bank.read_object(rev.basis.object)["Q"])


def concept_tensors(bank: Bank, rev: Revision, name: str, q: torch.Tensor) -> ConceptTensors:
    c = rev.concepts[name]
    t = bank.read_object(c.delta)
    layers = list(c.neurons.per_layer)
    return ConceptTensors(
        rows={layer: torch.from_numpy(t[f"{layer}.rows"]).long() for layer in layers},
        coef={layer: torch.from_numpy(t[f"{layer}.coef"]) for layer in layers},
        basis_slice=q[:, c.slice.start : c.slice.start + c.slice.rank],
    )


def concept_embedding(bank: Bank, rev: Revision, name: str) -> torch.Tensor:
    emb = torch.from_numpy(bank.read_object(rev.concepts[name].embedding)["embedding"])
    if emb.shape[0] != 1:
        raise BankFormatError(f"concept {name!r} has a {emb.shape[0]}-vector embedding; this cns reads one vector per token")
    return emb[0]


def apply_bank(pipe, bank: Bank, rev: Revision, names: list[str] | None = None) -> list[str]:
    """Apply the given concepts of `rev` (default: all) to `pipe` in place; returns them in token order.
    Every object needed is checked first: a damaged one fails here, naming its concept and the fix, with
    `pipe` untouched."""
    names = ordered(rev, names)
    if not names:
        return []
    require_intact(bank, rev, names)
    q = basis_matrix(bank, rev)
    apply_deltas(pipe.unet, [concept_tensors(bank, rev, n, q) for n in names])
    add_tokens(pipe.tokenizer, pipe.text_encoder, [(rev.concepts[n].token, concept_embedding(bank, rev, n)) for n in names])
    return names
