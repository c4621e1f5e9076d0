"""What `cns bench` measures with the demo evaluator, on a method's model as it stands.

- concept prompts: "a <name> on the beach" for each evaluation scene × seed, sent as `cns generate` sends them:
  with the concept's class word after its token ("a <rex> dog on the beach", `prompts.expand_prompt`), the form
  every method trained on. Identity = mean cosine similarity to the concept's reference renders; recognised =
  share of images whose nearest individual (of all 12 in the world, by reference embedding) is the concept; scene / class = the evaluator reads the prompt's scene and the
  concept's class (prompt alignment).
- zero-shot: captions of held-out scene × class × colour triples (never in the base model's training data),
  scored for scene, class and colour; "accuracy" is the mean of the three.
- groups: "a <a> and a <b> on grass" (pairs) and "a <a> and a <b> and a <c> on grass" (triples), drawn as plain
  prompts or with `--layout auto` regions (one equal column per concept), each image split into those columns
  and each column's nearest individual and class read. "shown": the columns show every named concept, in any
  order (a plain prompt names no side; the demo model binds left/right weakly); "in_order": each concept in its
  own column (what regions promise); "classes": the columns show the named classes in any order (whether the
  objects were drawn at all, whoever they are); identity in each concept's own column, also relative to the
  concept's identity alone in an image.

Image seeds depend on the scene and repetition only, never on a prompt's position in a batch or on how many
concepts exist, so a concept is drawn from the same noise after every step and its curve shows the model, not
the sampler.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..regions import DEFAULT_REGION_TEXT

EVAL_SEED = 9_000


@dataclass(frozen=True)
class Sampling:
    scenes: tuple[str, ...]
    seeds: int  # repetitions per scene
    steps: int  # sampler steps
    guidance: float
    zero_shot_n: int  # held-out captions for the zero-shot score
    world: int = 1  # the demo world of the model under test (demo.world.base_world): its individuals and captions


def concept_prompts(concept, s: Sampling) -> tuple[list[str], list[int], list[str]]:
    """(prompts, seeds, scenes) of one concept's (ConceptData) evaluation images, class word expanded."""
    from ..demo.world import SCENE_PHRASES
    from ..prompts import expand_prompt

    prompts, seeds, scenes = [], [], []
    for i, scene in enumerate(s.scenes):
        for r in range(s.seeds):
            prompts.append(expand_prompt(f"a <{concept.name}> {SCENE_PHRASES[scene]}", {concept.name: concept.cls}))
            seeds.append(EVAL_SEED + 100 * i + r)
            scenes.append(scene)
    return prompts, seeds, scenes


def score_concepts(pipe, ev, concepts: list, s: Sampling) -> tuple[dict, dict]:
    """({name: {"identity", "recognised", "scene", "class"}}, {name: uint8 images}) for every concept in
    `concepts` (ConceptData), generated in one batched pass."""
    from ..demo.assess import generate

    prompts, seeds, scenes = [], [], []
    for c in concepts:
        p, sd, sc = concept_prompts(c, s)
        prompts += p
        seeds += sd
        scenes += sc
    images = generate(pipe, prompts, seeds=seeds, steps=s.steps, guidance=s.guidance)
    per = len(prompts) // max(1, len(concepts))
    scores, by_name = {}, {}
    for k, c in enumerate(concepts):
        imgs, want = images[k * per : (k + 1) * per], scenes[k * per : (k + 1) * per]
        pred = ev.predict(imgs)
        scores[c.name] = {
            "identity": float(np.mean(ev.identity_similarity(imgs, c.name))),
            "recognised": float(np.mean([n == c.name for n in ev.nearest_individual(imgs)])),
            "scene": float(np.mean([p == w for p, w in zip(pred["scene"], want)])),
            "class": float(np.mean([p == c.cls for p in pred["class"]])),
        }
        by_name[c.name] = imgs
    return scores, by_name


def zero_shot(pipe, ev, s: Sampling) -> dict:
    """Held-out base captions: {"scene", "class", "colour", "all", "accuracy" (mean of the three)}."""
    from ..demo.assess import ASSESS_SEED, alignment_specs, generate

    specs, captions = alignment_specs(s.zero_shot_n, held_out=True, world=s.world)
    images = generate(pipe, captions, seed=ASSESS_SEED, steps=s.steps, guidance=s.guidance)
    score = ev.prompt_alignment(images, specs)
    score.pop("per_image")
    score["accuracy"] = float(np.mean([score["scene"], score["class"], score["colour"]]))
    return score


