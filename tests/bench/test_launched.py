"""`cns bench` under a real launcher: 2 gloo processes on the CPU (torchrun), against one process. Three launches
(each starts 2 interpreters), all in the slow set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cns_cli.bench import results
from tests.clitools import cns

pytestmark = pytest.mark.slow  # launches processes end to end (docs/development.md: the quick subset)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ARGS = ["bench", "--quick", "--methods", "ti,cns", "--steps", "2", "--zero-shot-prompts", "3", "--device", "cpu"]
TIMINGS = ("seconds", "learn_seconds_per_concept", "files", "resumed")  # differ from run to run


def _without_timings(x):
    if isinstance(x, dict):
        return {k: _without_timings(v) for k, v in x.items() if k not in TIMINGS}
    if isinstance(x, list):
        return [_without_timings(v) for v in x]
    return x


def _table_without_timings(path: Path) -> list[str]:
    """table.md without its last column (learn s)."""
    return [line.rsplit("|", 2)[0] if line.startswith("|") else line for line in path.read_text().splitlines()]


def launch(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`cns ARGS` on 2 ranks through tests/bench/launched_bench.py (its test hooks in `env`)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "CNS_DIST_TIMEOUT": "300", **(env or {})}
    return subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "--no-python",
                           sys.executable, str(ROOT / "tests" / "bench" / "launched_bench.py"), *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def one_process(tiny_demo_base, tmp_path_factory):
    """The reference: the run in one process (in-process CLI) with one thread, as each launched rank has (on the
    CPU the thread count can change a pixel by 1/255: docs/distributed.md, pitfall 3)."""
    import torch

    out, threads = tmp_path_factory.mktemp("one") / "out", torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = cns(*ARGS, "--base", tiny_demo_base, "--out", out, "--json")
    finally:
        torch.set_num_threads(threads)
    assert r.exit_code == 0, r.stderr
    return out, json.loads(r.stdout)


def _same_run(out: Path, doc: dict, reference: Path, reference_doc: dict) -> None:
    """Every number (but timings), every image and the reports of `out` are those of the one-process run."""
    assert _without_timings(doc) == _without_timings(reference_doc)
    assert _without_timings(json.loads((out / "bench.json").read_text())) == _without_timings(reference_doc)
    for key in ("ti", "cns"):
        assert results.images_path(out, key).read_bytes() == results.images_path(reference, key).read_bytes(), key
        assert _without_timings(json.loads(results.entry_path(out, key).read_text())) == \
            _without_timings(json.loads(results.entry_path(reference, key).read_text())), key
    assert _table_without_timings(out / "table.md") == _table_without_timings(reference / "table.md")
    assert (out / "contact-sheet.png").read_bytes() == (reference / "contact-sheet.png").read_bytes()
    assert (out / "forgetting.png").is_file()


def test_two_processes_share_the_methods_and_write_what_one_process_does(tiny_demo_base, one_process, tmp_path):
    reference, reference_doc = one_process
    r = launch(*ARGS, "--base", tiny_demo_base, "--out", tmp_path / "out", "--json", cwd=tmp_path,
               env={"CNS_TEST_MADE_LOG": str(tmp_path / "made.txt")})
    assert r.returncode == 0, r.stderr
    _same_run(tmp_path / "out", json.loads(r.stdout), reference, reference_doc)  # rank 0 alone printed: one document
    assert sorted((tmp_path / "made.txt").read_text().splitlines()) == ["0 ti", "1 cns"]  # each ran one
    assert "2 processes share 2 method(s): rank 0: ti; rank 1: cns" in r.stderr
    assert r.stderr.count("scoring the base model") == 1


def test_a_failed_rank_keeps_the_finished_methods_and_resume_runs_only_the_rest(tiny_demo_base, one_process,
                                                                                tmp_path):
    """Rank 1's method fails half way (a full disk): rank 0 finishes its own, then every rank stops with rank 1's
    error, said once. --resume (here on 2 processes again; rank 1 then has nothing to do) keeps ti untouched
    and runs only cns; the result is the uninterrupted run's."""
    reference, reference_doc = one_process
    out, made = tmp_path / "out", tmp_path / "made.txt"
    r = launch(*ARGS, "--base", tiny_demo_base, "--out", out, cwd=tmp_path,
               env={"CNS_TEST_FAIL_METHOD": "cns", "CNS_TEST_MADE_LOG": str(made)})
    assert r.returncode == 1  # torchrun's status for a failed rank; each rank's code is in its report
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: [rank 1] ") and "no space left" in errors[0].lower()
    assert "exitcode  : 2" in r.stderr and "/cns_cli/" not in r.stderr  # no traceback of cns itself
    assert results.entry_path(out, "ti").is_file() and not results.entry_path(out, "cns").exists()
    assert list(json.loads((out / "bench.json").read_text())["methods"]) == ["ti"]
    finished_at = results.entry_path(out, "ti").stat().st_mtime_ns, results.images_path(out, "ti").stat().st_mtime_ns

    made.write_text("")
    r = launch(*ARGS, "--base", tiny_demo_base, "--out", out, "--resume", "--json", cwd=tmp_path,
               env={"CNS_TEST_MADE_LOG": str(made)})
    assert r.returncode == 0, r.stderr
    assert made.read_text().splitlines() == ["0 cns"]  # ti was not run again
    assert (results.entry_path(out, "ti").stat().st_mtime_ns, results.images_path(out, "ti").stat().st_mtime_ns) \
        == finished_at
    doc = json.loads(r.stdout)
    assert doc["resumed"] == ["ti"] and "ti: kept from the earlier run" in r.stderr
    assert "rank 0: cns; rank 1: none" in r.stderr
    _same_run(out, doc, reference, reference_doc)
