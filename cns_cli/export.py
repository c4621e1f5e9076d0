"""`cns export`: hand concepts to diffusers, ComfyUI, AUTOMATIC1111 and kohya, exactly.

A concept's delta ΔW = Sᵀ A Bᵀ *is* a rank-r LoRA: up = Sᵀ A (A scattered into the selected rows,
(out, r)), down = Bᵀ ((r, d)), alpha = r so that the scale alpha / r is 1. Several concepts merge into one
LoRA by stacking along the rank axis (down = [B₁ᵀ; B₂ᵀ], up = [S₁ᵀA₁, S₂ᵀA₂]), which is again exact.
LoRA and embedding files need only numpy (no model load); `pipeline` saves a full diffusers folder.

Layout of OUT (one folder per tool convention, so files can be copied as they are):
    kohya      lora/<name>.safetensors (or lora/cns-merged.safetensors) + embeddings/<name>.safetensors
    diffusers  <name>/pytorch_lora_weights.safetensors + <name>/learned_embeds.safetensors
               (--merged: pytorch_lora_weights.safetensors at the top, embeddings per concept)
    embedding  embeddings/<name>.safetensors (A1111/kohya: emb_params) + <name>/learned_embeds.safetensors
    pipeline   a diffusers pipeline folder with every concept merged in, in the hub's layout (model/saving.py)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .about import __version__
from .bank import Bank, Revision
from .bank.atomic import atomic_write
from .bank.delta import basis_of, decode_delta
from .bank.integrity import require_intact
from .errors import ConceptError, UsageError
from .lora_names import kohya_base_metadata, kohya_key, layers_per_block
from .protected import of_bank, refuse_overlap

FORMATS = ("kohya", "diffusers", "embedding", "pipeline")
MERGED_NAME = "cns-merged"


def _lora_factors(bank: Bank, rev: Revision, name: str, q: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """layer -> (down (r, d), up (out, r)) of one concept, float32, exact."""
    c = rev.concepts[name]
    tensors = bank.read_object(c.delta)
    b = basis_of(tensors, c, q)  # (d, r): the concept's own basis (1.3) or its columns of Q
    out = {}
    for layer, d in decode_delta(tensors, c.neurons.per_layer).items():
        if not d.n:
            continue
        up = np.zeros((rev.base.kv_layers[layer], c.slice.rank), dtype=np.float32)
        up[d.rows] = d.coef
        out[layer] = (np.ascontiguousarray(b.T, dtype=np.float32), up)
    return out


def _stack(parts: list[dict[str, tuple[np.ndarray, np.ndarray]]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Sum of LoRAs as one LoRA: concatenate along the rank axis, per layer."""
    layers = sorted({layer for p in parts for layer in p})
    return {layer: (np.concatenate([p[layer][0] for p in parts if layer in p], axis=0),
                    np.concatenate([p[layer][1] for p in parts if layer in p], axis=1)) for layer in layers}


def _header(rev: Revision, names: list[str]) -> dict[str, str]:
    return {"cns.version": __version__, "cns.bank_revision": str(rev.number), "cns.concepts": ",".join(names),
            "cns.base": rev.base.location + (f"@{rev.base.revision}" if rev.base.revision else ""),
            "cns.base_fingerprint": f"{rev.base.fingerprint.scheme}:{rev.base.fingerprint.digest}"}


def _kohya_metadata(rev: Revision, names: list[str], title: str, ranks: set[int]) -> dict[str, str]:
    dim = max(ranks)
    return {
        **_header(rev, names),
        "ss_network_module": "networks.lora", "ss_network_dim": str(dim), "ss_network_alpha": str(float(dim)),
        **kohya_base_metadata(rev.base.family_name, rev.base.prediction_type or "epsilon"), "ss_output_name": title,
        "ss_training_comment": f"exported by cns {__version__} from bank revision {rev.number}; concepts: "
                               + ", ".join(f"<{n}>" for n in names),
        "ss_tag_frequency": json.dumps({n: {f"<{n}>": 1} for n in names}),
        "modelspec.sai_model_spec": "1.0.1", "modelspec.implementation": "diffusers", "modelspec.title": title,
        "modelspec.trigger_phrase": ", ".join(names), "modelspec.description": "Concept Neuron Selection deltas exported by cns",
    }