def group_prompts(concepts: list, s: Sampling, size: int = 2) -> list[tuple[str, tuple[str, ...], str, int]]:
    """(prompt, names left to right, scene, seed): consecutive concepts in groups of `size` ("a <rex> and a
    <fedora> on grass"; three: "a <a> and a <b> and a <c> ..."), each group on every evaluation scene × seed
    repetition; class words expanded like `cns generate` does. The first repetition's seeds are the ones earlier
    runs used."""
    from ..demo.world import SCENE_PHRASES
    from ..prompts import expand_prompt

    out = []
    groups = [concepts[i : i + size] for i in range(0, len(concepts) - size + 1, size)]
    for group in groups:
        classes = {c.name: c.cls for c in group}
        for i, scene in enumerate(s.scenes):
            text = " and ".join(f"a <{c.name}>" for c in group) + f" {SCENE_PHRASES[scene]}"
            for r in range(s.seeds):
                seed = EVAL_SEED + 50 + 20 * (size - 2) + i + 1000 * r
                out.append((expand_prompt(text, classes), tuple(c.name for c in group), scene, seed))
    return out


def group_outcome(read: list[str], names: list[str]) -> dict[str, bool]:
    """One group image: its boxes' readings (individual names, or classes) left to right, against the prompt's.
    "shown": every named one is there, in any order (the prompt names no side); "in_order": each in its box."""
    return {"shown": sorted(read) == sorted(names), "in_order": list(read) == list(names)}


def group_plans(prompts: list[str], concepts: list, mode: RegionMode) -> list:
    """`cns generate --layout auto` plans of the group prompts (class words already expanded)."""
    from ..regions import RegionRequest, plan_regions

    classes = {c.name: c.cls for c in concepts}
    request = RegionRequest(auto=True, text_style=mode.text_style, uncond=mode.uncond, strength=mode.strength)
    return [plan_regions(p, request, classes) for p in prompts]


@dataclass(frozen=True)
class RegionMode:
    """How the group prompts are drawn: plain (None), or with the auto layout and these region settings."""

    text_style: str = DEFAULT_REGION_TEXT
    uncond: str = "keep"
    strength: float = 1.0


def score_groups(pipe, ev, concepts: list, s: Sampling, size: int = 2, regions: RegionMode | None = None,
                 single_identity: dict[str, float] | None = None) -> tuple[dict, np.ndarray]:
    """{"n", "shown", "in_order", "classes", "scene", "identity_per_box", "box_identity_ratio", "prompts"} over
    every group prompt of `size` concepts, and the images. Each image is read in `size` equal columns (the auto
    layout): "shown" = the columns show every named concept in any order, "in_order" = each in its own box,
    "classes" = the columns show the named classes in any order, "scene" = the whole image shows the prompt's
    scene, "box_identity_ratio" = mean identity of each concept in its box over the same concepts' mean
    `single_identity` (one concept per image)."""
    from ..demo.assess import generate
    from ..demo.evaluator import to_array
    from ..demo.individuals import individuals_of
    from ..demo.pairs import columns

    groups = group_prompts(concepts, s, size)
    if not groups:
        return {"n": 0}, np.zeros((0, 64, 64, 3), np.uint8)
    prompts, names, scenes, seeds = (list(x) for x in zip(*groups))
    plans = group_plans(prompts, concepts, regions) if regions else None
    images64 = to_array(generate(pipe, prompts, seeds=seeds, steps=s.steps, guidance=s.guidance, regions=plans))
    boxes = [np.stack([columns(im, size)[j] for im in images64]) for j in range(size)]  # [column][image]
    who = list(zip(*[ev.nearest_individual(b) for b in boxes]))
    cls = list(zip(*[ev.predict(b)["class"] for b in boxes]))
    identity = [[float(ev.identity_similarity(boxes[j][i][None], n[j])[0]) for j in range(size)] for i, n in enumerate(names)]
    outcomes = [group_outcome(list(w), list(n)) for w, n in zip(who, names)]
    people = individuals_of(s.world)
    classes = [group_outcome(list(c), [people[x].cls for x in n])["shown"] for c, n in zip(cls, names)]
    doc = {"n": len(groups), "shown": float(np.mean([o["shown"] for o in outcomes])),
           "in_order": float(np.mean([o["in_order"] for o in outcomes])), "classes": float(np.mean(classes)),
           "scene": float(np.mean([p == w for p, w in zip(ev.predict(images64)["scene"], scenes)])),
           "identity_per_box": float(np.mean(identity)), "prompts": prompts}
    if single_identity:
        single = np.mean([single_identity[x] for n in names for x in n])
        doc["box_identity_ratio"] = float(np.mean(identity) / single) if single > 0 else None
    if regions:
        doc["regions"] = {"layout": "auto", "text_style": regions.text_style, "uncond": regions.uncond,
                          "strength": regions.strength}
    return doc, images64
