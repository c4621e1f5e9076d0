"""The benchmark loop: for each method, learn the concepts in a fixed order and score after every step.

Returns (and writes as OUT/bench.json) one document with every number:
  {"config", "base": {"zero_shot", "identity_base_class"}, "concepts": [...],
   "methods": {key: {"label", "group", "steps": [{"learned", "learn", "concepts": {name: scores}, "zero_shot"}],
                     "pairs", "summary"}}, "resumed": [keys kept from an earlier process]}
Each method's entry and contact-sheet images are written on their own when it ends (OUT/methods/KEY.json,
OUT/images/KEY.safetensors: results.py), and bench.json is rebuilt from them after every method, so
`resume=True` continues an interrupted run: the methods finished there are kept, the others run again.

Under a launcher (torchrun, accelerate launch: distributed.py) the methods are dealt round-robin to the ranks;
rank 0 alone prepares the run (folder, photos, the base's scores) and writes bench.json and the reports. A
method's numbers do not depend on where it runs: each draws from generators of its own (see `seed_globals`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..learn import LearnConfig
from ..reporting import NullReporter, Reporter
from . import results
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
    the run in `out` (same config), keeping the methods it finished.

    Under a launcher (distributed.py) the main process alone claims `out`, renders the photos and scores the base;
    the methods left to run are dealt round-robin to the ranks, each writes its methods' files (results.py), and
    the main process assembles bench.json and the reports. A failure on any rank reaches every rank."""
    from .. import distributed as dist

    out = Path(out)
    setup = dist.on_main(_set_up, out, config, reporter, resume)
    todo = [k for k in config.methods if k not in setup.doc["resumed"]]
    deal = [[todo[i] for i in dist.shard(len(todo), r, dist.size())] for r in range(dist.size())]
    if dist.launched():  # only the main process reports (output.py): it says who runs what, then its own phases
        reporter.phase(f"{dist.size()} processes share {len(todo)} method(s): " +
                       "; ".join(f"rank {r}: {', '.join(keys) or 'none'}" for r, keys in enumerate(deal)))
    dist.together(_run_methods, out, config, setup, deal[dist.rank()], reporter, new_basis)
    return dist.on_main(_finish, out, config, setup)


@dataclass(frozen=True)
class _Setup:
    """What the main process prepared and every rank needs (picklable: it is broadcast under a launcher)."""

    doc: dict  # bench.json without methods: config, concepts, base scores, resumed (kept from an earlier run)
    concepts: list  # ConceptData, in learning order; their photos are in out/photos
    device: str  # the kind ("cuda"); under a launcher each rank's "cuda" is its own GPU (PartialState sets it)
    world: int  # the demo world of the base model
    text_dim: int  # the base's text width


def _set_up(out: Path, config: BenchConfig, reporter: Reporter, resume: bool) -> _Setup:
    """Check the input, claim `out` (or read the run to resume), render the photos and score the base model;
    bench.json is written at once, so a run stopped in its first method can be resumed."""
    from . import require_bench_extra

    require_bench_extra()
    from ..demo.evaluator import Evaluator
    from ..demo.individuals import individuals_of, render_photos
    from ..demo.outputs import claim_folder
    from ..demo.world import base_world
    from ..model.loading import load_pipeline, resolve_base
    from ..model.runtime import resolve_device
    from ..protected import of_base_named, refuse_overlap

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
        doc["resumed"] = list(results.finished(out, config.methods, doc["config"], earlier))
        for key in doc["resumed"]:
            reporter.phase(f"{key}: kept from the earlier run")
    else:
        reporter.phase("scoring the base model")
        seed_globals(config.seed, "base")
        doc["base"] = {"zero_shot": zero_shot(base_pipe, ev, s),
                       "identity_base_class": _base_class_identity(base_pipe, ev, concepts, s)}
    results.write_json(out / "bench.json", results.assemble(out, doc, config.methods))
    return _Setup(doc, concepts, device, world, base_pipe.text_encoder.config.hidden_size)


