"""Each demo individual learned alone, as a user would: how often is it recognised afterwards?

For every individual of the model's demo world: 6 uncaptioned photos (`render_photos`, the user's own photo
folder), a fresh bank, `cns learn NAME PHOTOS --class CLS --base BASE` with every other setting at its
default, run through the installed `cns` command exactly as a user runs it. Then the bench's concept prompts
("a <rex> dog on the beach", 4 scenes x `--seeds` images, `cns_cli.bench.scoring`) are drawn from the bank and
read by the evaluator of the model's world: "recognised" is the share of images whose nearest individual (of
all twelve) is the learned one. Issue 19's target: every individual >= 0.8 on the bundled model.

    python benchmarks/learn_each.py [--base demo] [--names rex,stripy] [--seeds 4] [--json OUT]
                                    [--learn-args "--steps 200 --reg-lambda 0"] [--captions] [--keep DIR]

Each learn runs in its own `cns` process, one after the other; expect a few minutes per individual on 2 cores.
`--learn-args` passes more `cns learn` flags (a study of one setting against the defaults, same photos and
prompts), `--captions` gives each photo a caption file naming its scene (`render_photos(captions=True)`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

def cns_command() -> list[str]:
    """The `cns` console script of this environment (what `pip install -e .` put next to the interpreter)."""
    here = Path(sys.executable).with_name("cns")
    found = str(here) if here.exists() else shutil.which("cns")
    if not found:
        raise SystemExit("no `cns` command: install the project first (README, Setup)")
    return [found]


def learn_alone(name: str, cls: str, base: str, work: Path, world: int, photos: int, learn_args: list[str],
                captions: bool) -> tuple[Path, float]:
    """(bank path, seconds `cns learn` took) for `name` learned alone with the defaults (and `learn_args`)."""
    from cns_cli.demo.individuals import render_photos

    folder, bank = work / "photos" / name, work / f"{name}.cnsbank"
    render_photos(name, folder, n=photos, world=world, captions=captions)
    cns = cns_command()
    t0 = time.perf_counter()  # `cns learn` creates the bank on --base: the first thing a new user runs
    subprocess.run([*cns, "learn", name, str(folder), "--class", cls, "--base", base, "--bank", str(bank),
                    *learn_args], check=True, stdout=subprocess.DEVNULL)
    return bank, time.perf_counter() - t0


def score(bank: Path, name: str, cls: str, ev, sampling) -> dict:
    import cns_cli
    from cns_cli.bench.scoring import score_concepts
    from cns_cli.bench.trainer import ConceptData

    pipe = cns_cli.load_pipeline(bank, device="cpu")
    scores, _ = score_concepts(pipe, ev, [ConceptData(name, cls, bank)], sampling)
    return scores[name]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="demo", help="the demo model: 'demo' (bundled) or a demo pipeline folder")
    ap.add_argument("--evaluator", type=Path, help="evaluator weights (default: the bundled evaluator)")
    ap.add_argument("--names", help="comma-separated individuals (default: all twelve)")
    ap.add_argument("--photos", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=4, help="images per scene (4 scenes)")
    ap.add_argument("--sample-steps", type=int, default=20)
    ap.add_argument("--learn-args", default="", help='more `cns learn` flags, e.g. "--steps 200" (default: none)')
    ap.add_argument("--captions", action="store_true", help="caption files naming each photo's scene")
    ap.add_argument("--keep", type=Path, help="keep the photos and banks in this folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    learn_args = shlex.split(args.learn_args)

    from cns_cli.bench.protocol import BenchConfig
    from cns_cli.bench.scoring import Sampling
    from cns_cli.demo.evaluator import Evaluator
    from cns_cli.demo.individuals import individuals_of
    from cns_cli.demo.world import base_world

    world = base_world(args.base)
    ev = Evaluator.load(args.evaluator)
    ev.check_world(world)
    people = individuals_of(world)
    names = args.names.split(",") if args.names else list(people)
    scenes = BenchConfig.scenes  # the bench's evaluation scenes and guidance: the same prompts as its concept scores
    sampling = Sampling(scenes, args.seeds, args.sample_steps, BenchConfig.guidance, 1, world)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        for name in names:
            cls = people[name].cls
            bank, seconds = learn_alone(name, cls, args.base, work, world, args.photos, learn_args, args.captions)
            results[name] = {**score(bank, name, cls, ev, sampling), "learn_seconds": round(seconds, 1)}
            r = results[name]
            print(f"{name:8s} recognised {r['recognised']:.3f}  identity {r['identity']:.3f}  "
                  f"class {r['class']:.3f}  scene {r['scene']:.3f}  learn {seconds:.0f} s", flush=True)
    rec = [r["recognised"] for r in results.values()]
    summary = {"mean_recognised": sum(rec) / len(rec), "min_recognised": min(rec),
               "at_least_0.8": sum(v >= 0.8 for v in rec), "individuals": len(rec)}
    print(f"mean recognised {summary['mean_recognised']:.3f}, min {summary['min_recognised']:.3f}, "
          f"{summary['at_least_0.8']}/{len(rec)} at >= 0.8")
    if args.json:
        doc = {"command": shlex.join(["python", "benchmarks/learn_each.py", *sys.argv[1:]]), "base": args.base,
               "world": world, "learn_args": learn_args, "captions": args.captions,
               "images_per_individual": len(scenes) * args.seeds, "results": results, "summary": summary}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
