"""The method study of issue 33 (../shared/docs/METHOD-V2.md §4): which `cns learn` defaults, chosen on the demo
world's tuning individuals only, then reported once on the held-out ones.

A run = one configuration x one training seed x one split: the split's six individuals learned one after the other
(continual, as `cns bench` does: 6 captioned photos each, the bench's 150 steps), each scored just after it is
learned and all of them at the end (16 images each: 4 scenes x 4 seeds), plus zero-shot accuracy on held-out
captions and neighbour prompts (each individual's plain description, "a blue hat on the beach": its class and
colour without its token) against the base. cns configurations run `cns learn` (cns_cli.learn) into a bank with
LearnConfig overrides; `ti` and `kv-finetune` are the bench's baselines (same photos, seeds, steps, token lr).

Every run is appended to the results file as it finishes (`--json`, default
benchmarks/results/method-study.json), discarded ones included; a run already there is skipped, so an
interrupted study continues, and several processes (one per core, `OMP_NUM_THREADS=1`) may share one file. The protocol and the decision rule are written into the file by the first call and
never changed afterwards (a call that would change them is refused). `--decide` applies the rule to the tuning
runs; `--report` prints every configuration's means and the paired differences against ti and kv-finetune.

    python benchmarks/method_study.py --split tuning --config eps1e-2=max_drift=0.01 --config ti=ti --seeds 0,1
    python benchmarks/method_study.py --decide
    python benchmarks/method_study.py --report [--split held-out]

A configuration is NAME=k=v,k=v (cns) or NAME=METHOD[,vectors=K]: METHOD is `ti` or `kv-finetune`; k=v are
LearnConfig fields (max_drift=0.01, rank=64, reg_lambda=0, vectors=2, slice=concept; `none` is None).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "method-study.json"
SPLITS = {"tuning": ("rex", "beetle", "globe", "cottage", "cap", "luna"),  # learned in the bench's ORDER
          "held-out": ("milo", "fedora", "bella", "bloom", "zoom", "stripy")}
BASELINES = ("ti", "kv-finetune")
PROTOCOL = {
    "issue": 33,
    "splits": {k: list(v) for k, v in SPLITS.items()},
    "run": "split's individuals learned in order into one model (continual); 6 captioned photos (seed 0), 150 steps, "
           "token lr 1e-3; scored just after each learn and at the end; 4 scenes x 4 image seeds per individual",
    "seeds": "training seeds 0 and 1 (LearnConfig.seed / the baselines' seed); photos and image seeds fixed",
    "decision_rule": "on the tuning split only, with each configuration's metrics averaged over its seeds: keep the "
                     "configurations with mean forgetting <= 0.005, zero-shot change >= -1 point and neighbour-prompt "
                     "change >= -2 points; choose the one with the highest final identity; configurations within "
                     "0.002 identity of the best are ties, and ties go to the smaller max_drift, then the smaller "
                     "number of vectors, then the shared slice. The held-out split is run once with the choice and "
                     "the baselines, with no re-tuning.",
    "at_most_configurations": 16,
    "targets": {"final_identity": 0.15, "recognised": 0.55, "forgetting_max": 0.005, "zero_shot_change_min_pt": -1,
                "neighbour_change_min_pt": -2, "paired_vs_ti_identity": 0.04},
}
STEPS, PHOTOS, IMAGE_SEEDS, NEIGHBOUR_SEEDS = 150, 6, 4, 2
TIE = 0.002


class Spec(NamedTuple):  # what the evaluator's prompt_alignment reads
    scene: str
    cls: str
    colour: str


def parse_config(text: str) -> tuple[str, str, dict]:
    """"eps=max_drift=0.01,rank=64" -> ("eps", "cns", {...}); "ti=ti" -> ("ti", "ti", {}); "ti2=ti,vectors=2" ->
    ("ti2", "ti", {"vectors": 2}) (a baseline takes only `vectors`: every method's token gets that many)."""
    name, _, rest = text.partition("=")
    items = [i for i in rest.split(",") if i]
    method = items.pop(0) if items and items[0] in BASELINES else "cns"
    overrides = {}
    for item in items:
        key, _, raw = item.partition("=")
        overrides[key] = _value(raw)
    if method != "cns" and set(overrides) - {"vectors"}:
        raise SystemExit(f"{text}: a baseline takes only vectors=K")
    return name, method, overrides


def _value(raw: str):
    if raw.lower() in ("none", "off"):
        return None
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def load(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"protocol": PROTOCOL, "base": {}, "runs": []}


def save(path: Path, doc: dict) -> None:
    from cns_cli.bank.atomic import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(doc, indent=1) + "\n").encode())


