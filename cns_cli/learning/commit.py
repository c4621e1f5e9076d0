"""Step 3 of a learn: store a planned and trained concept as a new revision (numpy only, no model)."""

from __future__ import annotations

import numpy as np

from ..bank.delta import encode_delta
from ..bank.layout import embedding_names
from ..bank.models import Basis, Concept, Neurons, Operation, Revision
from ..bank.names import token_for
from ..method.basis import BASIS_SEED
from .results import Plan, Trained, caches_after


def delta_tensors(rows, coef, basis=None) -> dict[str, np.ndarray]:
    """The delta object's tensors (bank.delta's codec) of `rows` (layer -> int32 rows), `coef` and, for a concept
    slice, its own `basis` (d, rank)."""
    return encode_delta({layer: (r, coef[layer]) for layer, r in rows.items()}, basis)


def embedding_tensors(vectors) -> dict[str, np.ndarray]:
    """The embedding object's tensors: one (k, e_i) float32 array per text encoder, named as bank/layout.py says."""
    return {name: np.asarray(v, dtype=np.float32) for name, v in zip(embedding_names(len(vectors)), vectors)}


def commit(tx, plan: Plan, trained: Trained, argv: list[str] | None = None) -> Revision:
    """Write the concept's objects through `tx` and commit revision tx.number: the parent plus this concept
    (replacing one of the same name), the basis (created by the first learn) and the general-neuron cache."""
    basis = plan.basis or Basis(object=tx.put({"Q": plan.q}, "basis"), dim=plan.q.shape[0], seed=BASIS_SEED)
    caches = caches_after(tx.parent.caches, plan, tx.put)
    delta = tx.put(delta_tensors(plan.rows, trained.coef, trained.basis), "delta", {"concept": plan.name})
    embedding = tx.put(embedding_tensors(trained.embedding), "embedding", {"token": token_for(plan.name)})
    per_layer = {layer: int(len(r)) for layer, r in plan.rows.items()}
    concept = Concept(
        token=token_for(plan.name), class_word=plan.class_word, learned_in=tx.number, slice=plan.slice,
        neurons=Neurons(total=sum(per_layer.values()), per_layer=per_layer), delta=delta, embedding=embedding,
        training=dict(plan.training), stats=dict(trained.stats),
    )
    concepts = dict(tx.parent.concepts) | {plan.name: concept}
    return tx.commit(Operation(kind="learn", concept=plan.name, argv=argv or []),
                     concepts=concepts, basis=basis, caches=caches)
