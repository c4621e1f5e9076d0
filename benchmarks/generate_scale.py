"""Fusion-free generation at scale: `cns generate`'s work (load, check, apply N concepts, sample) with
0, 1, 10 and 100 concepts in the bank, against a plain diffusers pipeline (load, sample) with the same
settings, interleaved round by round in one process; and the time to apply the deltas alone vs N.

Regions: sampling one image of a two-concept prompt with `--layout auto` (two regions, the regional sampler)
against the same prompt sampled plainly, on the same pipeline, interleaved; on the tiny pipeline and, with
`--regions-base demo`, on that model too (the overhead is relative to the UNet, so it depends on the model).

    python benchmarks/generate_scale.py [--concepts 0 1 10 100] [--steps 30] [--rounds 5]
                                        [--regions-base demo] [--json]
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
    ap.add_argument("--regions-base", default=None, help="also time regions on this base (e.g. demo)")
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
    regions = {"tiny": region_cost(bank_with_concepts(tmp / "regions.cnsbank", base, 2), args.steps, args.rounds)}
    if args.regions_base:
        regions[args.regions_base] = region_cost(bank_with_concepts(tmp / "regions-2.cnsbank", args.regions_base, 2),
                                                 args.steps, args.rounds)
    med = {k: statistics.median(v) for k, v in walls.items()}
    result = {
        "model": "tiny", "steps": args.steps, "rounds": args.rounds, "threads": torch.get_num_threads(),
        "plain_diffusers_s": round(med["plain"], 4),
        "cns_generate_s": {str(n): round(med[n], 4) for n in args.concepts},
        "ratio_to_plain": {str(n): round(med[n] / med["plain"], 3) for n in args.concepts},
        "apply_deltas_ms": {str(n): round(statistics.median(apply[n]) * 1000, 2) for n in args.concepts},
        "two_regions": regions,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"plain diffusers: {med['plain'] * 1000:.0f} ms")
        for n in args.concepts:
            print(f"cns, {n:3d} concepts: {med[n] * 1000:7.0f} ms  x{med[n] / med['plain']:.3f}   "
                  f"apply {result['apply_deltas_ms'][str(n)]:.1f} ms")
        for model, r in regions.items():
            print(f"two regions ({model}): sampling {r['regions_s'] * 1000:.0f} ms vs plain {r['plain_s'] * 1000:.0f} ms"
                  f"  x{r['ratio']:.3f}")


def region_cost(bank, steps: int, rounds: int) -> dict:
    """Median seconds to sample one image of "a photo of <c0> and <c1>" plainly and with `--layout auto`."""
    from cns_cli.generate import build_pipeline
    from cns_cli.model.regional import regional_generate
    from cns_cli.regions import RegionRequest, plan_regions

    pipe = build_pipeline(bank, bank.head())
    pipe.set_progress_bar_config(disable=True)
    prompt = "a photo of <c0> and <c1>"
    plan = plan_regions(prompt, RegionRequest(auto=True), {"c0": "thing", "c1": "thing"})
    text = "a photo of <c0> thing and <c1> thing"
    kw = lambda: dict(num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="np")  # noqa: E731

    def plain() -> None:
        pipe(text, **kw())

    def regional() -> None:
        regional_generate(pipe, plan.context, plan.boxes, plan.texts, **kw())

    plain(), regional()  # warm-up
    t = {"plain": [], "regions": []}
    for _ in range(rounds):
        for key, fn in (("plain", plain), ("regions", regional)):
            t0 = time.perf_counter()
            fn()
            t[key].append(time.perf_counter() - t0)
    p, r = statistics.median(t["plain"]), statistics.median(t["regions"])
    return {"plain_s": round(p, 4), "regions_s": round(r, 4), "ratio": round(r / p, 3)}


if __name__ == "__main__":
    main()
