"""`cns demo`: the offline quickstart on the demo world.

Renders "photos" of two personal concepts (a dog and a hat nobody has seen), learns both into a fresh bank
on the demo base, generates each on several scenes and both together, forgets one (and checks the other
comes back exactly as it was before the second was learned), then writes a contact sheet and the evaluator's scores: identity similarity to each
concept's reference renders (learned vs the base model drawing the plain class) and prompt alignment.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..regions import RegionRequest
from ..reporting import NullReporter, Reporter, SamplingProgress
from ..sheet import labelled_sheet
from .outputs import claim_folder

# A cat and a house: two classes the demo model draws side by side, and two individuals that differ from the
# base's plain class ("an orange cat", "a pink house") only by their marks (milo's stripes, cottage's green
# door), so the contact sheet shows what a learned concept keeps and what it misses. How each individual fares
# when learned: docs/demo-world.md (benchmarks/learn_each.py).
PAIR = ("milo", "cottage")
SHOWN_SCENES = ("beach", "grass", "snow", "night")
MARKER = "cns-demo.json"  # written first into the demo's folder: the folder is the demo's to replace


@dataclass(frozen=True)
class DemoConfig:
    base: str = "demo"
    steps: int = 150  # per concept; the demo world is small and the budget is ≤ 3 minutes on 2 cores
    photos: int = 6
    sample_steps: int = 25
    seed: int = 0
    device: str = "auto"


def _prompts(name: str) -> list[tuple[str, str]]:
    """(prompt, scene) per shown scene, in the words of the world's captions: "a <milo> on the beach"."""
    from .world import SCENE_PHRASES

    return [(f"a <{name}> {SCENE_PHRASES[s]}", s) for s in SHOWN_SCENES]


def _together_prompts() -> list[tuple[str, str]]:
    """Both concepts in one image, the first at the left (the order the base model learned for "a red dog and
    a blue hat on grass")."""
    from .world import SCENE_PHRASES

    return [(f"a <{PAIR[0]}> and a <{PAIR[1]}> {SCENE_PHRASES[s]}", s) for s in SHOWN_SCENES]


