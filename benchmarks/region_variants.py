"""How `cns generate --layout auto`'s defaults were chosen: the region text and whether the unconditional half
of classifier-free guidance is touched, compared on the bench's group prompts with the bench's seeds.

cns learns the first K concepts of the bench's order on the demo model (the bench's protocol), then draws every
pair and triple prompt plainly and with each variant of the regional sampler, and scores them as `cns bench`
does (the evaluator reads one column per concept):

  text short / scene / prompt   the box reads "a <milo> cat" / "a <milo> cat on grass" (the prompt's closing
                                words) / "a <milo> cat and a house on grass" (the prompt, only this concept's token)
  uncond keep / class           the unconditional half is untouched / reads the box's plain class ("a cat")
  strength                      --region-strength (default 1)

    python benchmarks/region_variants.py [--concepts 6] [--steps 150] [--out region-variants] [--base demo]
                                         [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = ["short/keep/1", "scene/keep/1", "prompt/keep/1", "short/class/1", "scene/class/1",
            "scene/keep/0.4", "scene/keep/0.6", "scene/keep/0.8"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concepts", type=int, default=6)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--out", type=Path, default=Path("region-variants"))
    ap.add_argument("--base", default="demo")
    ap.add_argument("--quick", action="store_true", help="the bench's --quick settings (checks the script)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="TEXT/UNCOND/STRENGTH, comma-separated")
    args = ap.parse_args()
    from cns_cli.bench.methods import METHODS, Budget, make_method
    from cns_cli.bench.protocol import ORDER, BenchConfig
    from cns_cli.bench.scoring import RegionMode, score_concepts, score_groups
    from cns_cli.bench.trainer import ConceptData
    from cns_cli.demo.evaluator import Evaluator
    from cns_cli.demo.individuals import individuals_of, render_photos
    from cns_cli.demo.outputs import claim_folder
    from cns_cli.demo.world import base_world
    from cns_cli.model.runtime import resolve_device

    config = BenchConfig.quick(base=args.base) if args.quick else BenchConfig(base=args.base, concepts=args.concepts,
                                                                                steps=args.steps)
    claim_folder(args.out, "region-variants.json", "region_variants.py")
    device = resolve_device(config.device)
    world = base_world(config.base)  # the model's demo world: its individuals and captions
    concepts = []
    for name in ORDER[: config.concepts]:
        render_photos(name, args.out / "photos" / name, n=config.photos, seed=config.seed, captions=True, world=world)
        concepts.append(ConceptData(name, individuals_of(world)[name].cls, args.out / "photos" / name))
    from cns_cli.model.loading import load_pipeline, resolve_base

    text_dim = load_pipeline(resolve_base(config.base)).text_encoder.config.hidden_size
    method = make_method("cns", Budget(config.base, config.steps, config.seed, text_dim, config.lr_token, device),
                         args.out / "banks")
    for c in concepts:
        print(f"learning <{c.name}>", file=sys.stderr, flush=True)
        method.learn(c)
    pipe, ev, s = method.pipeline(), Evaluator.load(), config.sampling(world)
    ev.check_world(world)
    scores, _ = score_concepts(pipe, ev, concepts, s)
    single = {n: sc["identity"] for n, sc in scores.items()}
    rows, sheet = [], []
    for variant in ["off", *args.variants.split(",")]:
        mode = None if variant == "off" else RegionMode(*variant.split("/")[:2], float(variant.split("/")[2]))
        for size in (2, 3):
            t0 = time.perf_counter()
            doc, images = score_groups(pipe, ev, concepts, s, size, mode, single)
            if size == 2:  # every pair on the first scene, then the first pair on every scene
                per_pair = len(s.scenes) * s.seeds
                sheet.append((variant if mode else "regions off",
                              [*images[::per_pair][:4], *images[: per_pair : s.seeds][1:]]))
            if doc["n"]:
                doc.pop("prompts")
                rows.append({**doc, "variant": variant, "size": size,
                             "seconds": round(time.perf_counter() - t0, 1)})
                print(_line(rows[-1]), flush=True)
    result = {"method": METHODS["cns"].label, "concepts": [c.name for c in concepts], "single_identity": single,
              "config": {"steps": config.steps, "sample_steps": s.steps, "scenes": list(s.scenes)}, "rows": rows}
    (args.out / "region-variants.json").write_text(json.dumps(result, indent=2) + "\n")
    from cns_cli.demo.outputs import labelled_sheet

    labelled_sheet(args.out / "contact-sheet.png", sheet, tile=96, label_w=110,
                   title="each pair on the beach | the first pair on grass, snow, night (same seeds in every row)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def _line(r: dict) -> str:
    ratio = r.get("box_identity_ratio")
    return (f"{r['variant']:14s} {r['size']} concepts  n {r['n']:2d}  shown {r['shown']:.0%}  in order {r['in_order']:.0%}"
            f"  classes {r['classes']:.0%}  scene {r['scene']:.0%}  box identity {r['identity_per_box']:.3f}"
            f" ({'-' if ratio is None else f'{ratio:.0%}'} of alone)")


if __name__ == "__main__":
    main()
