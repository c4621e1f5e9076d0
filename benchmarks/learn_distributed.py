"""`cns learn` in one process against the same learn on 2 processes sharing each batch (torchrun, gloo).

Each variant is the real command on a new bank, timed from start to exit (interpreters, model loads, process-group
start included, as a user waits for it), in rounds that interleave the variants; the training time alone is what
the command reports (`stats.seconds_training`). Every variant learns with the same global `--batch-size`, so they
must learn the same concept: the script fails unless the rows match exactly and the coefficients and token vectors
agree within 1e-4 (float summation order differs with the batch split and the thread count). On a CPU a rank runs
1 OpenMP thread, so 2 processes x 1 thread (`two`) is compared with 1 process x 1 thread (`one`) and 1 process x
2 threads (`one2`). On one GPU, `--device cuda` compares 1 process with 2 sharing it (gloo).

    python benchmarks/learn_distributed.py [--base demo|tiny|PATH] [--steps 100] [--batch-size 2] [--rounds 2]
                                           [--variants one,one2,two] [--device cpu|cuda] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from _launch import HOST, emit, runs, timed, variants


def photos(folder: Path, base: str) -> tuple[Path, str]:
    """The demo world's first individual's photos (rex, a dog), or a few drawn shapes for another base."""
    if base == "demo":
        from cns_cli.demo.individuals import individuals_of, render_photos
        from cns_cli.demo.world import base_world

        world = base_world("demo")
        render_photos("rex", folder, n=6, seed=0, captions=True, world=world)
        return folder, individuals_of(world)["rex"].cls
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True)
    for i in range(6):
        im = Image.new("RGB", (96, 96), (90 + 20 * i, 120, 160))
        ImageDraw.Draw(im).ellipse([10 + 5 * i, 12, 60 + 5 * i, 62], fill=(140, 80, 20))
        im.save(folder / f"{i:02d}.png")
    return folder, "dog"


def run(prefix: list[str], threads: int, bank: Path, images: Path, cls: str, base: str, args) -> tuple[float, dict]:
    """(wall seconds, the learn's stats) of one `cns learn --json` on a new bank."""
    wall, out = timed(prefix, threads, ["--bank", str(bank), "learn", "concept", str(images), "--class", cls, "--base",
                                        base, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                                        "--device", args.device, "--json"])
    return wall, json.loads(out)["stats"]


def learned(bank: Path) -> tuple[dict, dict]:
    from cns_cli.bank import Bank

    b = Bank.open(bank)
    c = b.head().concepts["concept"]
    return b.read_object(c.delta), b.read_object(c.embedding)


def difference(bank: Path, reference: Path) -> float:
    """The largest coefficient / token-vector difference from the reference; the rows must be identical."""
    import numpy as np

    (d, e), (rd, re) = learned(bank), learned(reference)
    if sorted(d) != sorted(rd) or any(k.endswith(".rows") and not np.array_equal(d[k], rd[k]) for k in d):
        raise SystemExit(f"{bank}: other neurons than {reference}")
    worst = max(float(np.abs(d[k].astype(np.float64) - rd[k]).max()) for k in d if not k.endswith(".rows"))
    worst = max(worst, *(float(np.abs(e[k] - re[k]).max()) for k in e))
    if worst > 1e-4:
        raise SystemExit(f"{bank}: learned another concept than {reference} (largest difference {worst:.2e})")
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="demo")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=2)
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
    images, cls = photos(tmp / "photos", args.base)
    chosen = variants(args.variants.split(","), args.device)
    walls: dict[str, list[float]] = {key: [] for key in chosen}
    training: dict[str, list[float]] = {key: [] for key in chosen}
    diffs: dict[str, float] = {}
    reference = None
    for r in range(args.rounds):
        for i, (key, (label, prefix, threads)) in enumerate(chosen.items()):
            bank = tmp / f"bank-{i}-{r}.cnsbank"
            wall, stats = run(prefix, threads, bank, images, cls, base, args)
            walls[key].append(wall)
            training[key].append(stats["seconds_training"])
            reference = reference or bank
            diffs[key] = max(diffs.get(key, 0.0), difference(bank, reference))
            print(f"round {r + 1} {label}: {wall:.1f} s whole, {stats['seconds_training']:.1f} s training, "
                  f"largest difference {diffs[key]:.1e}", file=sys.stderr)
    first = next(iter(walls))
    emit({"command": " ".join(sys.argv), "base": args.base, "steps": args.steps, "batch_size": args.batch_size,
          "device": args.device, "rounds": args.rounds, "host": HOST,
          "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
          "note": "whole = the command from start to exit; training = its own seconds_training. Every variant "
                  "learns with the same global --batch-size, so the same concept",
          "variants": {chosen[key][0]: {**runs(w, walls[first], "whole_"),
                                        **runs(training[key], training[first], "training_"),
                                        "max_difference_vs_first": diffs[key]}
                       for key, w in walls.items()}}, args.json)


if __name__ == "__main__":
    main()
