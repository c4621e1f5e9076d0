"""`cns bench` in one process against the same run on 2 processes (torchrun, gloo), on the CPU.

Each variant is the real command, timed from start to exit (interpreters, process group, photos, base scoring,
every method, reports), in rounds that interleave the variants. Every variant must write the same bench.json
(timings aside: `learn.seconds`, `learn_seconds_per_concept`, file paths), and variants with the same threads per
process the same images (OUT/images/*.safetensors, byte for byte), or the script fails. torch's CPU kernels may sum
in another order with another thread count, so 1 process x 2 threads (`one2`) is compared by its largest
difference in any number and any pixel instead. A rank runs 1 OpenMP thread here, so 2 processes x 1 thread
(`two`) is compared with 1 process x 1 thread (`one`) and 1 process x 2 threads (`one2`).

    python benchmarks/bench_distributed.py [--base demo|tiny|PATH] [--methods all|KEY,KEY] [--full]
                                           [--rounds 1] [--variants one,one2,two] [--json OUT.json]

Without --full the run is `cns bench --quick` (2 concepts, 8 steps, few images); --full is the whole bench
(10 concepts, 150 steps: about an hour and a half per variant on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from _launch import HOST, emit, runs, timed, variants

TIMINGS = ("seconds", "learn_seconds_per_concept", "files")  # what differs from run to run


def run(prefix: list[str], threads: int, out: Path, args) -> float:
    return timed(prefix, threads, ["bench", *([] if args.full else ["--quick"]), "--base", args.base, "--device", "cpu",
                                   "--out", str(out), "--json",
                                   *(["--methods", args.methods] if args.methods != "all" else [])])[0]


def without_timings(x):
    if isinstance(x, dict):
        return {k: without_timings(v) for k, v in x.items() if k not in TIMINGS}
    if isinstance(x, list):
        return [without_timings(v) for v in x]
    return x


def numbers(x, path=""):
    """(path, value) of every number in a document, in order."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from numbers(v, f"{path}/{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from numbers(v, f"{path}/{i}")
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield path, float(x)


def compare(out: Path, reference: Path, same_threads: bool) -> dict:
    """{"numbers": largest difference of any number, "pixels": largest pixel difference (0-255)} between two runs'
    bench.json and images; with the same threads per process both must be 0 (the script fails otherwise)."""
    import numpy as np
    from safetensors.numpy import load_file

    a, b = (without_timings(json.loads((o / "bench.json").read_text())) for o in (out, reference))
    na, nb = list(numbers(a)), list(numbers(b))
    if [p for p, _ in na] != [p for p, _ in nb]:
        raise SystemExit(f"{out}: bench.json has other fields than {reference}")
    worst = max((abs(x - y) for (_, x), (_, y) in zip(na, nb) if x == x and y == y), default=0.0)
    names = sorted(p.name for p in (reference / "images").iterdir())
    if sorted(p.name for p in (out / "images").iterdir()) != names:
        raise SystemExit(f"{out}: other image files than {reference}")
    pixels = 0
    for name in names:
        x, y = load_file(str(out / "images" / name)), load_file(str(reference / "images" / name))
        pixels = max([pixels, *(int(np.abs(x[k].astype(int) - y[k].astype(int)).max(initial=0)) for k in x)])
    if same_threads and (a != b or pixels):
        raise SystemExit(f"{out} differs from {reference}, with the same threads per process")
    return {"numbers": worst, "pixels": pixels}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="demo")
    ap.add_argument("--methods", default="all")
    ap.add_argument("--full", action="store_true", help="the whole bench instead of --quick")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--variants", default="one,one2,two")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    if args.base == "tiny":
        from cns_cli.model.tiny import save_tiny_pipeline
        from cns_cli.demo.world import base_world

        pipe = save_tiny_pipeline(tmp / "tiny")
        (pipe / "training.json").write_text(json.dumps({"world": base_world("demo")}) + "\n")
        args.base = str(pipe)
    chosen = variants(args.variants.split(","))  # on the CPU
    times: dict[str, list[float]] = {key: [] for key in chosen}
    diffs: dict[str, dict] = {}
    load = [os.getloadavg()]
    reference, ref_threads = None, None  # the first variant's first run, and its threads per process
    for r in range(args.rounds):
        for key, (label, prefix, threads) in chosen.items():
            out = tmp / f"out-{key}-{r}"
            times[key].append(run(prefix, threads, out, args))
            load.append(os.getloadavg())
            if reference is None:
                reference, ref_threads = out, threads
            diff = compare(out, reference, same_threads=threads == ref_threads)
            diffs[key] = {k: max(diffs.get(key, {}).get(k, 0), v) for k, v in diff.items()}
            print(f"round {r + 1} {label}: {times[key][-1]:.1f} s, largest difference {diff}", file=sys.stderr)
    first = next(iter(times))
    methods = json.loads((reference / "bench.json").read_text())["config"]["methods"]
    emit({"command": " ".join(sys.argv), "base": args.base, "run": "full" if args.full else "--quick",
          "methods": methods, "rounds": args.rounds, "host": HOST,
          "load_average_1_5_15_min": [[round(x, 2) for x in la] for la in load],
          "note": "wall time of the whole command (start, photos, base, every method, reports, exit); the load "
                  "average was read before the first run and after each",
          "variants": {key: {"label": chosen[key][0], **runs(t, times[first]),
                             "largest_difference_vs_first": diffs[key]}
                       for key, t in times.items()}}, args.json)


if __name__ == "__main__":
    main()
