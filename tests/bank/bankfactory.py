"""Build small, valid banks for tests using only the public bank API and numpy (no torch, no model).

Every bank has text_dim 8 and two cross-attention layers (to_k / to_v) of 16 output rows each; the basis is a
real orthogonal matrix from np.linalg.qr, and each concept has a delta object (strictly increasing int32 rows,
float32 coef [n, rank]) and a float32 [1, 8] embedding. Each concept is learned in its own revision, so a
bank built with n concepts has HEAD n.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from cns_cli.bank import Bank, BaseModelPointer, Basis, Concept, Operation, Revision
from cns_cli.bank.delta import encode_delta
from cns_cli.bank.models import Neurons, Slice
from cns_cli.bank.revision_io import revision_name

TEXT_DIM = 8
LAYER_K = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
LAYER_V = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v"
LAYER_ROWS = 16
KV_LAYERS = {LAYER_K: LAYER_ROWS, LAYER_V: LAYER_ROWS}
BASIS_SEED = 1234


def make_base() -> BaseModelPointer:
    return BaseModelPointer(
        kind="builtin",
        location="tiny-test-model",
        revision=None,
        fingerprint={"digest": hashlib.sha256(b"tiny-test-model").hexdigest()},
        text_dim=TEXT_DIM,
        kv_layers=dict(KV_LAYERS),
        vocab_size=1000,
    )


def orthogonal_basis(dim: int = TEXT_DIM, seed: int = BASIS_SEED) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return q.astype(np.float32)


def fake_delta(rng: np.random.Generator, rank: int, n_rows: int) -> dict[str, np.ndarray]:
    """A valid delta object's tensors: per layer, n_rows strictly increasing int32 rows and coef [n_rows, rank]."""
    layers = {}
    for layer, limit in KV_LAYERS.items():
        rows = np.sort(rng.choice(limit, size=n_rows, replace=False)).astype(np.int32)
        layers[layer] = (rows, rng.standard_normal((n_rows, rank)).astype(np.float32))
    return encode_delta(layers)


def fake_embedding(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"embedding": rng.standard_normal((1, TEXT_DIM)).astype(np.float32)}


def concept_name(i: int) -> str:
    return f"concept-{i}"


def learn(
    bank: Bank,
    name: str,
    *,
    seed: int = 0,
    rank: int = 2,
    n_rows: int = 3,
    delta: dict[str, np.ndarray] | None = None,
    embedding: dict[str, np.ndarray] | None = None,
    start: int | None = None,
    own: bool = False,
) -> Revision:
    """Commit one `learn` revision adding concept `name` (tensors may be overridden to build bad objects). `own`:
    a concept with its own basis (format 1.3: slice.start null; pass its `basis` tensor in `delta`)."""
    rng = np.random.default_rng(seed)
    delta = fake_delta(rng, rank, n_rows) if delta is None else delta
    embedding = fake_embedding(rng) if embedding is None else embedding
    with bank.transaction() as tx:
        parent = tx.parent
        basis = parent.basis
        if basis is None:
            ref = tx.put({"Q": orthogonal_basis()}, "basis")
            basis = Basis(object=ref, dim=TEXT_DIM, seed=BASIS_SEED)
        if start is None and not own:
            start = (len(parent.concepts) * rank) % (TEXT_DIM - rank + 1)
        delta_ref = tx.put(delta, "delta", {"concept": name})
        emb_ref = tx.put(embedding, "embedding", {"token": f"<{name}>"})
        concept = Concept(
            token=f"<{name}>",
            class_word="dog",
            learned_in=tx.number,
            slice=Slice(start=start, rank=rank),
            neurons=Neurons(total=n_rows * len(KV_LAYERS), per_layer={layer: n_rows for layer in KV_LAYERS}),
            delta=delta_ref,
            embedding=emb_ref,
            training={"steps": 10, "lr": 0.001, "seed": seed},
            stats={"loss": 0.25, "seconds": 1.5},
        )
        concepts = dict(parent.concepts)
        concepts[name] = concept
        return tx.commit(
            Operation(kind="learn", concept=name, argv=["cns", "learn", name]), concepts=concepts, basis=basis
        )


def build_bank(path: str | Path, n: int = 2, *, seed: int = 0, rank: int = 2, n_rows: int = 3) -> Bank:
    """A fresh bank at `path` holding `n` concepts named concept-0 .. concept-{n-1}, one revision each."""
    bank = Bank.create(path, make_base(), argv=["cns", "init"])
    for i in range(n):
        learn(bank, concept_name(i), seed=seed + i, rank=rank, n_rows=n_rows)
    return bank


# -- helpers for "the bank is unchanged" assertions ------------------------------------------------------


def snapshot(root: str | Path) -> dict[str, bytes]:
    """Every file in the bank (HEAD, revisions, objects, temp files) by relative path, except the lock file,
    whose content legitimately changes when a writer takes and releases the lock."""
    root = Path(root)
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() != "lock"
    }


def revision_path(root: str | Path, number: int) -> Path:
    return Path(root) / revision_name(number)


# -- helpers for tests that run a second process ----------------------------------------------------------

HERE = Path(__file__).resolve().parent


def spawn_python(script: str, *args: str):
    """Start `python -c script args...` with this folder importable (for `import bankfactory`), stdout and
    stderr as binary pipes. The caller must kill and wait for the process."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def wait_for_line(proc, expected: str, timeout: float = 30.0) -> None:
    """Block until `proc` prints the line `expected`; fail (killing it) if it exits or times out first.
    Reads the raw pipe so no line can hide in a Python-level buffer."""
    import os
    import select
    import time

    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:  # EOF: the child exited
            break
        buf += chunk
        if expected.encode() in buf.split(b"\n"):
            return
    proc.kill()
    _, err = proc.communicate(timeout=10)
    raise AssertionError(f"child never printed {expected!r}; stdout {buf!r}; stderr:\n{err.decode(errors='replace')}")


def kill9(proc) -> int:
    """SIGKILL `proc` and reap it (a zombie would still count as alive for the lock's stale-pid check)."""
    import signal

    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return proc.pid


def bank_with(path, names: list[str]) -> Path:
    """A bank holding the concepts `names`, each learned in its own revision (seeds 1, 2, …)."""
    bank = build_bank(path, 0)
    for i, name in enumerate(names):
        learn(bank, name, seed=i + 1)
    return Path(path)