@contextlib.contextmanager
def locked(path: Path):
    """The results file's lock: several study processes (one per core) may add runs to one file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def update(path: Path, change) -> dict:
    """Read the file as it is now, apply `change(doc)`, write it back: under the lock, so no run is lost."""
    with locked(path):
        doc = load(path)
        change(doc)
        save(path, doc)
    return doc


class World:
    """The demo model, its evaluator and the split's photos, loaded once per process."""

    def __init__(self, split: str, work: Path):
        from cns_cli.bench.protocol import BenchConfig
        from cns_cli.bench.scoring import Sampling
        from cns_cli.bench.trainer import ConceptData
        from cns_cli.demo.evaluator import Evaluator
        from cns_cli.demo.individuals import individuals_of, render_photos
        from cns_cli.demo.world import base_world

        from cns_cli.model.loading import load_pipeline, resolve_base

        self.world = base_world("demo")
        self.base = load_pipeline(resolve_base("demo"))
        self.text_dim = self.base.text_encoder.config.hidden_size
        self.ev = Evaluator.load()
        self.ev.check_world(self.world)
        self.people = individuals_of(self.world)
        self.sampling = Sampling(BenchConfig.scenes, IMAGE_SEEDS, 20, BenchConfig.guidance, 48, self.world)
        self.concepts = []
        for name in SPLITS[split]:
            render_photos(name, work / "photos" / name, n=PHOTOS, seed=0, captions=True, world=self.world)
            self.concepts.append(ConceptData(name, self.people[name].cls, work / "photos" / name))

    def neighbours(self, pipe) -> dict:
        """Alignment (scene, class, colour) of every individual's plain description on every scene: its class
        neighbours without the token."""
        from cns_cli.bench.scoring import EVAL_SEED
        from cns_cli.demo.assess import generate
        from cns_cli.demo.world import SCENE_PHRASES

        prompts, seeds, specs = [], [], []
        for c in self.concepts:
            ind = self.people[c.name]
            for i, scene in enumerate(self.sampling.scenes):
                for r in range(NEIGHBOUR_SEEDS):
                    prompts.append(f"{ind.plain} {SCENE_PHRASES[scene]}")
                    seeds.append(EVAL_SEED + 500 + 100 * i + r)
                    specs.append(Spec(scene, ind.cls, ind.colour))
        score = self.ev.prompt_alignment(generate(pipe, prompts, seeds=seeds, steps=self.sampling.steps,
                                                  guidance=self.sampling.guidance), specs)
        score.pop("per_image")
        score["accuracy"] = float(np.mean([score["scene"], score["class"], score["colour"]]))
        return score


def score_base(w: World) -> dict:
    from cns_cli.bench.scoring import zero_shot
    return {"zero_shot": zero_shot(w.base, w.ev, w.sampling), "neighbours": w.neighbours(w.base)}


def run_one(w: World, method: str, overrides: dict, seed: int, work: Path) -> dict:
    """Learn the split's individuals in order with one configuration and seed; every number of the run."""
    from cns_cli.bench.methods import BankMethod, Budget, MethodInfo, make_method
    from cns_cli.bench.scoring import score_concepts, zero_shot

    overrides = dict(overrides)
    vectors = overrides.pop("vectors", 1)  # the token's vectors: the same for every method of a comparison
    budget = Budget(base="demo", steps=STEPS, seed=seed, text_dim=w.text_dim, device="cpu", vectors=vectors)
    if method == "cns":  # the bench's cns method with this configuration's LearnConfig fields
        info = MethodInfo("cns", "cns", "study configuration", overrides)
        m = BankMethod(info, budget, work / f"bank-{time.time_ns()}.cnsbank")
    else:  # a baseline, exactly as `cns bench` runs it
        m = make_method(method, budget, work)
    learns, just_after = [], {}
    for c in w.concepts:
        learns.append(m.learn(c))
        pipe = m.pipeline()
        just_after[c.name] = score_concepts(pipe, w.ev, [c], w.sampling)[0][c.name]
    final = score_concepts(pipe, w.ev, w.concepts, w.sampling)[0]
    out = {"just_after": just_after, "final": final, "zero_shot": zero_shot(pipe, w.ev, w.sampling),
           "neighbours": w.neighbours(pipe),
           "learn_seconds": [x["seconds"] for x in learns], "bytes_total": learns[-1]["bytes_total"]}
    if method == "cns":
        from cns_cli.bank import Bank

        rev = Bank.open(m.bank_path).head()
        keys = ("largest_coefficient", "selectivity", "selectivity_best")
        out["bank_stats"] = {n: {k: v for k, v in c.stats.items() if k in keys or k.startswith("drift_")}
                             for n, c in rev.concepts.items()}
    return out


