"""`cns learn` under a real launcher: 2 gloo processes on the CPU (torchrun), against one process with their global
batch; a locked bank, a failing, a dying and a hung rank. Each run starts 2 interpreters: all in the slow set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cns_cli.bank import Bank
from tests.clitools import cns

pytestmark = pytest.mark.slow  # launches processes end to end (docs/development.md: the quick subset)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ARGS = ["--class", "dog", "--steps", "6", "--score-steps", "2", "--seed", "3", "--batch-size", "2", "--json"]


def launch(*args, cwd: Path, env: dict | None = None, timeout_s: int = 120) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node 2 tests/launched_learn.py ARGS` (the real CLI plus the test hooks)."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "CNS_DIST_TIMEOUT": str(timeout_s), **(env or {})}
    return subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "--no-python",
                           sys.executable, str(ROOT / "tests" / "launched_learn.py"), *map(str, args)],
                          cwd=cwd, env=full, capture_output=True, text=True, timeout=600)


def errors(r) -> list[str]:
    return [line for line in r.stderr.splitlines() if "error:" in line and not line.startswith(" ")]


def objects(bank: Path, name: str) -> tuple[dict, dict]:
    b = Bank.open(bank)
    c = b.head().concepts[name]
    return b.read_object(c.delta), b.read_object(c.embedding)


@pytest.fixture(scope="module")
def launched(tiny_base, dog_photos, tmp_path_factory):
    """<dog> learned into a new bank by 2 ranks (global batch 2, one image each), and by one process with
    --batch-size 2, with one thread as each rank has (the thread count changes float summation order)."""
    import torch

    root = tmp_path_factory.mktemp("learn2")
    (root / "record").mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = cns("--bank", root / "one.cnsbank", "learn", "dog", dog_photos, "--base", tiny_base, *ARGS)
    finally:
        torch.set_num_threads(threads)
    assert one.exit_code == 0, one.stderr
    two = launch("--bank", root / "two.cnsbank", "learn", "dog", dog_photos, "--base", tiny_base, *ARGS, cwd=root,
                 env={"CNS_TEST_RECORD": str(root / "record")})
    return root, one, two


def test_two_ranks_learn_the_concept_one_process_learns_with_their_batch(launched):
    root, one, two = launched
    assert two.returncode == 0, two.stderr
    a, b = json.loads(one.stdout), json.loads(two.stdout)  # one JSON document: only rank 0 prints
    assert b["revision"] == a["revision"] == 1 and b["plan"] == a["plan"]  # the same neurons, slice and sizes
    (da, ea), (db, eb) = objects(root / "one.cnsbank", "dog"), objects(root / "two.cnsbank", "dog")
    assert sorted(da) == sorted(db) and sorted(ea) == sorted(eb)
    for k in da:
        if k.endswith(".rows"):
            assert np.array_equal(da[k], db[k])
        else:
            assert np.abs(da[k].astype(np.float64) - db[k]).max() < 1e-5 and np.abs(da[k]).max() > 1e-4, k
    for k in ea:
        assert np.abs(ea[k] - eb[k]).max() < 1e-5
    assert b["stats"]["final_loss"] == pytest.approx(a["stats"]["final_loss"], rel=1e-5)  # the global batch's loss
    assert two.stderr.count("loading the base model") == 1 and two.stderr.count("training 6/6") == 1


def test_only_rank_0_holds_the_lock_and_one_revision_is_committed(launched):
    root, _, two = launched
    assert two.returncode == 0, two.stderr
    seen = [json.loads((root / "record" / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert seen[0]["pid"] != seen[1]["pid"]
    assert [json.loads(s["lock"])["pid"] for s in seen] == [seen[0]["pid"]] * 2  # while both train
    bank = Bank.open(root / "two.cnsbank")
    assert bank.revision_numbers() == [0, 1] and bank.head_number() == 1
    assert (root / "two.cnsbank" / "lock").read_text() == ""  # let go after the commit
    v = cns("--bank", root / "two.cnsbank", "verify")
    assert v.exit_code == 0, v.stderr


def test_a_locked_bank_stops_every_rank_before_the_load(launched, hat_photos):
    from cns_cli.bank.lock import WriterLock

    root = launched[0]
    with WriterLock(root / "two.cnsbank"):
        r = launch("--bank", root / "two.cnsbank", "learn", "hat", hat_photos, *ARGS, cwd=root)
    assert r.returncode == 1
    assert errors(r) == [f"error: bank is locked by pid {os.getpid()}; wait for it to finish (or stop it) and try again"]
    assert "loading the base model" not in r.stderr and Bank.open(root / "two.cnsbank").head_number() == 1


@pytest.mark.parametrize("fault", ["1:3:raise", "0:3:exit", "1:2:hang"])
def test_a_failing_dying_or_hung_rank_ends_the_run_with_nothing_committed(launched, hat_photos, fault):
    """One rank fails at a training step: an error of its own, a dead process (rank 0, the lock's holder, killed
    with the lock taken), or silence (the others give up after --dist-timeout). The launcher fails within a
    minute, HEAD is unchanged, and the next learn takes the bank (a dead holder's lock with a warning)."""
    root, started = launched[0], time.monotonic()
    bank = root / "two.cnsbank"
    before = Bank.open(bank).revision_numbers()
    wait = 15 if fault.endswith("hang") else 120  # also covers the other rank's model load (ranks load in turn)
    r = launch("--bank", bank, "learn", "hat", hat_photos, *ARGS, "--dist-timeout", wait, cwd=root,
               env={"CNS_TEST_FAULT": fault})
    took = time.monotonic() - started
    assert r.returncode == 1 and took < 60 + (wait if fault.endswith("hang") else 0), (took, r.stderr)
    assert Bank.open(bank).revision_numbers() == before and Bank.open(bank).head_number() == before[-1]
    shown = errors(r)
    if fault.endswith("raise"):
        assert "error: [rank 1] the test's fault on this rank" in shown
    if fault.endswith("hang"):
        assert any("stopped answering for --dist-timeout 15 s)" in line for line in shown), r.stderr
    if fault.endswith("exit"):
        holder = json.loads((bank / "lock").read_text())["pid"]  # rank 0 died holding it
        after = cns("--bank", bank, "learn", "cap", hat_photos, "--class", "hat", "--steps", "2", "--score-steps", "1")
        assert after.exit_code == 0, after.stderr
        assert f"took over the lock of process {holder}, which is gone" in after.stderr
