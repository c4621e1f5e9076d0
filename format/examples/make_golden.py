"""Write the golden banks in format/examples/ (test vectors for format/SPEC.md).

    python format/examples/make_golden.py [OUT_DIR]      # OUT_DIR defaults to this folder

Deterministic: fixed timestamps, fixed writer string, no random state shared with anything else, so two runs
give byte-identical files (tests/bank/test_golden.py re-runs it into a temp folder and compares). Values are
chosen to be reproducible on any machine:
- coefficients and embeddings are multiples of 1/256 (exact in float32);
- the basis is the QR of a Gaussian matrix from numpy's frozen legacy `RandomState`, orthonormalised in pure
  Python floats (no LAPACK, whose last bits vary with the CPU), then rounded to float32;
- the fingerprint is `kv-sha256-v1` over made-up base weights that are exact binary fractions.

Banks written:
- minimal.cnsbank       revision 0 only (init; basis null; no objects; no objects/ folder, since git keeps
                        no empty folders and readers treat a missing objects/ as empty)
- two-concepts.cnsbank  0 init -> 1 learn dog -> 2 learn hat -> 3 forget hat -> 4 undo (restores 2)
- sdxl.cnsbank          format 1.2: 0 init -> 1 learn dog on a made-up SDXL single-file base (two text encoders,
                        3 + 5 wide: text width 8; v-prediction; a config folder), whose concept's embedding object
                        holds `embedding` [1, 3] and `embedding_2` [1, 5]
- concept-slice.cnsbank format 1.3: 0 init -> 1 learn dog (shared slice 0:2) -> 2 learn hat with its own basis
                        (slice.start null; its delta object holds `basis` [8, 2], orthogonal to dog's columns)
No `lock` file: a writer creates it on its first commit.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import struct
import sys
from pathlib import Path

import numpy as np

from cns_cli.bank.delta import encode_delta
from cns_cli.bank.models import (
    BaseModelPointer, Basis, Caches, Concept, Neurons, Operation, Revision, Slice,
)
from cns_cli.bank.revision_io import HEAD_NAME, dump_revision, revision_name
from cns_cli.bank.store import encode_object, object_ref

WRITER = "cns format/examples/make_golden.py"
# The golden banks are format 1.0 test vectors (linear history, no restore): every 1.x reader must read them,
# so they keep their version when cns writes a newer minor.
FORMAT_VERSION = "1.0"
TEXT_DIM = 8
LAYER_K = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
LAYER_V = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v"
LAYER_ROWS = 16
KV_LAYERS = {LAYER_K: LAYER_ROWS, LAYER_V: LAYER_ROWS}
BASIS_SEED = 1234
RANK = 2


FORMAT_VERSION_1_2 = "1.2"  # the SDXL bank: family, prediction_type, embedding_dims, config, embedding_2
FORMAT_VERSION_1_3 = "1.3"  # the concept-slice bank: a concept with its own basis
SDXL_EMBEDDING_DIMS = [3, 5]  # the two text encoders' widths; text_dim = their sum


def created(minute: int) -> str:
    return f"2026-01-01T12:{minute:02d}:00.000000Z"


# -- the made-up base model and its fingerprint -------------------------------------------------------------


def base_weights() -> dict[str, np.ndarray]:
    """The tiny base's K/V weights, [out_rows, text_dim] each: small exact binary fractions."""
    i, j = np.meshgrid(np.arange(LAYER_ROWS), np.arange(TEXT_DIM), indexing="ij")
    return {
        LAYER_K: (((3 * i + 5 * j) % 17 - 8) / 32).astype(np.float32),
        LAYER_V: (((7 * i + 2 * j) % 13 - 6) / 16).astype(np.float32),
    }


def kv_fingerprint(weights: dict[str, np.ndarray]) -> str:
    """Scheme kv-sha256-v1 (SPEC "Base model and fingerprint"): for each weight sorted by module path, the
    UTF-8 path, a NUL byte, the shape as little-endian int64s, the float32 little-endian bytes (row-major)."""
    h = hashlib.sha256()
    for path in sorted(weights):
        w = np.ascontiguousarray(weights[path], dtype="<f4")
        h.update(path.encode("utf-8") + b"\x00")
        h.update(struct.pack(f"<{w.ndim}q", *w.shape))
        h.update(w.tobytes())
    return h.hexdigest()


def make_base() -> BaseModelPointer:
    return BaseModelPointer(
        kind="builtin", location="golden-tiny", revision=None,
        fingerprint={"scheme": "kv-sha256-v1", "digest": kv_fingerprint(base_weights())},
        text_dim=TEXT_DIM, kv_layers=dict(KV_LAYERS), vocab_size=1000,
    )


def make_sdxl_base() -> BaseModelPointer:
    """The same made-up K/V weights, read as an SDXL single-file checkpoint with a config folder."""
    return BaseModelPointer(
        kind="single-file", location="/models/golden-tiny-xl.safetensors", revision=None,
        fingerprint={"scheme": "kv-sha256-v1", "digest": kv_fingerprint(base_weights())},
        text_dim=TEXT_DIM, kv_layers=dict(KV_LAYERS), vocab_size=1000, family="sdxl",
        prediction_type="v_prediction", embedding_dims=list(SDXL_EMBEDDING_DIMS), config="/models/golden-tiny-xl-configs",
    )


