"""Wall time of a whole `cns learn` (model load, general neurons, scoring, training, commit) with today's
defaults against another setting — by default 0.x's, λ = 1 and no drift budget (`--max-drift off
--reg-lambda 1`) — on the demo model, as a user runs it (the installed `cns` command, a fresh bank each time).

The settings alternate round by round on the same photos, so a slow spell of a shared machine hits both;
medians and their ratio are reported. Issue 33's target: today's defaults take at most 1.5x 0.x's.

    python benchmarks/learn_time.py [--name rex] [--rounds 3] [--other "--max-drift off --reg-lambda 1"] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learn_each import learn_alone  # noqa: E402  (one way to run `cns learn` as a user does)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="demo", help="the demo model: 'demo' (bundled) or a demo pipeline folder")
    ap.add_argument("--name", default="rex", help="the individual to learn")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--other", default="--max-drift off --reg-lambda 1", help="the settings compared with the defaults")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()

    from cns_cli.demo.individuals import individuals_of
    from cns_cli.demo.world import base_world

    world = base_world(args.base)
    cls = individuals_of(world)[args.name].cls
    settings = {"defaults": [], "other": shlex.split(args.other)}
    seconds: dict[str, list[float]] = {k: [] for k in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for label, extra in settings.items():
                work = Path(tmp) / f"{label}-{i}"
                _, s = learn_alone(args.name, cls, args.base, work, world, 6, extra, captions=False)
                seconds[label].append(round(s, 1))
                print(f"round {i + 1}: {label:8s} {s:6.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    ratio = med["defaults"] / med["other"]
    print(f"median: defaults {med['defaults']:.1f} s, other ({args.other}) {med['other']:.1f} s; ratio {ratio:.2f}")
    if args.json:
        doc = {"command": shlex.join(["python", "benchmarks/learn_time.py", *sys.argv[1:]]), "base": args.base,
               "name": args.name, "other": settings["other"], "seconds": seconds, "median": med,
               "ratio_defaults_to_other": round(ratio, 3)}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
