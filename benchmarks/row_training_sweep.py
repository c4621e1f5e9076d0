"""Can cns's K/V rows add fidelity beyond its token on the demo model? `cns bench` (its protocol, seeds and
evaluator) with cns learning under variants of its row-training settings: the self-regularisation weight λ,
the coefficients' learning rate, the row budget, and the basis the slices are cut from.

    python benchmarks/row_training_sweep.py [--variant NAME KEY=VALUE[,KEY=VALUE...]]... [--basis random|calibration-energy]
                                            [--concepts 2] [--zero-shot-prompts 12] [--out row-sweep] [--base demo]
                                            [--quick] [--json]

KEY is any `LearnConfig` field (reg_lambda, lr, budget, rank, steps, ...); with no --variant the four of the
docs/benchmark.md's first run are used. Prints, per variant: final mean identity, identity just after learning each
concept, mean forgetting and the zero-shot change in points, and writes the bench's files under --out.

--basis calibration-energy cuts slices from the eigenvectors of the calibration prompts' text-state second
moment, lowest energy first (the directions protected prompts barely excite, so the regulariser barely
charges for them), instead of the bank's seeded random orthogonal Q. It is an experiment, not a bank
option: the bank format records Q as `qr-gaussian-v1`, so the banks of such a run are deleted at its end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_VARIANTS = [("defaults", ""), ("lambda-0.01", "reg_lambda=0.01"), ("lr-1e-2", "lr=0.01"), ("lambda-0", "reg_lambda=0")]


def parse_overrides(text: str) -> dict:
    """"reg_lambda=0,lr=0.01" -> {"reg_lambda": 0.0, "lr": 0.01}, typed by LearnConfig's defaults."""
    from cns_cli.learn import LearnConfig

    fields = {f.name: f for f in dataclasses.fields(LearnConfig)}
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"unknown LearnConfig field {key!r}; choose from {', '.join(fields)}")
        default = fields[key].default
        if isinstance(default, bool):
            out[key] = value.lower() in ("1", "true", "yes")
        else:
            out[key] = type(default)(value) if isinstance(default, (int, float)) else value
    return out


def calibration_energy_basis(base: str):
    """Q whose columns are the eigenvectors of E[c cᵀ] over the calibration prompts' text states (all 77
    positions, as the regulariser sees them), in increasing eigenvalue; the first one, which carries no
    energy at all (a direction no state reaches), goes last. (d, d) float32, and the eigenvalues in Q's order."""
    import torch

    from cns_cli.model.loading import load_pipeline, model_dir, resolve_base
    from cns_cli.model.text import encode
    from cns_cli.prompts import calibration_prompts

    spec = resolve_base(base)
    pipe = load_pipeline(spec)
    with torch.no_grad():
        c = encode(pipe.tokenizer, pipe.text_encoder, calibration_prompts(model_dir(spec))).double().flatten(0, 1)
    energy, vectors = torch.linalg.eigh(c.T @ c / c.shape[0])  # ascending
    order = list(range(1, energy.numel())) + [0]
    return vectors[:, order].float().numpy(), energy[order].tolist()


def summary_row(key: str, entry: dict) -> dict:
    steps = entry["steps"]
    s = entry["summary"]
    return {"variant": key, "final_identity": s["final_identity"], "identity_just_after": s["identity_just_after"],
            "mean_forgetting": s["mean_forgetting"], "zero_shot_change_points": s["zero_shot_change_points"],
            "just_after": {st["learned"]: st["concepts"][st["learned"]]["identity"] for st in steps},
            "final": {n: v["identity"] for n, v in steps[-1]["concepts"].items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "OVERRIDES"))
    ap.add_argument("--basis", choices=("random", "calibration-energy"), default="random")
    ap.add_argument("--concepts", type=int, default=2)
    ap.add_argument("--zero-shot-prompts", type=int, default=None, help="default 12; --quick 6")
    ap.add_argument("--out", type=Path, default=Path("row-sweep"))
    ap.add_argument("--base", default="demo")
    ap.add_argument("--quick", action="store_true", help="the bench's --quick settings (checks the script)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from cns_cli.bench import methods
    from cns_cli.bench.protocol import BenchConfig, run_bench

    variants = args.variant or DEFAULT_VARIANTS
    for name, text in variants:  # registered as bench methods for this process only
        methods.METHODS[name] = methods.MethodInfo(name, "ablation", f"cns, {text or 'defaults'}", parse_overrides(text))
    q = energies = None
    if args.basis == "calibration-energy":
        q, energies = calibration_energy_basis(args.base)  # the Q every new bank of this run starts from
    kw = {"base": args.base, "methods": tuple(n for n, _ in variants), "concepts": args.concepts}  # --quick too
    if args.zero_shot_prompts is not None:
        kw["zero_shot_n"] = args.zero_shot_prompts
    config = BenchConfig.quick(**kw) if args.quick else BenchConfig(**{"zero_shot_n": 12, **kw})
    doc = run_bench(args.out, config, new_basis=q)
    if energies is not None:
        shutil.rmtree(args.out / "banks")
    rows = [{"basis": args.basis, "concepts": config.concepts, "overrides": dict(variants)[k], **summary_row(k, e)}
            for k, e in doc["methods"].items()]
    if energies is not None:
        rows[0]["basis_energy_first_slices"] = [sum(energies[i : i + 4]) for i in range(0, 16, 4)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(f"{r['variant']:<28} final {r['final_identity']:.3f}  just after {r['identity_just_after']:.3f}  "
              f"forgetting {r['mean_forgetting']:+.3f}  zero-shot {r['zero_shot_change_points']:+.1f} pts")


if __name__ == "__main__":
    main()
