"""CLI start-up latency: `cns --help`, `cns inspect` and `cns log` on a bank of N concepts (wall time of a
fresh process, median of R runs). `cns --help` must not import torch.

    python benchmarks/cli_latency.py [--concepts 100] [--runs 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "bank"))


def wall(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concepts", type=int, default=100)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import bankfactory  # tests/bank: builds a valid bank with fake tensors, no model needed

    cns = str(Path(sys.executable).with_name("cns"))
    tmp = Path(tempfile.mkdtemp())
    try:
        bank = tmp / "b.cnsbank"
        bankfactory.build_bank(bank, args.concepts, rank=1)
        python = wall([sys.executable, "-c", "pass"], args.runs)
        result = {
            "python_startup_s": python,
            "help_s": wall([cns, "--help"], args.runs),
            f"inspect_{args.concepts}_concepts_s": wall([cns, "--bank", str(bank), "inspect"], args.runs),
            f"log_{args.concepts}_revisions_s": wall([cns, "--bank", str(bank), "log"], args.runs),
        }
    finally:
        shutil.rmtree(tmp)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:32s} {v * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
