"""Train and validate the demo world's closed-world evaluator (`cns_cli.demo.evaluator`, whose weights ship as
`cns_cli/data/evaluator.safetensors` with the validation report `cns_cli/data/evaluator.json`): the seeded training
pool of renders, the training loop, and the validation report (attribute accuracy, identity ROC-AUC, robustness).
Renders only, never a model's outputs, so the evaluator is an independent measuring instrument.

    python tools/train_evaluator.py train [--seed 0] [--out cns_cli/data]   # ≈ 7 min on 2 CPU threads
    python tools/train_evaluator.py validate [--weights PATH]              # re-measure the packaged weights
    python tools/train_evaluator.py train --quick --out /tmp/ev            # a smoke run (misses the targets)

`train` exits 1 when the validation misses a target (attribute accuracy 0.95, identity ROC-AUC 0.98; world 2's:
0.99 and 0.99). The weights record `world_fingerprint()`: retrain whenever the world's pixels change (the tests
check it). `train --world 2` trains the evaluator of world 2 (marks; `cns_cli.demo.marks`): it records the world,
and `validate` measures an evaluator in its own world.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python tools/train_evaluator.py`: the repository root makes cns_cli importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cns_cli.demo import individuals as ind  # noqa: E402
from cns_cli.demo import world  # noqa: E402
from cns_cli.demo.evaluator import FORMAT, IMAGE, REF_SEED, VERSION, Evaluator, to_tensor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FINGERPRINT_SEED = 4_242  # renders hashed by world_fingerprint


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- world data


def world_fingerprint(w: int = 1) -> str:
    """sha256 over what world `w` draws: the label lists, one seeded render of every scene × class × colour
    triple (world 2: and of every class × mark kind) and four of every individual. The evaluator measures the
    world it was trained on; `validate` says so when the renders have changed since (refactoring the drawing
    code without changing a pixel keeps the fingerprint)."""
    import hashlib
    from itertools import product

    colours, people = world.WORLD_COLOURS[w], ind.individuals_of(w)
    h = hashlib.sha256()
    labels = [world.SCENES, world.CLASSES, colours, world.SIZES, world.POSITIONS, sorted(people)]
    h.update(json.dumps(labels).encode())
    for k, (scene, cls, colour) in enumerate(product(world.SCENES, world.CLASSES, colours)):
        rng = np.random.default_rng((FINGERPRINT_SEED, k))
        spec = world.Spec(scene, cls, colour, world.SIZES[k % len(world.SIZES)], world.POSITIONS[k % len(world.POSITIONS)],
                          world=w)
        h.update(world.render_array(spec, rng)[0].tobytes())
    if world.WORLD_MARK_COLOURS[w]:
        for k, (cls, kind) in enumerate((c, kind) for c, kinds in world.CLASS_MARKS.items() for kind in kinds):
            spec = world.Spec("plain", cls, "yellow", marks=((kind, "blue"),), world=w)
            h.update(world.render_array(spec, np.random.default_rng((FINGERPRINT_SEED, 1000 + k)))[0].tobytes())
    for name in sorted(people):
        h.update(ind.reference_renders(name, 4, seed=FINGERPRINT_SEED, world=w).tobytes())
    return h.hexdigest()


def identity_names(w: int = 1) -> list[str]:
    """Identity classes: every individual (sorted), then "generic <class>" for every class."""
    return sorted(ind.individuals_of(w)) + [f"generic {c}" for c in world.CLASSES]


def identity_of(spec) -> str:
    """The identity a render shows: its individual; in world 2 also a generic spec whose class, colour and marks
    are an individual's (it draws exactly that individual); else "generic <class>"."""
    if spec.individual is not None:
        return spec.individual
    owners = {(i.cls, i.colour, i.marks): n for n, i in ind.individuals_of(spec.world).items() if i.marks}
    return owners.get((spec.cls, spec.colour, spec.marks), f"generic {spec.cls}")


