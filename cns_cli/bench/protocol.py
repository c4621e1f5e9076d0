"""The benchmark loop: for each method, learn the concepts in a fixed order and score after every step.

Returns (and writes as OUT/bench.json) one document with every number:
  {"config", "base": {"zero_shot", "identity_base_class"}, "concepts": [...],
   "methods": {key: {"label", "group", "steps": [{"learned", "learn", "concepts": {name: scores}, "zero_shot"}],
                     "pairs", "summary"}}, "resumed": [keys kept from an earlier process]}
bench.json is rewritten after every method, with that method's contact-sheet images in OUT/images/KEY.safetensors,
so `resume=True` continues an interrupted run: the methods finished there are kept, the others run again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..learn import LearnConfig
from ..reporting import NullReporter, Reporter
from .methods import METHODS, Budget, make_method
from .scoring import RegionMode, Sampling, score_concepts, score_groups, zero_shot
from .trainer import ConceptData

# The order concepts are learned in: classes alternate, and each class's second individual comes later
# (bella after rex, cap after fedora), so interference between look-alikes shows up in the curves.
ORDER = ("rex", "fedora", "milo", "beetle", "globe", "cottage", "bella", "cap", "bloom", "zoom", "luna", "stripy")
MARKER = "cns-bench.json"


@dataclass(frozen=True)
class BenchConfig:
    base: str = "demo"
    concepts: int = 10
    methods: tuple[str, ...] = tuple(METHODS)
    steps: int = 150  # per concept, every method (cns demo's default)
    lr_token: float = LearnConfig.lr_token  # the new token's lr, every method (each learns one token per concept)
    vectors: int = LearnConfig.vectors  # vectors of that token, every method (cns learn --vectors)
    photos: int = 6
    scenes: tuple[str, ...] = ("beach", "grass", "snow", "night")
    seeds: int = 2
    sample_steps: int = 20
    guidance: float = 7.5
    zero_shot_n: int = 48
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise UsageError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
        if not self.methods:
            raise UsageError("--methods is empty; name at least one of " + ", ".join(METHODS))
        if not 1 <= self.concepts <= len(ORDER):
            raise UsageError(f"--concepts must be 1..{len(ORDER)} (the demo world's individuals), got {self.concepts}")
        if self.steps < 1:
            raise UsageError(f"--steps must be at least 1, got {self.steps}")
        if self.zero_shot_n < 1:
            raise UsageError(f"--zero-shot-prompts must be at least 1, got {self.zero_shot_n}")
        if not self.lr_token >= 0:
            raise UsageError(f"--lr-token must be 0 or more, got {self.lr_token}")
        LearnConfig(vectors=self.vectors)  # the --vectors check of cns learn, with its message

    @classmethod
    def quick(cls, **kw) -> BenchConfig:
        """2 concepts, few steps and images: checks the whole pipeline, not the numbers."""
        return cls(**{"concepts": 2, "steps": 8, "photos": 4, "scenes": ("beach", "snow"), "seeds": 1,
                      "sample_steps": 4, "zero_shot_n": 6, **kw})

    def sampling(self, world: int = 1) -> Sampling:
        return Sampling(self.scenes, self.seeds, self.sample_steps, self.guidance, self.zero_shot_n, world)


def run_bench(out: Path, config: BenchConfig = BenchConfig(), reporter: Reporter = NullReporter(),
              new_basis=None, resume: bool = False) -> dict:
    """`new_basis` (d, d): the basis Q the cns methods' new banks start from instead of the seeded one (an input
    for experiments such as benchmarks/row_training_sweep.py; the bench itself never sets it). `resume`: continue
    the run in `out` (same config), keeping the methods it finished."""
    from . import require_bench_extra

    require_bench_extra()
    from ..demo.evaluator import Evaluator
    from ..demo.individuals import individuals_of, render_photos
    from ..demo.outputs import claim_folder
    from ..demo.world import base_world
    from ..model.loading import load_pipeline, resolve_base
    from ..model.runtime import resolve_device
    from ..protected import of_base_named, refuse_overlap
    from .report import sheet_subset, write_reports

    out = Path(out)
    refuse_overlap(out, "--out", of_base_named(config.base))  # a missing model fails before anything is written
    world = base_world(config.base)  # the demo world the model was trained on: its individuals, captions, evaluator
    ev, s = Evaluator.load(), config.sampling(world)
    ev.check_world(world)
    device = resolve_device(config.device)
    earlier = _earlier_run(out, config, device) if resume else None
    if earlier is None:
        claim_folder(out, MARKER, "cns bench")
    concepts = []
    for name in ORDER[: config.concepts]:
        ind = individuals_of(world)[name]
        render_photos(name, out / "photos" / name, n=config.photos, seed=config.seed, captions=True, world=world)
        concepts.append(ConceptData(name, ind.cls, out / "photos" / name))

    base_pipe = load_pipeline(resolve_base(config.base)).to(device)
    doc: dict = {"config": _config_doc(config, device), "concepts": [c.name for c in concepts], "methods": {},
                 "resumed": []}
    if earlier is not None:  # the base was scored by the earlier process: the same model, config and seeds
        doc["base"] = earlier["base"]
    else:
        reporter.phase("scoring the base model")
        doc["base"] = {"zero_shot": zero_shot(base_pipe, ev, s),
                       "identity_base_class": _base_class_identity(base_pipe, ev, concepts, s)}
    budget = Budget(base=config.base, steps=config.steps, seed=config.seed, device=device, lr_token=config.lr_token,
                    vectors=config.vectors, text_dim=base_pipe.text_encoder.config.hidden_size, new_basis=new_basis)
    del base_pipe
    sheet_images: dict[str, dict] = {}
    for key in config.methods:
        info = METHODS[key]
        kept = _finished(out, earlier, key)
        if kept is not None:
            reporter.phase(f"{key}: kept from the earlier run")
            doc["methods"][key], sheet_images[key] = kept
            doc["resumed"].append(key)
            continue
        _discard_bank(out / "banks", key)  # an interrupted method starts over
        method = make_method(key, budget, out / "banks")
        steps, images = [], {}
        for k, c in enumerate(concepts):
            reporter.phase(f"{key}: learning <{c.name}> ({k + 1}/{len(concepts)})")
            learn = method.learn(c)
            pipe = method.pipeline()
            scores, images = score_concepts(pipe, ev, concepts[: k + 1], s)
            steps.append({"learned": c.name, "learn": learn, "concepts": scores, "zero_shot": zero_shot(pipe, ev, s)})
        # Regions as `cns generate --layout auto` draws them (benchmarks/region_variants.py compares the others).
        groups, group_images = score_all_groups(pipe, ev, concepts, s, steps[-1]["concepts"], RegionMode())
        entry = {"label": info.label, "group": info.group, "steps": steps, **groups}
        entry["summary"] = summarise(entry, doc["base"]["zero_shot"], len(concepts))
        doc["methods"][key] = entry
        sheet_images[key] = sheet_subset({"concepts": images, **group_images}, concepts)
        del method, pipe
        _save_images(out / "images" / f"{key}.safetensors", sheet_images[key])  # first: bench.json vouches for it
        _write_json(out / "bench.json", doc)  # after every method: a long run can be looked at, or resumed
    doc["files"] = write_reports(out, doc, sheet_images, concepts)
    _write_json(out / "bench.json", doc)
    return doc


def score_all_groups(pipe, ev, concepts, s: Sampling, final: dict, mode: RegionMode) -> tuple[dict, dict]:
    """Pairs as plain prompts ("pairs") and with `--layout auto` regions ("regional_pairs"), triples with regions
    ("regional_triples"): the scores and the images, per key."""
    single = {name: sc["identity"] for name, sc in final.items()}
    docs, images = {}, {}
    for key, size, regions in (("pairs", 2, None), ("regional_pairs", 2, mode), ("regional_triples", 3, mode)):
        docs[key], images[key] = score_groups(pipe, ev, concepts, s, size, regions, single)
    return docs, images


def _base_class_identity(pipe, ev, concepts, s: Sampling) -> dict:
    """Identity of each concept's plain description drawn by the base model ("a red dog on the beach" for rex: its
    nearest palette colour and class): the floor a learned concept has to rise above."""
    from ..demo.assess import generate
    from ..demo.individuals import individuals_of
    from ..demo.world import SCENE_PHRASES
    from .scoring import concept_prompts

    out = {}
    for c in concepts:
        ind = individuals_of(s.world)[c.name]
        _, seeds, scenes = concept_prompts(c, s)  # the concept's scenes and seeds, its plain description
        texts = [f"{ind.plain} {SCENE_PHRASES[scene]}" for scene in scenes]
        out[c.name] = float(np.mean(ev.identity_similarity(generate(pipe, texts, seeds=seeds, steps=s.steps,
                                                                    guidance=s.guidance), c.name)))
    return out


def summarise(entry: dict, base_zero_shot: dict, n: int) -> dict:
    """The table's numbers. Forgetting of a concept = its identity just after it was learned minus at the end
    (mean over every concept but the last, which has nothing learned after it)."""
    steps = entry["steps"]
    final = steps[-1]["concepts"]
    names = list(final)
    just_after = {st["learned"]: st["concepts"][st["learned"]]["identity"] for st in steps}
    forgetting = [just_after[m] - final[m]["identity"] for m in names[:-1]]
    mean = lambda key: float(np.mean([final[m][key] for m in names]))  # noqa: E731
    learns = [st["learn"] for st in steps]
    return {
        "final_identity": mean("identity"), "final_recognised": mean("recognised"),
        "identity_just_after": float(np.mean(list(just_after.values()))),
        "mean_forgetting": float(np.mean(forgetting)) if forgetting else 0.0,
        "zero_shot_accuracy": steps[-1]["zero_shot"]["accuracy"],
        "zero_shot_change_points": 100 * (steps[-1]["zero_shot"]["accuracy"] - base_zero_shot["accuracy"]),
        "scene_alignment": mean("scene"), "class_alignment": mean("class"),
        "pairs_both_recognised": entry["pairs"].get("shown"),
        "pairs_both_classes": entry["pairs"].get("classes"),
        "regional_pairs_shown": entry.get("regional_pairs", {}).get("shown"),
        "regional_pairs_in_order": entry.get("regional_pairs", {}).get("in_order"),
        "regional_pairs_box_identity": entry.get("regional_pairs", {}).get("box_identity_ratio"),
        "regional_pairs_scene": entry.get("regional_pairs", {}).get("scene"),
        "regional_triples_shown": entry.get("regional_triples", {}).get("shown"),
        "regional_triples_in_order": entry.get("regional_triples", {}).get("in_order"),
        "params_trained_per_concept": float(np.mean([x["params_trained"] for x in learns])),
        "weights_changed_per_concept": float(np.mean([x["weights_changed"] for x in learns])),
        "bytes_per_concept": learns[-1]["bytes_total"] / n,
        "learn_seconds_per_concept": float(np.mean([x["seconds"] for x in learns])),
    }


def _config_doc(config: BenchConfig, device: str) -> dict:
    """The config as bench.json records it (JSON types: tuples become lists), with the device it ran on."""
    return json.loads(json.dumps({**asdict(config), "device": device}))


def _earlier_run(out: Path, config: BenchConfig, device: str) -> dict:
    """The bench.json of the run to resume in `out`; UsageError unless there is one with this config."""
    path = out / "bench.json"
    if not (out / MARKER).is_file() or not path.is_file():
        raise UsageError(f"--resume: {out} holds no bench run to continue; run without --resume to start one")
    try:
        doc = json.loads(path.read_text())
        recorded, _ = doc["config"], doc["base"]  # both are reused
        if not isinstance(recorded, dict) or not isinstance(doc.get("methods", {}), dict):
            raise TypeError
        recorded = {"vectors": 1, **recorded}  # a run from before --vectors learned 1-vector tokens
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"--resume: {path} is not a bench.json this version can read; run without --resume") from None
    wanted = _config_doc(config, device)
    differ = [k for k in sorted(set(wanted) | set(recorded)) if k != "methods" and wanted.get(k) != recorded.get(k)]
    if differ:
        k = differ[0]
        raise UsageError(f"--resume: the run in {out} has {k} {recorded.get(k)!r}, this one {wanted.get(k)!r}; "
                         "give the same settings, or run without --resume to start over")
    return doc


def _finished(out: Path, earlier: dict | None, key: str) -> tuple[dict, dict] | None:
    """(entry, sheet images) of `key` when the earlier run finished it, else None."""
    path = out / "images" / f"{key}.safetensors"
    if earlier is None or key not in earlier.get("methods", {}) or not path.is_file():
        return None
    return earlier["methods"][key], _load_images(path)


def _discard_bank(banks: Path, key: str) -> None:
    import shutil

    shutil.rmtree(banks / f"{key}.cnsbank", ignore_errors=True)


def _save_images(path: Path, images: dict) -> None:
    """{"concepts": {name: uint8 (n, h, w, 3)}, group key: uint8 (n, h, w, 3)} as safetensors, atomically."""
    from safetensors.numpy import save

    from ..bank.atomic import atomic_write

    flat = {f"concepts/{n}": np.ascontiguousarray(a) for n, a in images["concepts"].items()}
    flat.update({k: np.ascontiguousarray(a) for k, a in images.items() if k != "concepts"})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, save(flat))


def _load_images(path: Path) -> dict:
    from safetensors.numpy import load_file

    flat = load_file(str(path))
    out: dict = {"concepts": {}}
    for k, a in flat.items():
        if k.startswith("concepts/"):
            out["concepts"][k.split("/", 1)[1]] = a
        else:
            out[k] = a
    return out


def _write_json(path: Path, doc: dict) -> None:
    from ..bank.atomic import atomic_write

    atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode())
