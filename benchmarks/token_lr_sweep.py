"""How the default token learning rate was chosen: `cns bench` (demo model, the bench's protocol and seeds)
once per value of `lr_token`, the same value for every method in a run. Prints identity / recognition per
concept and method, and writes every bench.json under --out.

    python benchmarks/token_lr_sweep.py [--values 5e-4,1e-3,2e-3,5e-3] [--concepts 2] [--methods cns,ti]
                                        [--out token-lr-sweep] [--base demo] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--values", default="5e-4,1e-3,2e-3,5e-3")
    ap.add_argument("--concepts", type=int, default=2)
    ap.add_argument("--methods", default="cns,ti")
    ap.add_argument("--out", type=Path, default=Path("token-lr-sweep"))
    ap.add_argument("--base", default="demo")
    ap.add_argument("--quick", action="store_true", help="the bench's --quick settings (checks the script)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from cns_cli.bench.protocol import BenchConfig, run_bench

    rows = []
    for value in [float(v) for v in args.values.split(",")]:
        kw = {"base": args.base, "methods": tuple(args.methods.split(",")), "lr_token": value, "concepts": args.concepts}
        config = BenchConfig.quick(**kw) if args.quick else BenchConfig(**kw)  # --concepts counts with --quick too
        doc = run_bench(args.out / f"lr_token-{value:g}", config)
        for key, entry in doc["methods"].items():
            last = entry["steps"][-1]["concepts"]
            rows.append({"lr_token": value, "method": key, "final_identity": entry["summary"]["final_identity"],
                         **{f"{name}_identity": s["identity"] for name, s in last.items()},
                         **{f"{name}_recognised": s["recognised"] for name, s in last.items()}})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