def render_individual(name: str, n: int, seed: int, w: int = 1) -> tuple[np.ndarray, list]:
    """`n` renders of individual `name` of world `w` at random scenes / sizes / positions / poses: uint8
    [n,64,64,3] and their Specs. Item i depends only on (seed, i, name)."""
    import zlib

    out = np.empty((n, IMAGE, IMAGE, 3), np.uint8)
    specs = []
    for i in range(n):
        rng = np.random.default_rng((seed, i, zlib.crc32(name.encode())))
        spec = ind.individual_spec(name, rng, world=w)
        out[i] = world.render_array(spec, rng)[0]
        specs.append(spec)
    return out, specs


def render_generic_class(cls: str, n: int, seed: int, w: int = 1) -> tuple[np.ndarray, list]:
    """`n` generic renders of class `cls` in world `w`, any scene / colour / size / position (world 2: and random
    marks, never exactly an individual's)."""
    import zlib

    out = np.empty((n, IMAGE, IMAGE, 3), np.uint8)
    specs = []
    for i in range(n):
        rng = np.random.default_rng((seed, i, zlib.crc32(cls.encode())))
        scene, colour, size, pos = (o[int(rng.integers(len(o)))] for o in (world.SCENES, world.WORLD_COLOURS[w],
                                                                           world.SIZES, world.POSITIONS))
        spec = world.Spec(scene, cls, colour, size, pos, world=w)
        while world.WORLD_MARK_COLOURS[w]:
            marks = world.sample_marks(cls, colour, rng, world.WORLD_MARK_COLOURS[w])
            spec = world.Spec(scene, cls, colour, size, pos, marks=marks, world=w)
            if identity_of(spec) == f"generic {cls}":
                break
        out[i] = world.render_array(spec, rng)[0]
        specs.append(spec)
    return out, specs


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score(pos) > score(neg)) + ½ P(tie): the Mann-Whitney form of the ROC AUC."""
    s = np.concatenate([pos, neg])
    order = s.argsort(kind="mergesort")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    for v in np.unique(s):  # average ranks of ties (rare with float scores)
        m = s == v
        if m.sum() > 1:
            ranks[m] = ranks[m].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


# Validation seeds: far from every seed training draws from (training uses seed + small offsets).
VAL_ATTR_SEED = 900_001
VAL_ID_SEED = 900_101
TARGET_ATTR_ACC = 0.95
TARGET_ID_AUC = 0.98
TARGETS = {1: (TARGET_ATTR_ACC, TARGET_ID_AUC), 2: (0.99, 0.99)}  # world -> (attribute accuracy, identity AUC)


def render_generic(n: int, seed: int, w: int = 1) -> tuple[np.ndarray, list]:
    """`n` generic renders of world `w` over ALL scene x class x colour combinations (held-out ones included: the
    evaluator is a measuring instrument, not the generator)."""
    arr, specs, _ = world.render_dataset(n, seed=seed, held_out=None, world=w)
    return np.asarray(arr, np.uint8), list(specs)


# --------------------------------------------------------------------------------------------- training


@dataclass
class TrainSettings:
    seed: int = 0
    steps: int = 700
    batch: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    n_generic: int = 24_000      # generic renders in the training pool
    n_per_individual: int = 900  # renders per individual
    ident_weight: float = 1.0
    margin: float = 0.25          # CosFace margin
    scale: float = 16.0           # cosine-logit scale
    threads: int = 2
    widths: tuple = (24, 32, 64, 128)
    embed_dim: int = 64
    world: int = 1                # the demo world it measures


def _augment(x, g):
    """Light augmentation of a batch [N,3,64,64] in [-1,1]: shift ±3 px, scale ±6 %, rotation ±4°, per-channel
    gain ±4 %, brightness ±5 %, sometimes a blur, Gaussian noise σ ≤ 0.04 (what a generator's imperfections look
    like). `g` is a torch.Generator, so augmentation is seeded too."""
    import math

    import torch
    from torch.nn import functional as F

    n = x.shape[0]
    r = lambda *s: torch.rand(*s, generator=g)
    ang = (r(n) * 2 - 1) * (4 * math.pi / 180)
    sc = 1 + (r(n) * 2 - 1) * 0.06
    tx, ty = (r(n) * 2 - 1) * (3 / 32), (r(n) * 2 - 1) * (3 / 32)
    theta = torch.stack([torch.stack([torch.cos(ang) / sc, -torch.sin(ang) / sc, tx], 1),
                         torch.stack([torch.sin(ang) / sc, torch.cos(ang) / sc, ty], 1)], 1)   # [N,2,3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # blur, as a generator's / VAE's softness: none (55 %), 3x3 binomial (20 %), 5x5 binomial (15 %),
    # 2x down-and-up bilinear (10 %)
    u = r(n)[:, None, None, None]
    b3 = torch.tensor([1.0, 2.0, 1.0]) / 4
    b5 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
    blur3 = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), (b3[:, None] * b3[None]).expand(3, 1, 3, 3), groups=3)
    blur5 = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), (b5[:, None] * b5[None]).expand(3, 1, 5, 5), groups=3)
    downup = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="bilinear", align_corners=False)
    x = torch.where(u < 0.55, x, torch.where(u < 0.75, blur3, torch.where(u < 0.9, blur5, downup)))
    x = x * (1 + (r(n, 3, 1, 1) * 2 - 1) * 0.04) + (r(n, 1, 1, 1) * 2 - 1) * 0.1
    x = x + torch.randn(x.shape, generator=g) * (r(n, 1, 1, 1) * 0.04)
    return x.clamp(-1, 1)


def build_pool(s: TrainSettings, log=_log) -> dict[str, np.ndarray]:
    """Render the training pool (seeded): generic renders over all combos + every individual at varied scenes."""
    names = identity_names(s.world)
    idx = {n: i for i, n in enumerate(names)}
    t = time.time()
    imgs, specs = render_generic(s.n_generic, seed=s.seed + 1, w=s.world)
    ident = [idx[identity_of(sp)] for sp in specs]
    parts, sp_all = [imgs], list(specs)
    for j, name in enumerate(sorted(ind.individuals_of(s.world))):
        a, sp = render_individual(name, s.n_per_individual, seed=s.seed * 1000 + 100 + j, w=s.world)
        parts.append(a)
        sp_all += sp
        ident += [idx[name]] * len(sp)
    log(f"rendered {sum(len(p) for p in parts)} training images in {time.time() - t:.1f}s")
    return {
        "images": np.concatenate(parts),
        "scene": np.array([world.SCENES.index(sp.scene) for sp in sp_all]),
        "class": np.array([world.CLASSES.index(sp.cls) for sp in sp_all]),
        "colour": np.array([world.WORLD_COLOURS[s.world].index(sp.colour) for sp in sp_all]),
        "ident": np.array(ident),
    }


def train(s: TrainSettings, log=_log) -> tuple[Evaluator, dict]:
    """Seeded training on renders only. Returns the evaluator and a summary of the run."""
    import torch
    from torch.nn import functional as F

    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    t0 = time.time()
    pool = build_pool(s, log)
    t_render = time.time() - t0
    config = {"scenes": list(world.SCENES), "classes": list(world.CLASSES),
              "colours": list(world.WORLD_COLOURS[s.world]), "identities": identity_names(s.world),
              "widths": list(s.widths), "embed_dim": s.embed_dim, "image": IMAGE, "ref_seed": REF_SEED,
              "world_sha256": world_fingerprint(s.world), "world": s.world}
    ev = Evaluator.build(config)
    net = ev.net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=s.steps, pct_start=0.15)
    g = torch.Generator().manual_seed(s.seed)
    rng = np.random.default_rng(s.seed + 7)
    n = len(pool["images"])
    labels = {k: torch.from_numpy(pool[k]).long() for k in ("scene", "class", "colour", "ident")}
    hist: list[dict] = []
    t1, c1 = time.time(), time.process_time()
    for step in range(s.steps):
        b = torch.from_numpy(rng.integers(0, n, s.batch))
        x = _augment(to_tensor(pool["images"][b.numpy()]), g)                     # [B,3,64,64]
        o = net(x)
        cos = net.ident_cos(o["embed"])                                         # [B,n_ident]
        yi = labels["ident"][b]
        logits_id = s.scale * (cos - s.margin * F.one_hot(yi, cos.shape[1]))    # CosFace
        la = {k: F.cross_entropy(o[k], labels[k][b], label_smoothing=0.05) for k in ("scene", "class", "colour")}
        li = F.cross_entropy(logits_id, yi)
        loss = la["scene"] + la["class"] + la["colour"] + s.ident_weight * li
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == s.steps - 1:
            rec = {"step": step, "loss": round(loss.item(), 4), **{k: round(v.item(), 4) for k, v in la.items()},
                   "ident": round(li.item(), 4), "s": round(time.time() - t1, 1)}
            hist.append(rec)
            log(json.dumps(rec))
    net.eval()
    summary = {"settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.__dict__.items()},
               "pool_images": int(n), "render_seconds": round(t_render, 1),
               "train_seconds": round(time.time() - t1, 1),
               "train_cpu_seconds": round(time.process_time() - c1, 1), "total_seconds": round(time.time() - t0, 1),
               "torch": torch.__version__, "threads": s.threads, "history": hist,
               "params": int(sum(p.numel() for p in net.parameters()))}
    return ev, summary


# --------------------------------------------------------------------------------------------- validation


def degrade(images: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """Deterministic degradations for the robustness part of the report (what generated images may look like):
    "blur" (Gaussian σ = 1 px), "downup" (to 32 px and back, bilinear), "noise" (Gaussian σ = 12 of 255)."""
    from PIL import Image, ImageFilter

    if kind == "noise":
        rng = np.random.default_rng(seed)
        return np.clip(images + rng.normal(0, 12, images.shape), 0, 255).astype(np.uint8)
    out = np.empty_like(images)
    for i, a in enumerate(images):
        im = Image.fromarray(a)
        if kind == "blur":
            im = im.filter(ImageFilter.GaussianBlur(1.0))
        elif kind == "downup":
            im = im.resize((IMAGE // 2, IMAGE // 2), Image.BILINEAR).resize((IMAGE, IMAGE), Image.BILINEAR)
        else:
            raise ValueError(f"unknown degradation {kind!r}")
        out[i] = np.asarray(im)
    return out


def _identity_aucs(ev: Evaluator, fresh: dict[str, np.ndarray], generic: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per individual: ROC-AUC of identity_similarity, its renders (positives) vs the other same-class individuals'
    renders + generic members of the class (negatives)."""
    names, people = sorted(fresh), ind.individuals_of(ev.world)
    emb = {nm: ev.embed(a) for nm, a in fresh.items()}                 # name -> [n_pos,64]
    gemb = {c: ev.embed(a) for c, a in generic.items()}               # class -> [n_gen,64]
    per: dict[str, dict] = {}
    for nm in names:
        c = people[nm].cls
        ref = ev.reference_embedding(nm)                               # [64]; references are never degraded
        others = [o for o in names if o != nm and people[o].cls == c]
        pos = emb[nm] @ ref
        neg_o = np.concatenate([emb[o] for o in others]) @ ref if others else np.zeros(0)
        neg_g = gemb[c] @ ref
        neg = np.concatenate([neg_o, neg_g])
        per[nm] = {"class": c, "auc": round(roc_auc(pos, neg), 4),
                   "auc_vs_individuals": round(roc_auc(pos, neg_o), 4) if len(neg_o) else None,
                   "auc_vs_generic": round(roc_auc(pos, neg_g), 4),
                   "mean_sim_pos": round(float(pos.mean()), 4), "mean_sim_neg": round(float(neg.mean()), 4),
                   "max_sim_neg": round(float(neg.max()), 4), "min_sim_pos": round(float(pos.min()), 4),
                   "n_pos": len(pos), "n_neg": len(neg), "other_individuals": others}
    return per