# -- tensors ------------------------------------------------------------------------------------------------


def orthogonal_basis(dim: int = TEXT_DIM, seed: int = BASIS_SEED) -> np.ndarray:
    """Q of the QR decomposition of a seeded Gaussian matrix (columns orthonormalised in order, diag R > 0)."""
    g = np.random.RandomState(seed).standard_normal((dim, dim))
    cols = [[float(g[r, c]) for r in range(dim)] for c in range(dim)]
    done: list[list[float]] = []
    for v in cols:
        for _ in range(2):  # Gram-Schmidt twice: orthogonal to float64 precision
            for q in done:
                d = sum(a * b for a, b in zip(q, v))
                v = [a - d * b for a, b in zip(v, q)]
        norm = math.sqrt(sum(a * a for a in v))
        done.append([a / norm for a in v])
    return np.array(done, dtype=np.float64).T.astype(np.float32)  # columns are the basis vectors


def fractions(rng: np.random.RandomState, shape: tuple[int, ...]) -> np.ndarray:
    """Multiples of 1/256 in [-0.5, 0.5): exact in float32, identical on every platform."""
    return (rng.randint(-128, 128, size=shape) / 256).astype(np.float32)


def delta_tensors(rows: dict[str, list[int]], seed: int, basis: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per layer: rows int32 [n], coef float32 [n, rank] (coefs drawn layer by layer, in `rows`' order); and the
    concept's own `basis` [dim, rank] when given (format 1.3)."""
    rng = np.random.RandomState(seed)
    return encode_delta({layer: (np.array(r, dtype=np.int32), fractions(rng, (len(r), RANK))) for layer, r in rows.items()},
                        basis)


def own_basis() -> np.ndarray:
    """[8, 2]: (q2 + q3)/√2 and (q2 − q3)/√2 of the golden Q (elementwise float64 arithmetic: the same bits on every
    machine): orthonormal, orthogonal to columns 0:2, and not a column block of Q."""
    q = orthogonal_basis().astype(np.float64)
    return (np.stack([q[:, 2] + q[:, 3], q[:, 2] - q[:, 3]], axis=1) / math.sqrt(2)).astype(np.float32)


# -- banks --------------------------------------------------------------------------------------------------


class Writer:
    """Collects a bank's files in memory; `save` writes them (objects/ only if there are objects)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def put(self, tensors: dict[str, np.ndarray], kind: str):
        data = encode_object(tensors, kind)
        ref = object_ref(data)
        self.files[ref.path] = data
        return ref

    def commit(self, rev: Revision) -> Revision:
        self.files[revision_name(rev.number)] = dump_revision(rev)
        self.files[HEAD_NAME] = f"{rev.number}\n".encode()
        return rev

    def save(self, root: Path) -> None:
        if root.exists():
            shutil.rmtree(root)
        for rel, data in sorted(self.files.items()):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)


def init_revision(argv: list[str], annotations: dict[str, str] | None = None, base: BaseModelPointer | None = None,
                  version: str = FORMAT_VERSION) -> Revision:
    return Revision(
        format_version=version, writer=WRITER, number=0, parent=None, created=created(0),
        operation=Operation(kind="init", argv=argv), base=base or make_base(), basis=None, concepts={},
        annotations=annotations or {},
    )


def next_revision(parent: Revision, operation: Operation, **changes) -> Revision:
    """What store.Transaction.commit does, with a fixed writer and timestamp (and the parent's format version)."""
    number = parent.number + 1
    fields = parent.model_dump(exclude_none=False) | {
        "format_version": parent.format_version, "writer": WRITER, "number": number, "parent": parent.number,
        "created": created(number), "operation": operation,
    }
    return Revision.model_validate(fields | changes)


def minimal() -> Writer:
    w = Writer()
    w.commit(init_revision(["cns", "init", "--base", "golden-tiny"], {"description": "an empty bank"}))
    return w


def concept(w: Writer, name: str, class_word: str, learned_in: int, start: int | None, rows: dict[str, list[int]],
            seed: int, training: dict, stats: dict, embedding_dims: list[int] | None = None,
            basis: np.ndarray | None = None) -> Concept:
    delta = w.put(delta_tensors(rows, seed, basis), "delta")
    rng = np.random.RandomState(seed + 100)
    names = ("embedding", "embedding_2")  # one tensor per text encoder (SPEC "Objects")
    embedding = w.put({k: fractions(rng, (1, d)) for k, d in zip(names, embedding_dims or [TEXT_DIM])}, "embedding")
    return Concept(
        token=f"<{name}>", class_word=class_word, learned_in=learned_in, slice=Slice(start=start, rank=RANK),
        neurons=Neurons(total=sum(len(r) for r in rows.values()), per_layer={k: len(r) for k, r in rows.items()}),
        delta=delta, embedding=embedding, training=training, stats=stats,
    )


def two_concepts() -> Writer:
    w = Writer()
    r0 = w.commit(init_revision(["cns", "init", "--base", "golden-tiny"]))

    # 1: learn dog. The first learn writes the basis and the general-neuron cache.
    basis = Basis(object=w.put({"Q": orthogonal_basis()}, "basis"), dim=TEXT_DIM, seed=BASIS_SEED)
    general = w.put(
        {LAYER_K: np.array([0, 5], dtype=np.int32), LAYER_V: np.array([6, 9], dtype=np.int32)}, "general_neurons"
    )
    training = {"budget": 5, "lr": 0.001, "rank": RANK, "seed": 7, "steps": 200}
    dog = concept(w, "dog", "dog", 1, 0, {LAYER_K: [1, 4, 11], LAYER_V: [3, 12]}, seed=1,
                  training=training, stats={"final_loss": 0.125, "seconds": 61.5, "steps_run": 200})
    r1 = w.commit(next_revision(r0, Operation(kind="learn", concept="dog", argv=["cns", "learn", "dog", "./dog"]),
                                basis=basis, caches=Caches(general_neurons=general), concepts={"dog": dog}))

    # 2: learn hat: the next slice; it shares row 4 of to_k with dog and has 0 neurons in to_v (entry kept).
    hat = concept(w, "hat", "hat", 2, 2, {LAYER_K: [2, 4, 8, 15], LAYER_V: []}, seed=2,
                  training=training | {"seed": 8}, stats={"final_loss": 0.25, "seconds": 58.0, "steps_run": 200})
    r2 = w.commit(next_revision(r1, Operation(kind="learn", concept="hat", argv=["cns", "learn", "hat", "./hat"]),
                                concepts={"dog": dog, "hat": hat}))

    # 3: forget hat; its objects stay (revision 2 references them).
    r3 = w.commit(next_revision(r2, Operation(kind="forget", concept="hat", argv=["cns", "forget", "hat"]),
                                concepts={"dog": dog}))

    # 4: undo revision 3 = restore the state of revision 2 (history.undo).
    w.commit(next_revision(r3, Operation(kind="undo", undone=3, restores=2, argv=["cns", "undo"]),
                           concepts=r2.concepts, basis=r2.basis, caches=r2.caches))
    return w


def sdxl() -> Writer:
    w = Writer()
    argv = ["cns", "init", "--base", "/models/golden-tiny-xl.safetensors", "--config", "/models/golden-tiny-xl-configs"]
    r0 = w.commit(init_revision(argv, base=make_sdxl_base(), version=FORMAT_VERSION_1_2))
    basis = Basis(object=w.put({"Q": orthogonal_basis()}, "basis"), dim=TEXT_DIM, seed=BASIS_SEED)
    training = {"budget": 5, "lr": 0.001, "rank": RANK, "seed": 7, "steps": 200}
    dog = concept(w, "dog", "dog", 1, 0, {LAYER_K: [1, 4, 11], LAYER_V: [3, 12]}, seed=1, training=training,
                  stats={"final_loss": 0.125, "seconds": 61.5, "steps_run": 200}, embedding_dims=SDXL_EMBEDDING_DIMS)
    w.commit(next_revision(r0, Operation(kind="learn", concept="dog", argv=["cns", "learn", "dog", "./dog"]),
                           basis=basis, concepts={"dog": dog}))
    return w


def concept_slice() -> Writer:
    w = Writer()
    r0 = w.commit(init_revision(["cns", "init", "--base", "golden-tiny"], version=FORMAT_VERSION_1_3))
    basis = Basis(object=w.put({"Q": orthogonal_basis()}, "basis"), dim=TEXT_DIM, seed=BASIS_SEED)
    training = {"budget": 5, "lr": 0.001, "max_drift": 0.001, "rank": RANK, "seed": 7, "slice": "shared", "steps": 200}
    dog = concept(w, "dog", "dog", 1, 0, {LAYER_K: [1, 4, 11], LAYER_V: [3, 12]}, seed=1, training=training,
                  stats={"final_loss": 0.125, "seconds": 61.5, "steps_run": 200})
    r1 = w.commit(next_revision(r0, Operation(kind="learn", concept="dog", argv=["cns", "learn", "dog", "./dog"]),
                                basis=basis, concepts={"dog": dog}))
    hat = concept(w, "hat", "hat", 2, None, {LAYER_K: [2, 4, 8], LAYER_V: [5]}, seed=2,
                  training=training | {"seed": 8, "slice": "concept"},
                  stats={"final_loss": 0.25, "seconds": 58.0, "steps_run": 200}, basis=own_basis())
    w.commit(next_revision(r1, Operation(kind="learn", concept="hat", argv=["cns", "learn", "hat", "./hat"]),
                           concepts={"dog": dog, "hat": hat}))
    return w


BANKS = {"minimal.cnsbank": minimal, "two-concepts.cnsbank": two_concepts, "sdxl.cnsbank": sdxl,
         "concept-slice.cnsbank": concept_slice}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, build in BANKS.items():
        build().save(out / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
