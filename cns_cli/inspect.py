"""`cns inspect`: what a bank holds, as one JSON-ready dict. Reads the bank only (no torch), so it is fast."""

from __future__ import annotations

from .bank import Bank, Revision
from .bank.delta import read_delta
from .bank.models import trained_parameters
from .errors import IntegrityError
from .model.family import NAMES as FAMILY_NAMES  # configs only: no torch or diffusers import


def _vectors(bank: Bank, rev: Revision, name: str) -> int | None:
    """k of the concept's token (`<name>` stands for k prompt positions): the rows of its embedding object, a few
    KB; None when that object is damaged (`cns verify` names it)."""
    try:
        return int(bank.read_object(rev.concepts[name].embedding)["embedding"].shape[0])
    except (IntegrityError, KeyError, IndexError):
        return None


def _recorded_vectors(training: dict) -> int:
    """The `vectors` a learn recorded (an embedding object that cannot be read); 1 for banks from before it."""
    k = training.get("vectors", 1)
    return k if isinstance(k, int) and not isinstance(k, bool) and k >= 1 else 1


def _concept_summary(bank: Bank, rev: Revision, name: str) -> dict:
    c = rev.concepts[name]
    stored = c.delta.size + c.embedding.size
    k = _vectors(bank, rev, name)
    counted = k if k is not None else _recorded_vectors(c.training)
    params = trained_parameters(c.neurons.total, c.slice.rank, counted * sum(rev.base.embedding_widths))
    return {
        "name": name, "token": c.token, "vectors": k, "class_word": c.class_word, "learned_in": c.learned_in,
        "neurons": c.neurons.total, "layers": sum(1 for n in c.neurons.per_layer.values() if n),
        "slice": {"start": c.slice.start, "rank": c.slice.rank, "own_basis": c.slice.own},
        "parameters": params, "bytes": stored, "training": c.training, "stats": c.stats,
    }


def _rows(bank: Bank, rev: Revision, name: str) -> dict[str, set[int]]:
    return {layer: set(d.rows.tolist()) for layer, d in read_delta(bank, rev.concepts[name]).items()}


def _damage(bank: Bank, rev: Revision) -> str | None:
    """What is wrong with HEAD's files and the fix, when a concept or basis object is missing or of the wrong size
    (a stat per file, no hashing: inspect stays fast; `cns verify` hashes); None when nothing is seen."""
    from .bank.integrity import find_damage

    damage = find_damage(bank, rev, quick=True)
    return f"{damage.what()}; {damage.fix()}" if damage else None


def inspect_bank(bank: Bank, neurons: bool = False) -> dict:
    rev = bank.head()
    names = sorted(rev.concepts)
    total_rows = sum(rev.base.kv_layers.values())
    used_cols = sum(rev.concepts[n].slice.rank for n in names)
    dim = rev.basis.dim if rev.basis else rev.base.text_dim
    out: dict = {
        "bank": str(bank.root), "revision": rev.number, "format_version": rev.format_version,
        "base": {"kind": rev.base.kind, "location": rev.base.location, "revision": rev.base.revision,
                 "fingerprint": rev.base.fingerprint.digest, "kv_layers": len(rev.base.kv_layers),
                 "kv_rows": total_rows, "text_dim": rev.base.text_dim, "family": rev.base.family_name,
                 "family_name": FAMILY_NAMES[rev.base.family_name],
                 "prediction_type": rev.base.prediction_type or "epsilon",
                 "embedding_dims": rev.base.embedding_widths, "config": rev.base.config},
        "concepts": [_concept_summary(bank, rev, n) for n in names],
        "capacity": {"basis_columns": dim, "columns_used": min(used_cols, dim),
                     "columns_left": max(dim - used_cols, 0)},
        "damage": _damage(bank, rev),
        "totals": {"concepts": len(names), "neurons": sum(rev.concepts[n].neurons.total for n in names),
                   "bytes": sum(rev.concepts[n].delta.size + rev.concepts[n].embedding.size for n in names)},
    }
    if neurons:
        rows = {n: _rows(bank, rev, n) for n in names}
        for entry in out["concepts"]:
            name = entry["name"]
            per_layer = []
            for layer, owned in sorted(rows[name].items()):
                if not owned:
                    continue
                overlap = {o: len(owned & rows[o].get(layer, set())) for o in names if o != name}
                per_layer.append({"layer": layer, "neurons": len(owned), "of": rev.base.kv_layers[layer],
                                  "overlap": {o: k for o, k in overlap.items() if k}})
            entry["per_layer"] = per_layer
            entry["overlap"] = {
                o: sum(len(rows[name][layer] & rows[o].get(layer, set())) for layer in rows[name])
                for o in names if o != name
            }
    return out
