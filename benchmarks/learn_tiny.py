"""Learn time, per-step time and bytes per concept of `cns learn` with default settings on the tiny
random pipeline (CPU), for K concepts in a row. Numbers for docs/measured.md; the quality of a random model is not
the point, the cost is.

    python benchmarks/learn_tiny.py [--concepts 3] [--steps 400] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def photos(folder: Path, seed: int) -> Path:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True)
    rng = random.Random(seed)
    for i in range(5):
        im = Image.new("RGB", (96, 96), tuple(rng.randrange(60, 200) for _ in range(3)))
        x, y = rng.randrange(8, 40), rng.randrange(8, 40)
        ImageDraw.Draw(im).ellipse([x, y, x + 44, y + 44], fill=tuple(rng.randrange(256) for _ in range(3)))
        im.save(folder / f"{i}.png")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concepts", type=int, default=3)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import torch

    from cns_cli.bank import Bank
    from cns_cli.learn import LearnConfig, learn
    from cns_cli.model.tiny import save_tiny_pipeline

    torch.set_num_threads(os.cpu_count() or 1)
    tmp = Path(tempfile.mkdtemp())
    base = save_tiny_pipeline(tmp / "tiny")
    bank = tmp / "b.cnsbank"
    rows = []
    for k in range(args.concepts):
        t = time.perf_counter()
        out = learn(bank, f"c{k}", photos(tmp / f"p{k}", k), base=str(base), config=LearnConfig(steps=args.steps))
        wall = time.perf_counter() - t
        c = Bank.open(bank).head().concepts[f"c{k}"]
        rows.append({"concept": k + 1, "wall_s": round(wall, 2), "train_s": out.stats["seconds_training"],
                     "score_s": out.stats["seconds_scoring"], "ms_per_step": round(out.stats["seconds_per_step"] * 1000, 1),
                     "neurons": c.neurons.total, "bytes": c.delta.size + c.embedding.size})
    result = {"device": "cpu", "threads": torch.get_num_threads(), "steps": args.steps, "per_concept": rows}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for r in rows:
            print(r)


if __name__ == "__main__":
    main()