def _colour_by_pattern(predicted: Sequence[str], specs: Sequence) -> dict[str, float]:
    """Colour accuracy per class and pattern ("car stripes", "ball none"): where a pattern hides an object's colour."""
    groups: dict[str, list[bool]] = {}
    for p, sp in zip(predicted, specs):
        pattern = next((k for k, _ in sp.marks if k in world.PATTERNS), "none")
        groups.setdefault(f"{sp.cls} {pattern}", []).append(p == sp.colour)
    return {k: round(float(np.mean(v)), 4) for k, v in sorted(groups.items())}


def validate(ev: Evaluator, n_attr: int = 2400, n_pos: int = 100, n_neg_generic: int = 200,
             n_robust: int = 40, log=_log) -> dict:
    """Fresh renders (seeds never used in training): attribute accuracy over all combos (and the held-out combos
    alone), and per-individual ROC-AUC of `identity_similarity` for the individual's renders (positives) vs the
    other same-class individuals' renders and generic members of the class (negatives). Then the same measures on
    degraded copies of part of those renders (blur / down-up / noise): informative, no targets."""
    t, w = time.time(), ev.world
    imgs, specs = render_generic(n_attr, seed=VAL_ATTR_SEED, w=w)
    pa = ev.prompt_alignment(imgs, specs)
    held = [i for i, sp in enumerate(specs) if world.is_held_out(sp)]
    ph = ev.prompt_alignment(imgs[held], [specs[i] for i in held]) if held else None
    # per-value accuracy, to see which labels (if any) are confused
    pred = ev.predict(imgs)
    per_value: dict[str, dict[str, float]] = {}
    for k, attr in (("scene", "scene"), ("class", "cls"), ("colour", "colour")):
        vals = sorted({getattr(sp, attr) for sp in specs})
        per_value[k] = {v: round(float(np.mean([p == v for p, sp in zip(pred[k], specs) if getattr(sp, attr) == v])), 4)
                        for v in vals}
    per_value["colour_by_pattern"] = _colour_by_pattern(pred["colour"], specs)
    keys = ("scene", "class", "colour", "all")
    attrs = {"n": pa["n"], **{k: round(pa[k], 4) for k in keys},
             "held_out_combos": ({"n": ph["n"], **{k: round(ph[k], 4) for k in keys}} if ph else None),
             "per_value": per_value}
    log(f"attributes: {json.dumps({k: attrs[k] for k in ('n', *keys)})}")
    # identity
    people = ind.individuals_of(w)
    names = sorted(people)
    fresh = {nm: render_individual(nm, n_pos, seed=VAL_ID_SEED + j, w=w)[0] for j, nm in enumerate(names)}
    classes = sorted({people[nm].cls for nm in names}, key=world.CLASSES.index)
    generic = {c: render_generic_class(c, n_neg_generic, seed=VAL_ID_SEED + 500 + world.CLASSES.index(c), w=w)[0]
               for c in classes}
    per = _identity_aucs(ev, fresh, generic)
    aucs = [v["auc"] for v in per.values()]
    ident = {"per_individual": per, "min_auc": min(aucs), "mean_auc": round(float(np.mean(aucs)), 4),
             "reference": {"n_ref": 32, "seed": REF_SEED, "function": "individuals.reference_renders"}}
    log(f"identity: min AUC {ident['min_auc']}, mean {ident['mean_auc']}; "
        + ", ".join(f"{k}={v['auc']}" for k, v in per.items()))
    # robustness: degraded copies of the first renders of each set
    robust: dict[str, dict] = {}
    for kind in ("blur", "downup", "noise"):
        k_attr = ev.prompt_alignment(degrade(imgs[: 15 * n_robust], kind), specs[: 15 * n_robust])
        k_per = _identity_aucs(ev, {nm: degrade(a[:n_robust], kind) for nm, a in fresh.items()},
                               {c: degrade(a[: 2 * n_robust], kind) for c, a in generic.items()})
        k_aucs = {nm: v["auc"] for nm, v in k_per.items()}
        robust[kind] = {"n_attr": k_attr["n"], **{k: round(k_attr[k], 4) for k in keys},
                        "min_auc": min(k_aucs.values()), "mean_auc": round(float(np.mean(list(k_aucs.values()))), 4),
                        "auc": k_aucs}
        log(f"robustness {kind}: {json.dumps({k: v for k, v in robust[kind].items() if k != 'auc'})}")
    attr_target, id_target = TARGETS[w]
    met = {"scene": attrs["scene"] >= attr_target, "class": attrs["class"] >= attr_target,
           "colour": attrs["colour"] >= attr_target, "identity": ident["min_auc"] >= id_target}
    return {"attributes": attrs, "identity": ident, "robustness": robust,
            "targets": {"attribute_accuracy": attr_target, "identity_auc": id_target, "met": met,
                        "all_met": all(met.values())},
            "seeds": {"attributes": VAL_ATTR_SEED, "identity": VAL_ID_SEED}, "seconds": round(time.time() - t, 1)}