def _run_methods(out: Path, config: BenchConfig, setup: _Setup, keys: list[str], reporter: Reporter,
                 new_basis) -> None:
    """Run `keys` one after another, each method's files written when it ends; in the main process bench.json is
    rebuilt after each (with every method finished so far, by any rank), so a long run can be looked at."""
    from .. import distributed as dist
    from ..demo.evaluator import Evaluator

    ev, s = Evaluator.load(), config.sampling(setup.world)
    budget = Budget(base=config.base, steps=config.steps, seed=config.seed, device=setup.device,
                    lr_token=config.lr_token, vectors=config.vectors, text_dim=setup.text_dim, new_basis=new_basis)
    main = dist.is_main()
    for key in keys:
        _discard_bank(out / "banks", key)  # an interrupted method starts over
        seed_globals(config.seed, key)
        with dist.alone():  # the method's own `cns learn` and training loop are this rank's: no exchange with the others
            entry, images = _run_method(key, budget, out, ev, s, setup, reporter if main else NullReporter())
        results.save_method(out, key, setup.doc["config"], entry, images)
        if main:
            results.write_json(out / "bench.json", results.assemble(out, setup.doc, config.methods))
    if dist.launched() and keys:
        reporter.phase("waiting for the other processes' methods")


def _run_method(key: str, budget: Budget, out: Path, ev, s: Sampling, setup: _Setup,
                reporter: Reporter) -> tuple[dict, dict]:
    """One method through every concept: (its bench.json entry, its contact-sheet images)."""
    from .report import sheet_subset

    info, concepts = METHODS[key], setup.concepts
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
    entry["summary"] = summarise(entry, setup.doc["base"]["zero_shot"], len(concepts))
    return entry, sheet_subset({"concepts": images, **group_images}, concepts)


def _finish(out: Path, config: BenchConfig, setup: _Setup) -> dict:
    """bench.json from every method's files, in the config's order, and the table, plot and contact sheet."""
    from ..errors import CnsError
    from .report import write_reports

    doc = results.assemble(out, setup.doc, config.methods)
    missing = [k for k in config.methods if k not in doc["methods"]]
    if missing:  # every rank reported success, so its files must be there: a shared --out that is not shared
        raise CnsError(f"the result of method {missing[0]!r} is not in {out / 'methods'}; with several machines, "
                       "--out must be one folder all of them write to")
    images = {key: results.load_images(results.images_path(out, key)) for key in config.methods}
    doc["files"] = write_reports(out, doc, images, setup.concepts)
    results.write_json(out / "bench.json", doc)
    return doc


# A launched bench's default wait for a silent rank (distributed.start's default): the exchange after the methods
# waits for the rank with the slowest ones, which can take hours, so `cns generate`'s 30 min would end a healthy run.
WAIT_S = 24 * 3600.0


def seed_globals(seed: int, key: str) -> None:
    """Seed torch's, numpy's and Python's global generators from the run's seed and `key` (a method, or "base"),
    before that part of the run. Every draw the bench's numbers depend on comes from a generator of its own
    (training, sampling, LoRA starts, random neurons); the global ones only fill weights that are overwritten
    (a model's construction, a new token's row). Seeding them anyway keeps a method's numbers the same on any
    rank, first or after another method, should it ever draw from them. crc32, not hash(): the same in every
    process (hash() of a str changes with PYTHONHASHSEED)."""
    import random
    import zlib

    import torch

    value = (seed * 1_000_003 + zlib.crc32(key.encode())) % 2**32  # numpy takes 0 .. 2**32 - 1
    torch.manual_seed(value)
    np.random.seed(value)
    random.seed(value)


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
    differ = results.differing(wanted, recorded)
    if differ:
        k = differ[0]
        raise UsageError(f"--resume: the run in {out} has {k} {recorded.get(k)!r}, this one {wanted.get(k)!r}; "
                         "give the same settings, or run without --resume to start over")
    return doc


def _discard_bank(banks: Path, key: str) -> None:
    import shutil

    shutil.rmtree(banks / f"{key}.cnsbank", ignore_errors=True)
