"""Fusion-free generation at scale: `cns generate`'s work (load, check, apply N concepts, sample) with
0, 1, 10 and 100 concepts in the bank, against a plain diffusers pipeline (load, sample) with the same
settings, interleaved round by round in one process; and the time to apply the deltas alone vs N.

    python benchmarks/generate_scale.py [--concepts 0 1 10 100] [--steps 30] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _models import bank_with_concepts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", type=int, nargs="+", default=[0, 1, 10, 100])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from diffusers import StableDiffusionPipeline

    from cns_cli.generate import build_pipeline
    from cns_cli.model.bank_apply import apply_bank
    from cns_cli.model.loading import load_pipeline, quiet_libraries, resolve_base
    from cns_cli.model.tiny import save_tiny_pipeline

    quiet_libraries()
    tmp = Path(tempfile.mkdtemp())
    base = str(save_tiny_pipeline(tmp / "tiny"))
    banks = {n: bank_with_concepts(tmp / f"b{n}.cnsbank", base, n) for n in args.concepts}

    def sample(pipe, prompt: str) -> None:
        pipe(prompt, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0), output_type="np")

    def plain() -> None:
        pipe = StableDiffusionPipeline.from_pretrained(base, local_files_only=True, safety_checker=None)
        pipe.set_progress_bar_config(disable=True)
        sample(pipe, "a photo of c0 thing on a beach")

    def cns(n: int) -> None:
        bank = banks[n]
        sample(build_pipeline(bank, bank.head()), "a photo of <c0> thing on a beach" if n else "a photo on a beach")

    def timed(fn, *a) -> float:
        t = time.perf_counter()
        fn(*a)
        return time.perf_counter() - t

    plain(), cns(args.concepts[-1])  # warm-up
    walls = {"plain": []} | {n: [] for n in args.concepts}
    apply = {n: [] for n in args.concepts}
    for _ in range(args.rounds):
        walls["plain"].append(timed(plain))
        for n in args.concepts:
            walls[n].append(timed(cns, n))
            pipe = load_pipeline(resolve_base(base))
            apply[n].append(timed(apply_bank, pipe, banks[n], banks[n].head()))
    med = {k: statistics.median(v) for k, v in walls.items()}
    result = {
        "model": "tiny", "steps": args.steps, "rounds": args.rounds, "threads": torch.get_num_threads(),
        "plain_diffusers_s": round(med["plain"], 4),
        "cns_generate_s": {str(n): round(med[n], 4) for n in args.concepts},
        "ratio_to_plain": {str(n): round(med[n] / med["plain"], 3) for n in args.concepts},
        "apply_deltas_ms": {str(n): round(statistics.median(apply[n]) * 1000, 2) for n in args.concepts},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"plain diffusers: {med['plain'] * 1000:.0f} ms")
        for n in args.concepts:
            print(f"cns, {n:3d} concepts: {med[n] * 1000:7.0f} ms  x{med[n] / med['plain']:.3f}   "
                  f"apply {result['apply_deltas_ms'][str(n)]:.1f} ms")


if __name__ == "__main__":
    main()
