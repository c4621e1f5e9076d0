"""`cns generate` of many images in one process against the same run on 2 processes (torchrun, gloo).

Each variant is the real command, timed from start to exit (interpreters, model loads and process-group start
included, as a user waits for it), in rounds that interleave the variants. The files must have the same names in
every variant, and the PNGs of variants with the same threads per process must be byte-identical, or the script
fails; torch's CPU kernels may sum in another order with another thread count, so 1 process x 2 threads is compared
by its largest pixel difference instead. On a CPU a rank runs 1 OpenMP thread here, so 2 processes x 1 thread
(`two`) is compared with 1 process x 1 thread (`one`) and 1 process x 2 threads (`one2`). On one GPU,
`--device cuda` compares 1 process with 2 sharing it (NCCL refuses two ranks on one device, so cns uses gloo there).

    python benchmarks/generate_distributed.py [--base demo|tiny|PATH] [--prompts 8] [-n 8] [--steps 20]
                                              [--rounds 2] [--variants one,one2,two] [--device cpu|cuda]
                                              [--json OUT.json]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
from pathlib import Path

from _launch import HOST, emit, runs, timed, variants

PROMPTS = ["a photo of a dog", "a red car on a road", "a house in the snow", "a cat on a sofa",
           "a boat on a lake", "a tree in a field", "a cup on a table", "a bird in the sky"]


def run(prefix: list[str], threads: int, bank: Path, out: Path, args) -> float:
    return timed(prefix, threads, ["--bank", str(bank), "generate", *PROMPTS[: args.prompts], "-n", str(args.n),
                                   "--steps", str(args.steps), "--device", args.device, "--out", str(out)])[0]


def pixels(folder: Path) -> dict:
    import numpy as np
    from PIL import Image

    return {p.name: np.asarray(Image.open(p)).astype(int) for p in sorted(folder.iterdir())}


def compare(out: Path, reference: Path, same_threads: bool) -> int:
    """The largest pixel difference (0-255) between the PNGs in `out` and `reference`; the same names required,
    and the same bytes when the threads per process are the same."""
    if sorted(p.name for p in out.iterdir()) != sorted(p.name for p in reference.iterdir()):
        raise SystemExit(f"{out}: other file names than {reference}")
    if same_threads:
        for p in out.iterdir():
            if hashlib.sha256(p.read_bytes()).digest() != hashlib.sha256((reference / p.name).read_bytes()).digest():
                raise SystemExit(f"{p.name} differs from the reference with the same threads")
        return 0
    a, b = pixels(out), pixels(reference)
    return int(max(abs(a[name] - b[name]).max() for name in a))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="demo")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("-n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variants", default="one,one2,two")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    base = args.base
    if base == "tiny":
        from cns_cli.model.tiny import save_tiny_pipeline

        base = str(save_tiny_pipeline(tmp / "tiny"))
    bank = tmp / "bank.cnsbank"
    timed([sys.executable, "-m", "cns_cli"], 1, ["--bank", str(bank), "init", "--base", base])
    chosen = variants(args.variants.split(","), args.device)
    times: dict[str, list[float]] = {key: [] for key in chosen}
    diffs: dict[str, int] = {}
    reference, ref_threads = None, None  # the first variant's first run, and its threads per process
    for r in range(args.rounds):
        for i, (key, (label, prefix, threads)) in enumerate(chosen.items()):
            out = tmp / f"out-{i}-{r}"
            times[key].append(run(prefix, threads, bank, out, args))
            if reference is None:
                reference, ref_threads = out, threads
            diff = compare(out, reference, same_threads=threads == ref_threads)
            diffs[key] = max(diffs.get(key, 0), diff)
            print(f"round {r + 1} {label}: {times[key][-1]:.1f} s, largest pixel difference {diff}", file=sys.stderr)
    images = args.prompts * args.n
    first = next(iter(times))
    emit({"command": " ".join(sys.argv), "base": args.base, "images": images, "steps": args.steps,
          "device": args.device, "rounds": args.rounds, "host": HOST,
          "png_files": images, "note": "wall time of the whole command (start, load, draw, exit); a shared, busy "
                                       "machine: other jobs ran meanwhile",
          "variants": {chosen[key][0]: {**runs(t, times[first]), "images_per_s": round(images / statistics.median(t), 3),
                                        "max_pixel_diff_vs_first": diffs[key]}
                       for key, t in times.items()}}, args.json)


if __name__ == "__main__":
    main()