def summary(run: dict, base: dict) -> dict:
    names = list(run["final"])
    fin = lambda key: float(np.mean([run["final"][n][key] for n in names]))  # noqa: E731
    after = {n: run["just_after"][n]["identity"] for n in names}
    return {
        "final_identity": fin("identity"), "final_recognised": fin("recognised"),
        "identity_just_after": float(np.mean(list(after.values()))),
        "recognised_just_after": float(np.mean([run["just_after"][n]["recognised"] for n in names])),
        "forgetting": float(np.mean([after[n] - run["final"][n]["identity"] for n in names[:-1]])),
        "zero_shot_change_pt": 100 * (run["zero_shot"]["accuracy"] - base["zero_shot"]["accuracy"]),
        "neighbour_change_pt": 100 * (run["neighbours"]["accuracy"] - base["neighbours"]["accuracy"]),
        "class": fin("class"), "scene": fin("scene"),
        "learn_seconds": float(np.mean(run["learn_seconds"])), "bytes_per_concept": run["bytes_total"] / len(names),
    }


def study(args) -> None:
    doc = update(args.json, lambda d: None)  # the rule is in the file before the first run
    if doc["protocol"] != PROTOCOL:
        raise SystemExit(f"{args.json} was started under another protocol; the protocol is fixed once runs exist")
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = [parse_config(c) for c in args.config]
    with tempfile.TemporaryDirectory() as tmp:
        w = World(args.split, Path(tmp))
        if args.split not in doc["base"]:
            base = score_base(w)
            doc = update(args.json, lambda d: d["base"].setdefault(args.split, base))
        for name, method, overrides in configs:
            clash = [r for r in doc["runs"] if r["config"] == name and (r["method"], r["overrides"]) != (method, overrides)]
            if clash:
                raise SystemExit(f"configuration name {name!r} is already used for {clash[0]['overrides']}")
            for seed in seeds:
                doc = load(args.json)
                if any((r["split"], r["config"], r["seed"]) == (args.split, name, seed) for r in doc["runs"]):
                    print(f"{args.split} {name} seed {seed}: already in {args.json}", flush=True)
                    continue
                t0 = time.perf_counter()
                run = run_one(w, method, overrides, seed, Path(tmp))
                entry = {"split": args.split, "config": name, "method": method, "overrides": overrides, "seed": seed,
                         "stage": args.stage, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         "seconds": round(time.perf_counter() - t0, 1),
                         "command": shlex.join(["python", "benchmarks/method_study.py", *sys.argv[1:]]), **run}
                entry["summary"] = summary(entry, doc["base"][args.split])
                doc = update(args.json, lambda d: d["runs"].append(entry))
                s = entry["summary"]
                print(f"{args.split} {name} seed {seed}: identity {s['final_identity']:.3f} (just after "
                      f"{s['identity_just_after']:.3f}) recognised {s['final_recognised']:.2f} forgetting "
                      f"{s['forgetting']:.4f} zero-shot {s['zero_shot_change_pt']:+.1f} neighbours "
                      f"{s['neighbour_change_pt']:+.1f} ({entry['seconds']:.0f} s)", flush=True)


def means(doc: dict, split: str) -> dict[str, dict]:
    """config -> its summary averaged over seeds (+ method, overrides, seeds)."""
    out: dict[str, dict] = {}
    for r in doc["runs"]:
        if r["split"] == split:
            out.setdefault(r["config"], {"method": r["method"], "overrides": r["overrides"], "runs": []})["runs"].append(r)
    for entry in out.values():
        keys = entry["runs"][0]["summary"].keys()
        entry["mean"] = {k: float(np.mean([r["summary"][k] for r in entry["runs"]])) for k in keys}
        entry["seeds"] = sorted(r["seed"] for r in entry["runs"])
    return out