# --------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python tools/train_evaluator.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train, validate, write evaluator.safetensors + evaluator.json")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", type=Path, default=ROOT / "cns_cli" / "data")
    tr.add_argument("--steps", type=int, default=TrainSettings.steps)
    tr.add_argument("--threads", type=int, default=TrainSettings.threads)
    tr.add_argument("--quick", action="store_true", help="a tiny smoke run (does not meet the targets)")
    tr.add_argument("--world", type=int, default=None, choices=world.WORLDS,
                    help="the demo world to measure (its model's: training.json 'world'); default: the bundled "
                         "model's, since the default --out is the bundled evaluator")
    va = sub.add_parser("validate", help="re-run validation of the packaged (or given) weights; print the report")
    va.add_argument("--weights", type=Path, default=None)
    va.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    if args.cmd == "train":
        if args.world is None:
            args.world = world.base_world("demo")
        s = TrainSettings(seed=args.seed, steps=args.steps, threads=args.threads, world=args.world)
        if args.quick:
            s = TrainSettings(seed=args.seed, steps=5, batch=16, n_generic=200, n_per_individual=10, threads=args.threads,
                              world=args.world)
        ev, summary = train(s)
        report = {"format": FORMAT, "version": VERSION, "world_sha256": ev.config["world_sha256"],
                  "training": summary, "validation": validate(ev), "weights": "evaluator.safetensors"}
        path = ev.save(args.out / "evaluator.safetensors")
        import hashlib

        report["weights_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        report["weights_bytes"] = path.stat().st_size
        (args.out / "evaluator.json").write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps({k: report["validation"][k] for k in ("targets",)}, indent=1))
        print(f"wrote {path} and {args.out / 'evaluator.json'}")
        return 0 if report["validation"]["targets"]["all_met"] else 1
    torch.set_num_threads(args.threads)
    ev = Evaluator.load(args.weights)
    matches = ev.config.get("world_sha256") == world_fingerprint(ev.world)
    if not matches:
        _log(f"note: world {ev.world}'s drawing changed since these weights were trained; retrain with "
             f"`python tools/train_evaluator.py train --world {ev.world}`")
    report = validate(ev)
    report["world_matches_training"] = matches
    print(json.dumps(report, indent=1))
    return 0 if report["targets"]["all_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