def run_demo(out: Path, config: DemoConfig = DemoConfig(), reporter: Reporter = NullReporter(),
             sampling: SamplingProgress | None = None) -> dict:
    """Run the demo into `out`; `reporter` hears of every phase and training step, `sampling` of every image drawn
    (reporting.py; the CLI passes its stderr bar or lines)."""
    from ..bank import Bank
    from ..bank.history import forget
    from ..generate import GenerateConfig, build_pipeline, generate
    from ..learn import LearnConfig, learn
    from .assess import generate as generate_images
    from .evaluator import Evaluator
    from .individuals import individuals_of, render_photos
    from .world import SCENE_PHRASES, base_world
    from ..protected import of_base_named, refuse_overlap

    out = Path(out)
    bank_path = out / "demo.cnsbank"
    # The settings first: a bad --steps is one line before any photo is rendered or the folder is claimed.
    learn_cfg = LearnConfig(steps=config.steps, seed=config.seed, device=config.device)
    gen_cfg = GenerateConfig(seed=config.seed, steps=config.sample_steps, device=config.device)
    world = base_world(config.base)  # the demo world the base model was trained on: its photos and individuals
    ev = Evaluator.load()
    ev.check_world(world)
    people = individuals_of(world)
    refuse_overlap(out, "--out", of_base_named(config.base))  # claim_folder may empty --out
    claim_folder(out, MARKER, "cns demo")
    photos = {}
    for name in PAIR:
        reporter.phase(f"rendering {config.photos} photos of {name} ({people[name].description or people[name].cls})")
        photos[name] = render_photos(name, out / "photos" / name, n=config.photos, seed=config.seed, captions=True,
                                     world=world)
    prompts = {name: _prompts(name) for name in PAIR}
    together = _together_prompts()
    alone = None
    for name in PAIR:
        learn(bank_path, name, out / "photos" / name, class_word=people[name].cls, base=config.base,
              config=learn_cfg, reporter=reporter)
        if alone is None:  # the first concept on its own: what forgetting the second must give back exactly
            reporter.phase(f"generating <{name}> alone (what forgetting {PAIR[1]} must give back exactly)")
            alone = generate(bank_path, [p for p, _ in prompts[PAIR[0]]], out / "images-first-alone", gen_cfg,
                             progress=sampling)
    reporter.phase("generating each concept, then both together")
    texts = [p for name in PAIR for p, _ in prompts[name]] + [p for p, _ in together]
    records = generate(bank_path, texts, out / "images", gen_cfg, progress=sampling)  # one pipeline load for all
    per = len(SHOWN_SCENES)
    learned = {name: records[i * per : (i + 1) * per] for i, name in enumerate(PAIR)}
    both = records[len(PAIR) * per :]
    # The same prompts and seeds with `--layout auto`: each concept in its own half.
    reporter.phase("generating both together with --layout auto")
    both_regions = generate(bank_path, [p for p, _ in together], out / "images",
                            replace(gen_cfg, regions=RegionRequest(auto=True)), progress=sampling)

    # The base model drawing the plain class in the same scenes: what identity similarity is compared to.
    reporter.phase("generating the base model's plain classes (what identity is compared to)")
    bank = Bank.open(bank_path)
    base_pipe = build_pipeline(bank, bank.revision(0))
    base_images = {}
    for name in PAIR:
        ind = people[name]
        texts = [f"{ind.plain} {SCENE_PHRASES[s]}" for s in SHOWN_SCENES]
        base_images[name] = list(generate_images(base_pipe, texts, seed=gen_cfg.seed, steps=gen_cfg.steps,
                                                 guidance=gen_cfg.guidance))

    reporter.phase(f"forgetting {PAIR[1]}")
    forget(Bank.open(bank_path), PAIR[1])
    after = generate(bank_path, [p for p, _ in prompts[PAIR[0]]], out / "images-after-forget", gen_cfg,
                     progress=sampling)
    kept_identical = all(np.array_equal(_pixels(a["path"]), _pixels(b["path"])) for a, b in zip(alone, after))

    reporter.phase("scoring the images with the demo evaluator")
    scores = {}
    for name in PAIR:
        imgs = [_pixels(r["path"]) for r in learned[name]]
        ind = people[name]
        pred = ev.predict(imgs)
        scores[name] = {
            "identity_learned": float(np.mean(ev.identity_similarity(imgs, name))),
            "identity_base_class": float(np.mean(ev.identity_similarity(base_images[name], name))),
            "base_class_prompt": ind.plain,
            "scene_accuracy": float(np.mean([p == s for p, (_, s) in zip(pred["scene"], prompts[name])])),
            "class_accuracy": float(np.mean([p == ind.cls for p in pred["class"]])),
        }
    sheet = _contact_sheet(out / "contact-sheet.png", photos, base_images, learned, both, both_regions, after)
    return {"out": str(out), "bank": str(bank_path), "contact_sheet": str(sheet), "concepts": list(PAIR),
            "scores": scores, "together": {"prompts": [p for p, _ in together], **_halves_scores(ev, both)},
            "together_regions": {"layout": "auto", **_halves_scores(ev, both_regions)},
            "forget_kept_other_identical": kept_identical}


def _halves_scores(ev, records: list[dict]) -> dict:
    """Each concept's identity in its own half (left: the first), and the share of images whose halves are read
    as the two concepts in that order."""
    from .pairs import columns

    split = [columns(_pixels(r["path"]), 2) for r in records]  # [scene][left, right]
    names = [ev.nearest_individual([h[i] for h in split]) for i in range(len(PAIR))]
    return {"identity": {name: float(np.mean(ev.identity_similarity([h[i] for h in split], name)))
                         for i, name in enumerate(PAIR)},
            "in_order": float(np.mean([list(who) == list(PAIR) for who in zip(*names)]))}


def _pixels(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def _contact_sheet(path: Path, photos, base_images, learned, both, both_regions, after) -> Path:
    """Rows: training photos, base model (plain class), learned concept — per concept; then both together
    (plain prompt, then with `--layout auto`) and the first concept after forgetting the second. 64 px tiles
    upscaled x2 for viewing."""
    rows: list[tuple[str, list[np.ndarray]]] = []
    for name in PAIR:
        rows.append((f"{name}: photos", [_pixels(p) for p in photos[name]]))
        rows.append((f"{name}: base", base_images[name]))
        rows.append((f"<{name}>", [_pixels(r["path"]) for r in learned[name]]))
    rows.append(("both", [_pixels(r["path"]) for r in both]))
    rows.append(("both, --layout auto", [_pixels(r["path"]) for r in both_regions]))
    rows.append((f"<{PAIR[0]}> after forget", [_pixels(r["path"]) for r in after]))
    return labelled_sheet(path, rows, tile=128, label_w=150)