def decide(doc: dict) -> dict:
    """The protocol's decision rule over the tuning split's cns configurations."""
    from cns_cli.learn import LearnConfig

    rows = {k: v for k, v in means(doc, "tuning").items() if v["method"] == "cns"}
    feasible = {k: v for k, v in rows.items()
                if v["mean"]["forgetting"] <= 0.005 and v["mean"]["zero_shot_change_pt"] >= -1
                and v["mean"]["neighbour_change_pt"] >= -2}
    if not feasible:
        return {"chosen": None, "feasible": [], "why": "no configuration meets the constraints"}
    best = max(v["mean"]["final_identity"] for v in feasible.values())
    ties = [k for k, v in feasible.items() if v["mean"]["final_identity"] >= best - TIE]

    def order(k):
        o = feasible[k]["overrides"]
        drift = o.get("max_drift", LearnConfig.max_drift)
        return (float("inf") if drift is None else drift, o.get("vectors", 1), o.get("slice", "shared") != "shared")

    chosen = min(ties, key=order)
    return {"chosen": chosen, "overrides": feasible[chosen]["overrides"], "feasible": sorted(feasible),
            "ties": sorted(ties), "best_identity": best}


def paired(doc: dict, split: str, config: str, against: str, key: str = "identity", n_boot: int = 10_000) -> dict | None:
    """Per individual and seed, `config` minus `against` in the final `key` (same photos and image seeds): mean,
    95 % bootstrap interval over the pairs, and the worst individual (mean over seeds)."""
    runs = {(r["config"], r["seed"]): r for r in doc["runs"] if r["split"] == split}
    seeds = sorted({s for c, s in runs if c == config} & {s for c, s in runs if c == against})
    if not seeds:
        return None
    diffs, per = [], {}
    for s in seeds:
        for n, sc in runs[(config, s)]["final"].items():
            d = sc[key] - runs[(against, s)]["final"][n][key]
            diffs.append(d)
            per.setdefault(n, []).append(d)
    diffs = np.array(diffs)
    rng = np.random.default_rng(0)
    boot = rng.choice(diffs, size=(n_boot, diffs.size)).mean(axis=1)
    worst = min(per, key=lambda n: np.mean(per[n]))
    return {"mean": float(diffs.mean()), "ci95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
            "pairs": int(diffs.size), "worst": worst, "worst_mean": float(np.mean(per[worst]))}


def report(doc: dict, split: str) -> None:
    rows = means(doc, split)
    print(f"{split}: config | final identity | just after | recognised | forgetting | zero-shot pt | neighbours pt "
          "| learn s | bytes | vs ti (95 % CI) | vs kv")
    for name, e in rows.items():
        m = e["mean"]
        ti, kv = paired(doc, split, name, "ti"), paired(doc, split, name, "kv-finetune")
        fmt = lambda p: "-" if p is None or name in BASELINES else f"{p['mean']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}]"  # noqa: E731
        print(f"{name} | {m['final_identity']:.3f} | {m['identity_just_after']:.3f} | {m['final_recognised']:.2f} | "
              f"{m['forgetting']:.4f} | {m['zero_shot_change_pt']:+.1f} | {m['neighbour_change_pt']:+.1f} | "
              f"{m['learn_seconds']:.1f} | {m['bytes_per_concept']:.0f} | {fmt(ti)} | {fmt(kv)}  seeds {e['seeds']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=tuple(SPLITS), default="tuning")
    ap.add_argument("--config", action="append", default=[], help="NAME=METHOD or NAME=k=v,k=v (repeatable)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--stage", default="", help="a label for this batch of runs (kept in each run)")
    ap.add_argument("--json", type=Path, default=RESULTS)
    ap.add_argument("--decide", action="store_true", help="apply the decision rule to the tuning runs")
    ap.add_argument("--report", action="store_true", help="print every configuration of --split")
    args = ap.parse_args()
    if args.decide or args.report:
        doc = load(args.json)
        if args.report:
            report(doc, args.split)
        if args.decide:
            print(json.dumps(decide(doc), indent=1))
        return
    if not args.config:
        ap.error("give at least one --config")
    study(args)


if __name__ == "__main__":
    main()
