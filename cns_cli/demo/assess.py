"""How well a demo-world base model follows its prompts: the evaluator's scene / class / colour accuracy on
images the model generates for captions of seen (training) and held-out (zero-shot) combinations.

    python -m cns_cli.demo.assess PIPELINE [--n 120] [--steps 25] [--out DIR] [--evaluator FILE]

writes DIR/assessment.json (every caption, the accuracies) and DIR/samples.png (the first 16 seen and 16
held-out images, 2x). `base_alignment` is also what `cns bench` uses for the base model's zero-shot score.
Captions come from the world the model was trained on (`world.model_world`), and the evaluator must measure
that world. For a world-2 model the report also has "descriptions": how often the model, prompted with an
individual's full description ("a white cat with a black ear and a black tail tip on grass"), draws an image
whose nearest individual is that one.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ASSESS_SEED = 7_000  # spec/caption stream, far from the training seeds (0..3)


def generate(pipe, prompts: list[str], seed: int = 0, steps: int = 25, guidance: float = 7.5, batch: int = 32,
             seeds: list[int] | None = None, regions: list | None = None) -> np.ndarray:
    """uint8 [N, H, W, 3]; image i is drawn from torch seed `seeds[i]` (default `seed + i`), independent of
    batching. `regions`: one `regions.RegionPlan` per prompt, drawn with the regional sampler (consecutive plans
    that can share a call share a batch)."""
    import torch

    seeds = list(seeds) if seeds is not None else [seed + i for i in range(len(prompts))]
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    out = []
    for i, j in _batches(len(prompts), batch, regions):
        kw = dict(num_inference_steps=steps, guidance_scale=guidance, output_type="np",
                  generator=[torch.Generator().manual_seed(s) for s in seeds[i:j]])
        if regions is None:
            res = pipe(prompts[i:j], **kw)
        else:
            from ..model.regional import generate_plans

            res = generate_plans(pipe, regions[i:j], **kw)
        out.append(np.clip(np.rint(res.images * 255), 0, 255).astype(np.uint8))
    return np.concatenate(out) if out else np.zeros((0, 64, 64, 3), np.uint8)


def _batches(n: int, batch: int, regions: list | None) -> list[tuple[int, int]]:
    """[i, j) ranges of at most `batch` prompts; with regions, a batch holds only plans that can share a call."""
    out, i = [], 0
    while i < n:
        j = min(n, i + batch)
        if regions is not None:
            from ..model.regional import plan_key

            j = next((k for k in range(i + 1, j) if plan_key(regions[k]) != plan_key(regions[i])), j)
        out.append((i, j))
        i = j
    return out


def alignment_specs(n: int, held_out: bool, seed: int = ASSESS_SEED, world: int = 1) -> tuple[list, list[str]]:
    """`n` specs of seen (held_out=False) or held-out combinations of `world` and their captions (the training
    grammar)."""
    from .world import caption, sample_specs

    rng = np.random.default_rng((seed, int(held_out)))
    specs = sample_specs(n, rng, held_out=held_out, world=world)
    return specs, [caption(s, rng) for s in specs]


def base_alignment(pipe, n: int = 120, steps: int = 25, seed: int = ASSESS_SEED, evaluator=None,
                   world: int = 1) -> dict[str, Any]:
    """{"seen"|"held_out": {"n", "scene", "class", "colour", "all", "captions"}, "images": {...uint8 arrays}} for
    a model of `world`."""
    from .evaluator import Evaluator

    ev = evaluator or Evaluator.load()
    ev.check_world(world)
    report: dict[str, Any] = {"images": {}}
    for key, held in (("seen", False), ("held_out", True)):
        specs, captions = alignment_specs(n, held, seed, world)
        images = generate(pipe, captions, seed=seed, steps=steps)
        score = ev.prompt_alignment(images, specs)
        score.pop("per_image")
        report[key] = {**score, "captions": captions}
        report["images"][key] = images
    return report


def description_recognition(pipe, evaluator, scenes: tuple[str, ...] = ("beach", "grass", "snow", "night"),
                            seeds: int = 2, steps: int = 25, seed: int = ASSESS_SEED) -> dict[str, Any]:
    """The base model drawing each individual of the evaluator's world from its full description on each scene
    (`seeds` images per scene): per individual the share of images whose nearest individual (of all twelve) is
    that one, and the mean over individuals ("mean"). World 2 only: world 1's descriptions are not captions."""
    from .individuals import individuals_of
    from .world import SCENE_PHRASES

    if evaluator.world < 2:
        raise ValueError("world 1's individuals are not compositions of caption words; descriptions need world 2")
    people = individuals_of(evaluator.world)
    prompts = [f"{ind.description} {SCENE_PHRASES[s]}" for ind in people.values() for s in scenes for _ in range(seeds)]
    images = generate(pipe, prompts, seed=seed, steps=steps)
    nearest = evaluator.nearest_individual(images)
    per = len(scenes) * seeds
    shares = {name: float(np.mean([n == name for n in nearest[k * per : (k + 1) * per]]))
              for k, name in enumerate(people)}
    return {"per_individual": shares, "mean": float(np.mean(list(shares.values()))), "n": len(prompts),
            "scenes": list(scenes), "seeds": seeds}


def grid(images: np.ndarray, cols: int = 8, scale: int = 2):
    from PIL import Image

    n = len(images)
    rows = -(-n // cols)
    h, w = images.shape[1:3]
    sheet = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, cols)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    return Image.fromarray(sheet).resize((cols * w * scale, rows * h * scale), Image.Resampling.NEAREST)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pipeline", type=Path)
    ap.add_argument("--n", type=int, default=120, help="images per split (seen, held-out)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--out", type=Path, default=None, help="default: the pipeline folder")
    ap.add_argument("--evaluator", type=Path, default=None,
                    help="evaluator weights of the model's world (default: the packaged evaluator)")
    args = ap.parse_args(argv)
    from ..model.loading import load_pipeline, quiet_libraries, resolve_base
    from .evaluator import Evaluator
    from .world import model_world

    quiet_libraries()
    t0 = time.time()
    world = model_world(args.pipeline)
    ev = Evaluator.load(args.evaluator)
    ev.check_world(world)
    pipe = load_pipeline(resolve_base(str(args.pipeline)))
    pipe.set_progress_bar_config(disable=True)
    rep = base_alignment(pipe, n=args.n, steps=args.steps, evaluator=ev, world=world)
    if world >= 2:
        rep["descriptions"] = description_recognition(pipe, ev, steps=args.steps)
    out = args.out or args.pipeline
    out.mkdir(parents=True, exist_ok=True)
    images = rep.pop("images")
    grid(np.concatenate([images["seen"][:16], images["held_out"][:16]])).save(out / "samples.png")
    rep["settings"] = {"n": args.n, "steps": args.steps, "guidance": 7.5, "seed": ASSESS_SEED,
                       "scheduler": type(pipe.scheduler).__name__, "world": world}
    rep["seconds"] = round(time.time() - t0, 1)
    (out / "assessment.json").write_text(json.dumps(rep, indent=2) + "\n")
    for key in ("seen", "held_out"):
        r = rep[key]
        print(f"{key:9s} n={r['n']}  scene {r['scene']:.3f}  class {r['class']:.3f}  colour {r['colour']:.3f}  all {r['all']:.3f}")
    if "descriptions" in rep:
        print(f"descriptions: nearest individual right in {rep['descriptions']['mean']:.3f} of images (mean of 12)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
