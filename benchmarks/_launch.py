"""What the process benchmarks share (generate_distributed, learn_distributed, bench_distributed): the variants (1 or
2 processes, threads per process), one timed run of the real `cns` command, and the numbers of a variant's runs."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HOST = f"{platform.machine()}, {os.cpu_count()} cores"


def variants(keys: list[str], device: str = "cpu") -> dict[str, tuple[str, list[str], int]]:
    """key -> (label, the command's launcher prefix, OMP threads per process), for the chosen keys. On a CPU a rank
    runs 1 OpenMP thread, so 2 processes x 1 thread (`two`) is compared with 1 process x 1 thread (`one`) and
    1 process x 2 threads (`one2`); on one GPU `two` is 2 processes sharing it (gloo)."""
    cli = [sys.executable, "-m", "cns_cli"]
    two = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m", "cns_cli"]
    if device == "cuda":
        known = {"one": ("1 process", cli, 1), "two": ("2 processes (1 GPU, gloo)", two, 1)}
    else:
        known = {"one": ("1 process x 1 thread", cli, 1), "one2": ("1 process x 2 threads", cli, 2),
                 "two": ("2 processes x 1 thread", two, 1)}
    return {k: known[k] for k in keys if k in known}


def timed(prefix: list[str], threads: int, args: list[str]) -> tuple[float, str]:
    """(wall seconds from start to exit, stdout) of `prefix + args` (a `cns` command line); exits on a failure."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    cmd = [*prefix, *args]
    began = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return wall, r.stdout


def runs(seconds: list[float], first: list[float], name: str = "") -> dict:
    """A variant's runs: their median, each, and the first variant's median over theirs (`name`: a prefix)."""
    med = statistics.median(seconds)
    return {f"{name}median_s": round(med, 2), f"{name}runs_s": [round(x, 2) for x in seconds],
            f"{name}speedup_vs_first": round(statistics.median(first) / med, 3)}


def emit(doc: dict, path: Path | None) -> None:
    """Print the results document, and write it to `path` when given."""
    text = json.dumps(doc, indent=2)
    print(text)
    if path:
        path.write_text(text + "\n")