def _save(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> dict:
    from safetensors.numpy import save

    path.parent.mkdir(parents=True, exist_ok=True)
    data = save(tensors, metadata=metadata)
    atomic_write(path, data)
    return {"path": str(path), "bytes": len(data)}


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; give a folder for the export")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"{out} is not empty; choose an empty folder or pass --force to write into it")


def select_concepts(rev: Revision, wanted: list[str] | None, where: str = "this bank") -> list[str]:
    if not rev.concepts:
        raise ConceptError(f"{where} has no concepts to export; teach one first with `cns learn NAME ./photos`")
    known = sorted(rev.concepts, key=lambda n: (rev.concepts[n].learned_in, n))
    unknown = [n for n in wanted or [] if n not in rev.concepts]
    if unknown:
        raise ConceptError(f"no concept {unknown[0]!r} in {where}; known: {', '.join(known)}")
    return [n for n in known if not wanted or n in wanted]


def export(bank_path: Path, out: Path, fmt: str = "kohya", concepts: list[str] | None = None,
           merged: bool = False, force: bool = False, revision: int | str | None = None) -> dict:
    """Export concepts of HEAD, or of `revision` (any revision on disk, in HEAD's history or not)."""
    from .bank.history import parse_revision_number, read_existing_revision, with_current_base

    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if merged and fmt not in ("kohya", "diffusers"):
        raise UsageError(f"--merged applies to LoRA formats (kohya, diffusers), not {fmt}")
    bank = Bank.open(bank_path)
    if revision is None:
        rev, where = bank.head(), "this bank"
    else:
        number = parse_revision_number(revision, "--revision")
        rev, where = with_current_base(bank, read_existing_revision(bank, number, "cannot be exported")), f"revision {number}"
    names = select_concepts(rev, concepts, where)
    refuse_overlap(out, "OUT", of_bank(bank.root, rev.base))  # before --force may replace anything there
    _check_out(out, force)
    # every object needed, before writing anything (or loading a model): embeddings alone need no basis
    fix = None if revision is None else ("leave the concept out (--concept NAME for each other one) or restore the "
                                         "file from a backup; `cns verify` lists every problem")
    require_intact(bank, rev, names, basis=fmt != "embedding", fix=fix)
    if fmt == "pipeline":
        files = _export_pipeline(bank, rev, names, out, fix)
    else:
        files = _export_files(bank, rev, names, out, fmt, merged)
    return {"format": fmt, "revision": rev.number, "concepts": names, "out": str(out), "files": files,
            "tokens": {n: rev.concepts[n].token for n in names}}


def _export_files(bank: Bank, rev: Revision, names: list[str], out: Path, fmt: str, merged: bool) -> list[dict]:
    files = []
    if fmt in ("kohya", "diffusers"):
        q = bank.read_object(rev.basis.object)["Q"]
        loras = {n: _lora_factors(bank, rev, n, q) for n in names}
        groups = [(MERGED_NAME, names)] if merged else [(n, [n]) for n in names]
        family, per_block = rev.base.family_name, layers_per_block(rev.base.kv_layers)
        for title, members in groups:
            factors = _stack([loras[n] for n in members])
            if fmt == "kohya":
                tensors = {}
                for layer, (down, up) in factors.items():
                    key = kohya_key(layer, family, per_block)
                    tensors[f"{key}.lora_down.weight"] = down
                    tensors[f"{key}.lora_up.weight"] = up
                    tensors[f"{key}.alpha"] = np.array(down.shape[0], dtype=np.float32)  # scale alpha/r = 1
                meta = _kohya_metadata(rev, members, title, {d.shape[0] for d, _ in factors.values()})
                files.append({**_save(out / "lora" / f"{title}.safetensors", tensors, meta), "kind": "lora", "concepts": members})
            else:
                tensors = {}
                for layer, (down, up) in factors.items():
                    tensors[f"unet.{layer}.lora_A.weight"] = down
                    tensors[f"unet.{layer}.lora_B.weight"] = up
                folder = out if merged else out / title
                meta = {**_header(rev, members), "format": "pt"}
                files.append({**_save(folder / "pytorch_lora_weights.safetensors", tensors, meta), "kind": "lora", "concepts": members})
    for n in names:
        a1111, diffusers = _embedding_files(bank.read_object(rev.concepts[n].embedding), rev.concepts[n].token)
        meta = _header(rev, [n])
        if fmt in ("kohya", "embedding"):
            files.append({**_save(out / "embeddings" / f"{n}.safetensors", a1111, meta),
                          "kind": "embedding", "concepts": [n], "convention": "a1111"})
        if fmt in ("diffusers", "embedding"):
            files.append({**_save(out / n / "learned_embeds.safetensors", diffusers, meta),
                          "kind": "embedding", "concepts": [n], "convention": "diffusers"})
    return files


def _embedding_files(obj: dict[str, np.ndarray], token: str) -> tuple[dict, dict]:
    """(A1111/kohya tensors, diffusers tensors) of a concept's embedding object. One text encoder: `emb_params`
    (k, d) and {token: (k, d)}. Two (SDXL): the shared SDXL textual-inversion file {clip_l, clip_g} in both
    conventions, since diffusers has no other (it loads each key with its own `load_textual_inversion` call)."""
    if "embedding_2" in obj:
        both = {"clip_l": obj["embedding"], "clip_g": obj["embedding_2"]}
        return both, both
    return {"emb_params": obj["embedding"]}, {token: obj["embedding"]}


def _export_pipeline(bank: Bank, rev: Revision, names: list[str], out: Path, fix: str | None = None) -> list[dict]:
    """The base with these concepts merged in and their tokens added, saved in the hub's layout (saving.py: what
    transformers 4.x and ComfyUI read too); built in a temp folder next to OUT and moved in, so a failure leaves
    no half-written pipeline."""
    from .model.personalised import load_personalised
    from .model.saving import save_pipeline

    pipe = load_personalised(bank, rev, names, fix=fix)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".cns-export-", dir=out.parent))
    try:
        save_pipeline(pipe, tmp)
        (tmp / "cns_export.json").write_text(json.dumps(_header(rev, names), indent=2, sort_keys=True) + "\n")
        for item in sorted(tmp.iterdir()):
            target = out / item.name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            item.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [{"path": str(p), "bytes": p.stat().st_size, "kind": "pipeline", "concepts": names}
            for p in sorted(out.rglob("*")) if p.is_file()]
