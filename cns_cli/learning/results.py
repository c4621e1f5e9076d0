"""The frozen results of planning and training a concept (numpy only, so `commit` needs no torch)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..bank.models import Basis, BaseModelPointer, Caches, Slice


@dataclass(frozen=True)
class Plan:
    """What a learn will train and store, decided before training (what `--dry-run` prints)."""

    name: str
    class_word: str
    base: BaseModelPointer
    q: np.ndarray  # (d, d) float32: the bank's basis, or the one this learn creates
    basis: Basis | None  # the bank's basis record; None when this learn creates the basis
    slice: Slice
    rows: Mapping[str, np.ndarray]  # layer -> strictly increasing int32 rows this concept owns (no empty layers)
    general_rows: Mapping[str, np.ndarray]  # layer -> int32 rows of the general neurons of this base
    general_key: Mapping[str, str]  # how the general neurons were computed (the cache's metadata)
    general_cached: bool  # True: they came from the parent's cache, nothing new to store
    training: Mapping[str, object]  # every knob of the run, recorded in the revision (LearnConfig.record())
    # (d, k) float32: the earlier concepts' bases side by side (a concept slice avoids them); none by default
    taken: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    doc: Mapping[str, object] = field(default_factory=dict)  # the plan as shown to the user


@dataclass(frozen=True)
class Trained:
    """What training produced: A per layer (n, rank) float32, the token's k vectors, one (k, e_i) float32 array
    per text encoder (pipeline order), stats, and a concept slice's own basis."""

    coef: Mapping[str, np.ndarray]
    embedding: Sequence[np.ndarray]
    stats: Mapping[str, object]
    basis: np.ndarray | None = None  # (d, rank) float32: the concept's own basis (a concept slice), else None


def caches_after(parent_caches: Caches, plan: Plan, put) -> Caches:
    """The parent's caches, or a new general-neuron cache object (written with `put`) when it was computed."""
    if plan.general_cached:
        return parent_caches
    return Caches(general_neurons=put(dict(plan.general_rows), "general_neurons", dict(plan.general_key)))
