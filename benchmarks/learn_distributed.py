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
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def variants(device: str, keys: list[str]) -> dict[str, tuple[list[str], int]]:
    """name -> (the command's launcher prefix, OMP threads per process), for the chosen keys."""
    cli = [sys.executable, "-m", "cns_cli"]
    two = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m", "cns_cli"]
    if device == "cuda":
        known = {"one": ("1 process", (cli, 1)), "two": ("2 processes (1 GPU, gloo)", (two, 1))}
    else:
        known = {"one": ("1 process x 1 thread", (cli, 1)), "one2": ("1 process x 2 threads", (cli, 2)),
                 "two": ("2 processes x 1 thread", (two, 1))}
    return dict(known[k] for k in keys if k in known)


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
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    cmd = [*prefix, "--bank", str(bank), "learn", "concept", str(images), "--class", cls, "--base", base,
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--device", args.device, "--json"]
    began = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return wall, json.loads(r.stdout)["stats"]


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
    chosen = variants(args.device, args.variants.split(","))
    walls: dict[str, list[float]] = {name: [] for name in chosen}
    training: dict[str, list[float]] = {name: [] for name in chosen}
    diffs: dict[str, float] = {}
    reference = None
    for r in range(args.rounds):
        for i, (name, (prefix, threads)) in enumerate(chosen.items()):
            bank = tmp / f"bank-{i}-{r}.cnsbank"
            wall, stats = run(prefix, threads, bank, images, cls, base, args)
            walls[name].append(wall)
            training[name].append(stats["seconds_training"])
            reference = reference or bank
            diffs[name] = max(diffs.get(name, 0.0), difference(bank, reference))
            print(f"round {r + 1} {name}: {wall:.1f} s whole, {stats['seconds_training']:.1f} s training, "
                  f"largest difference {diffs[name]:.1e}", file=sys.stderr)
    first = next(iter(walls))
    med = statistics.median
    doc = {"command": " ".join(sys.argv), "base": args.base, "steps": args.steps, "batch_size": args.batch_size,
           "device": args.device, "rounds": args.rounds, "host": f"{platform.machine()}, {os.cpu_count()} cores",
           "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
           "note": "whole = the command from start to exit; training = its own seconds_training. Every variant "
                   "learns with the same global --batch-size, so the same concept",
           "variants": {name: {"whole_median_s": round(med(w), 2), "whole_runs_s": [round(x, 2) for x in w],
                               "training_median_s": round(med(training[name]), 2),
                               "training_speedup_vs_first": round(med(training[first]) / med(training[name]), 3),
                               "whole_speedup_vs_first": round(med(walls[first]) / med(w), 3),
                               "max_difference_vs_first": diffs[name]}
                        for name, w in walls.items()}}
    text = json.dumps(doc, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
