"""What `cns bench` measures with the demo evaluator, on a method's model as it stands.

- concept prompts: "a <name> on the beach" for each evaluation scene × seed, sent as `cns generate` sends them:
  with the concept's class word after its token ("a <rex> dog on the beach", `prompts.expand_prompt`), the form
  every method trained on. Identity = mean cosine similarity to the concept's reference renders; recognised =
  share of images whose nearest individual (of all 12 in the world, by reference embedding) is the concept; scene / class = the evaluator reads the prompt's scene and the
  concept's class (prompt alignment).
- zero-shot: captions of held-out scene × class × colour triples (never in the base model's training data),
  scored for scene, class and colour; "accuracy" is the mean of the three.
- pairs: "a <a> and a <b> on grass", each image split into halves (the layout the base model learned for two
  objects) and each half's nearest individual and class read. "both_recognised": the two halves are the two
  concepts, in either order (the prompt asks for both, not for a side; the demo model binds left/right weakly);
  "both_in_order": the first concept at the left; "both_classes": the halves show the two classes, either
  order (whether two objects were drawn at all, whoever they are).

Image seeds depend on the scene and repetition only, never on a prompt's position in a batch or on how many
concepts exist, so a concept is drawn from the same noise after every step and its curve shows the model, not
the sampler.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EVAL_SEED = 9_000


@dataclass(frozen=True)
class Sampling:
    scenes: tuple[str, ...]
    seeds: int  # repetitions per scene
    steps: int  # sampler steps
    guidance: float
    zero_shot_n: int  # held-out captions for the zero-shot score


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


def nearest_individual(ev, images) -> list[str]:
    from ..demo.individuals import INDIVIDUALS

    names = list(INDIVIDUALS)
    refs = np.stack([ev.reference_embedding(n) for n in names])  # [12, 64]
    return [names[j] for j in (ev.embed(images) @ refs.T).argmax(1)]


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
            "recognised": float(np.mean([n == c.name for n in nearest_individual(ev, imgs)])),
            "scene": float(np.mean([p == w for p, w in zip(pred["scene"], want)])),
            "class": float(np.mean([p == c.cls for p in pred["class"]])),
        }
        by_name[c.name] = imgs
    return scores, by_name


def zero_shot(pipe, ev, s: Sampling) -> dict:
    """Held-out base captions: {"scene", "class", "colour", "all", "accuracy" (mean of the three)}."""
    from ..demo.assess import ASSESS_SEED, alignment_specs, generate

    specs, captions = alignment_specs(s.zero_shot_n, held_out=True)
    images = generate(pipe, captions, seed=ASSESS_SEED, steps=s.steps, guidance=s.guidance)
    score = ev.prompt_alignment(images, specs)
    score.pop("per_image")
    score["accuracy"] = float(np.mean([score["scene"], score["class"], score["colour"]]))
    return score


def pair_prompts(concepts: list, s: Sampling) -> list[tuple[str, str, str, int]]:
    """(prompt, left name, right name, seed): consecutive concepts paired, each pair on the evaluation
    scenes (one seed each); class words expanded like `cns generate` does."""
    from ..demo.world import SCENE_PHRASES
    from ..prompts import expand_prompt

    out = []
    for a, b in zip(concepts[0::2], concepts[1::2]):
        for i, scene in enumerate(s.scenes):
            text = expand_prompt(f"a <{a.name}> and a <{b.name}> {SCENE_PHRASES[scene]}", {a.name: a.cls, b.name: b.cls})
            out.append((text, a.name, b.name, EVAL_SEED + 50 + i))
    return out


def pair_outcome(left: str, right: str, a: str, b: str) -> dict[str, bool]:
    """One pair image: the halves' readings (individual names, or classes) against the prompt's (a, b)."""
    return {"both": {left, right} == {a, b}, "in_order": (left, right) == (a, b)}


def score_pairs(pipe, ev, concepts: list, s: Sampling) -> tuple[dict, np.ndarray]:
    """{"n", "identity_left", "identity_right", "both_recognised", "both_in_order", "both_classes", "prompts"}
    over every pair prompt, and the images."""
    from ..demo.assess import generate
    from ..demo.evaluator import to_array
    from ..demo.individuals import INDIVIDUALS
    from ..demo.run import halves

    pairs = pair_prompts(concepts, s)
    if not pairs:
        return {"n": 0}, np.zeros((0, 64, 64, 3), np.uint8)
    images = generate(pipe, [p for p, *_ in pairs], seeds=[sd for *_, sd in pairs], steps=s.steps, guidance=s.guidance)
    images64 = to_array(images)  # 64 px, the evaluator's size (the tests' tiny model draws 32 px)
    split = [halves(im) for im in images64]
    lefts, rights = np.stack([h[0] for h in split]), np.stack([h[1] for h in split])
    id_l = [float(ev.identity_similarity(im[None], a)[0]) for im, (_, a, _, _) in zip(lefts, pairs)]
    id_r = [float(ev.identity_similarity(im[None], b)[0]) for im, (_, _, b, _) in zip(rights, pairs)]
    who = [pair_outcome(nl, nr, a, b) for nl, nr, (_, a, b, _) in
           zip(nearest_individual(ev, lefts), nearest_individual(ev, rights), pairs)]
    cls = [pair_outcome(cl, cr, INDIVIDUALS[a].cls, INDIVIDUALS[b].cls) for cl, cr, (_, a, b, _) in
           zip(ev.predict(lefts)["class"], ev.predict(rights)["class"], pairs)]
    share = lambda xs, key: float(np.mean([x[key] for x in xs]))  # noqa: E731
    return {"n": len(pairs), "identity_left": float(np.mean(id_l)), "identity_right": float(np.mean(id_r)),
            "both_recognised": share(who, "both"), "both_in_order": share(who, "in_order"),
            "both_classes": share(cls, "both"), "prompts": [p for p, *_ in pairs]}, images64
