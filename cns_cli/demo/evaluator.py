"""The closed-world evaluator: what CLIP-I / CLIP-T / DINO are for real images, for the procedural demo world.

A small CNN trained on renders of `cns_cli.demo.world` and `cns_cli.demo.individuals` only (never on a
model's outputs), so it is an independent measuring instrument for what a generator drew:

  * prompt alignment (the CLIP-T role): heads that read the scene, the object class and its colour, compared
    with the `Spec` a prompt asked for;
  * identity (the CLIP-I / DINO role): a 64-d L2-normalised embedding trained with a cosine-margin
    classifier over identities = every individual + one "generic" identity per class, so it learns what
    separates an individual from the other members of its class (spots, collars, patterns), not just the class.
    `identity_similarity` is the cosine similarity to the mean embedding of reference renders.

    python -m cns_cli.demo.evaluator train [--seed 0] [--out cns_cli/data]   # ≈ 5 CPU-minutes on 2 threads
    python -m cns_cli.demo.evaluator validate [--weights PATH]              # re-measure the packaged weights

The weights ship as `cns_cli/data/evaluator.safetensors` (safetensors only, never pickle; the architecture and
the label vocabularies live in its metadata) with the validation report `cns_cli/data/evaluator.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

IMAGE = 64
FORMAT = "cns-demo-evaluator"
VERSION = 1
REF_SEED = 12345  # default seed of the reference renders an identity is compared with
# Validation seeds: far from every seed training draws from (training uses seed + small offsets).
VAL_ATTR_SEED = 900_001
VAL_ID_SEED = 900_101
TARGET_ATTR_ACC = 0.95
TARGET_ID_AUC = 0.98


# --------------------------------------------------------------------------------------------- network


def _net_cls():
    """The network class, built lazily so that importing this module does not import torch."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def cbr(cin: int, cout: int, k: int = 3, stride: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.GroupNorm(8, cout), nn.SiLU()]

    class EvalNet(nn.Module):
        """[N,3,64,64] in [-1,1] -> attribute logits + a unit 64-d identity embedding.

        stem   5x5/2 conv 3->w0                        [N,w0,32,32]
        block1 3x3 conv w0->w1, maxpool                [N,w1,16,16]
        block2 3x3 conv w1->w2, w2->w2, maxpool        [N,w2, 8, 8]
        block3 3x3 conv w2->w3, w3->w3                 [N,w3, 8, 8]
        pool   concat(global avg, global max)          [N,2*w3]   (max keeps small details: a collar, a spot)
        heads  linear -> scene / class / colour logits; MLP -> embedding [N,E], L2-normalised
        ident  cosine classifier: weight [n_ident,E] (unit rows), used only in training
        """

        def __init__(self, n_scene: int, n_class: int, n_colour: int, n_ident: int,
                     widths: Sequence[int] = (24, 32, 64, 128), embed_dim: int = 64):
            super().__init__()
            w0, w1, w2, w3 = widths
            self.features = nn.Sequential(
                *cbr(3, w0, k=5, stride=2),
                *cbr(w0, w1), nn.MaxPool2d(2),
                *cbr(w1, w2), *cbr(w2, w2), nn.MaxPool2d(2),
                *cbr(w2, w3), *cbr(w3, w3),
            )
            feat = 2 * w3
            self.scene = nn.Linear(feat, n_scene)
            self.cls = nn.Linear(feat, n_class)
            self.colour = nn.Linear(feat, n_colour)
            self.embed = nn.Sequential(nn.Linear(feat, 128), nn.SiLU(), nn.Linear(128, embed_dim))
            self.ident = nn.Parameter(torch.randn(n_ident, embed_dim) * 0.1)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = self.features(x)                                             # [N,w3,8,8]
            h = torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)               # [N,2*w3]
            e = F.normalize(self.embed(h), dim=1)                            # [N,E], unit norm
            return {"scene": self.scene(h), "class": self.cls(h), "colour": self.colour(h), "embed": e}

        def ident_cos(self, e: torch.Tensor) -> torch.Tensor:
            return e @ F.normalize(self.ident, dim=1).t()                    # [N,n_ident] cosines

    return EvalNet


# --------------------------------------------------------------------------------------------- images


def to_array(images: Any) -> np.ndarray:
    """uint8 [N,64,64,3] from a uint8 array [N,H,W,3] / [H,W,3], a PIL image, or a list of PIL images / arrays
    of any size (resized to 64x64 with Lanczos, converted to RGB)."""
    from PIL import Image

    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = images[None]
        if images.shape[1:] == (IMAGE, IMAGE, 3):
            return np.ascontiguousarray(images, dtype=np.uint8)
        images = list(images)
    out = np.empty((len(images), IMAGE, IMAGE, 3), np.uint8)
    for i, im in enumerate(images):
        if not isinstance(im, Image.Image):
            im = Image.fromarray(np.asarray(im, dtype=np.uint8))
        im = im.convert("RGB")
        if im.size != (IMAGE, IMAGE):
            im = im.resize((IMAGE, IMAGE), Image.LANCZOS)
        out[i] = np.asarray(im)
    return out


def _tensor(arr: np.ndarray):
    import torch

    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)  # [N,3,64,64] in [-1,1]


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


# --------------------------------------------------------------------------------------------- world data


def _world():
    from . import individuals, world

    return world, individuals


def identity_names() -> list[str]:
    """Identity classes: every individual (sorted), then "generic <class>" for every class."""
    world, ind = _world()
    return sorted(ind.INDIVIDUALS) + [f"generic {c}" for c in world.CLASSES]


def render_individual(name: str, n: int, seed: int) -> tuple[np.ndarray, list]:
    """`n` renders of individual `name` at random scenes / sizes / positions / poses: uint8 [n,64,64,3] and their
    Specs. Item i depends only on (seed, i, name)."""
    import zlib

    world, ind = _world()
    out = np.empty((n, IMAGE, IMAGE, 3), np.uint8)
    specs = []
    for i in range(n):
        rng = np.random.default_rng((seed, i, zlib.crc32(name.encode())))
        spec = ind.individual_spec(name, rng)
        out[i] = world.render_array(spec, rng)[0]
        specs.append(spec)
    return out, specs


def render_generic_class(cls: str, n: int, seed: int) -> tuple[np.ndarray, list]:
    """`n` generic (non-individual) renders of class `cls`, any scene / colour / size / position."""
    import zlib

    world, _ = _world()
    out = np.empty((n, IMAGE, IMAGE, 3), np.uint8)
    specs = []
    for i in range(n):
        rng = np.random.default_rng((seed, i, zlib.crc32(cls.encode())))
        pick = lambda opts: opts[int(rng.integers(len(opts)))]  # noqa: E731
        spec = world.Spec(pick(world.SCENES), cls, pick(world.COLOURS), pick(world.SIZES), pick(world.POSITIONS))
        out[i] = world.render_array(spec, rng)[0]
        specs.append(spec)
    return out, specs


def render_generic(n: int, seed: int) -> tuple[np.ndarray, list]:
    """`n` generic renders over ALL scene x class x colour combinations (held-out ones included: the evaluator is
    a measuring instrument, not the generator)."""
    world, _ = _world()
    arr, specs, _ = world.render_dataset(n, seed=seed, held_out=None)
    return np.asarray(arr, np.uint8), list(specs)


# --------------------------------------------------------------------------------------------- evaluator


@dataclass
class Evaluator:
    """A loaded evaluator. `Evaluator.load()` reads the packaged weights."""

    net: Any
    config: dict = field(default_factory=dict)
    _ref_cache: dict = field(default_factory=dict, repr=False)

    @property
    def scenes(self) -> list[str]:
        return self.config["scenes"]

    @property
    def classes(self) -> list[str]:
        return self.config["classes"]

    @property
    def colours(self) -> list[str]:
        return self.config["colours"]

    @property
    def identities(self) -> list[str]:
        return self.config["identities"]

    # ---- construction / IO

    @classmethod
    def build(cls, config: dict) -> "Evaluator":
        net = _net_cls()(len(config["scenes"]), len(config["classes"]), len(config["colours"]),
                         len(config["identities"]), tuple(config["widths"]), config["embed_dim"])
        return cls(net.eval(), dict(config))

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Evaluator":
        """Load weights from `path` (default: the packaged `cns_cli/data/evaluator.safetensors`). Safetensors only:
        no pickle is ever involved; the architecture and label names come from the file's metadata."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        if path is None:
            from importlib.resources import as_file, files

            with as_file(files("cns_cli") / "data" / "evaluator.safetensors") as p:
                return cls.load(Path(p))
        path = Path(path)
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} file (metadata format={meta.get('format')!r})")
        ev = cls.build(json.loads(meta["config"]))
        ev.net.load_state_dict(load_file(str(path)))
        ev.net.eval()
        return ev

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.net.state_dict().items()}
        save_file(state, str(path), metadata={"format": FORMAT, "version": str(VERSION), "config": json.dumps(self.config)})
        return path

    # ---- inference

    def _forward(self, images: Any, batch: int = 256) -> dict[str, np.ndarray]:
        import torch

        arr = to_array(images)
        outs: dict[str, list] = {"scene": [], "class": [], "colour": [], "embed": []}
        self.net.eval()
        with torch.inference_mode():
            for i in range(0, len(arr), batch):
                o = self.net(_tensor(arr[i: i + batch]))
                for k in outs:
                    outs[k].append((o[k] if k == "embed" else o[k].softmax(1)).numpy())
        dims = {"scene": len(self.scenes), "class": len(self.classes), "colour": len(self.colours),
                "embed": self.config["embed_dim"]}
        return {k: (np.concatenate(v) if v else np.zeros((0, dims[k]), np.float32)) for k, v in outs.items()}

    def predict(self, images: Any) -> dict[str, Any]:
        """images: uint8 [N,64,64,3] array or (a list of) PIL images of any size.
        Returns {"scene"|"class"|"colour": list[str] of N predicted labels,
                 "scene_probs"|"class_probs"|"colour_probs": float32 [N,K] softmax over `self.scenes` etc.}"""
        o = self._forward(images)
        names = {"scene": self.scenes, "class": self.classes, "colour": self.colours}
        res: dict[str, Any] = {}
        for k, labels in names.items():
            res[k] = [labels[j] for j in o[k].argmax(1)]
            res[f"{k}_probs"] = o[k]
        return res

    def embed(self, images: Any) -> np.ndarray:
        """float32 [N,64] unit-norm identity embeddings."""
        return self._forward(images)["embed"]

    def reference_embedding(self, name: str, n_ref: int = 32, seed: int = REF_SEED) -> np.ndarray:
        """Unit-norm mean embedding [64] of `individuals.reference_renders(name, n_ref, seed)`."""
        key = (name, n_ref, seed)
        if key not in self._ref_cache:
            _, ind = _world()
            e = self.embed(np.asarray(ind.reference_renders(name, n_ref, seed), np.uint8)).mean(0)
            self._ref_cache[key] = e / max(float(np.linalg.norm(e)), 1e-8)
        return self._ref_cache[key]

    def identity_similarity(self, images: Any, name: str, n_ref: int = 32, seed: int = REF_SEED) -> np.ndarray:
        """float [N]: cosine similarity of each image's embedding to individual `name`'s reference embedding
        (1 = indistinguishable from the individual; other members of its class score clearly lower)."""
        return self.embed(images) @ self.reference_embedding(name, n_ref, seed)

    def prompt_alignment(self, images: Any, specs: Sequence[Any]) -> dict[str, Any]:
        """Accuracy of the predicted scene / class / colour against the intended Specs (one per image).
        Returns {"n", "scene", "class", "colour", "all" (all three right), "per_image": {attr: list[bool]}}."""
        p = self.predict(images)
        if len(specs) != len(p["scene"]):
            raise ValueError(f"{len(p['scene'])} images but {len(specs)} specs")
        per = {"scene": [a == s.scene for a, s in zip(p["scene"], specs)],
               "class": [a == s.cls for a, s in zip(p["class"], specs)],
               "colour": [a == s.colour for a, s in zip(p["colour"], specs)]}
        allok = [a and b and c for a, b, c in zip(per["scene"], per["class"], per["colour"])]
        mean = lambda v: float(np.mean(v)) if v else float("nan")  # noqa: E731
        return {"n": len(specs), **{k: mean(v) for k, v in per.items()}, "all": mean(allok), "per_image": per}


# --------------------------------------------------------------------------------------------- training


@dataclass
class TrainSettings:
    seed: int = 0
    steps: int = 900
    batch: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    n_generic: int = 24_000      # generic renders in the training pool
    n_per_individual: int = 900  # renders per individual
    n_generic_per_class: int = 0  # extra generic renders per class (hard negatives for the identity head)
    ident_weight: float = 1.0
    margin: float = 0.25          # CosFace margin
    scale: float = 16.0           # cosine-logit scale
    threads: int = 2
    widths: tuple = (24, 32, 64, 128)
    embed_dim: int = 64


def _augment(x, g):
    """Light augmentation of a batch [N,3,64,64] in [-1,1]: shift ±3 px, scale ±6 %, rotation ±4°, per-channel
    gain ±4 %, brightness ±5 %, sometimes a slight blur, Gaussian noise σ ≤ 0.04 (what a generator's
    imperfections look like). `g` is a torch.Generator, so augmentation is seeded too."""
    import math

    import torch
    from torch.nn import functional as F

    n = x.shape[0]
    r = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    ang = (r(n) * 2 - 1) * (4 * math.pi / 180)
    sc = 1 + (r(n) * 2 - 1) * 0.06
    tx, ty = (r(n) * 2 - 1) * (3 / 32), (r(n) * 2 - 1) * (3 / 32)
    theta = torch.stack([torch.stack([torch.cos(ang) / sc, -torch.sin(ang) / sc, tx], 1),
                         torch.stack([torch.sin(ang) / sc, torch.cos(ang) / sc, ty], 1)], 1)   # [N,2,3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=3)
    x = torch.where((r(n) < 0.3)[:, None, None, None], blurred, x)
    x = x * (1 + (r(n, 3, 1, 1) * 2 - 1) * 0.04) + (r(n, 1, 1, 1) * 2 - 1) * 0.1
    x = x + torch.randn(x.shape, generator=g) * (r(n, 1, 1, 1) * 0.04)
    return x.clamp(-1, 1)


def build_pool(s: TrainSettings, log=print) -> dict[str, np.ndarray]:
    """Render the training pool (seeded): generic renders over all combos + every individual at varied scenes."""
    world, ind = _world()
    names = identity_names()
    idx = {n: i for i, n in enumerate(names)}
    t = time.time()
    imgs, specs = render_generic(s.n_generic, seed=s.seed + 1)
    ident = [idx[f"generic {sp.cls}"] for sp in specs]
    parts, sp_all = [imgs], list(specs)
    for j, name in enumerate(sorted(ind.INDIVIDUALS)):
        a, sp = render_individual(name, s.n_per_individual, seed=s.seed * 1000 + 100 + j)
        parts.append(a)
        sp_all += sp
        ident += [idx[name]] * len(sp)
    if s.n_generic_per_class:
        for j, c in enumerate(world.CLASSES):
            a, sp = render_generic_class(c, s.n_generic_per_class, seed=s.seed * 1000 + 500 + j)
            parts.append(a)
            sp_all += sp
            ident += [idx[f"generic {c}"]] * len(sp)
    log(f"rendered {sum(len(p) for p in parts)} training images in {time.time() - t:.1f}s")
    return {
        "images": np.concatenate(parts),
        "scene": np.array([world.SCENES.index(sp.scene) for sp in sp_all]),
        "class": np.array([world.CLASSES.index(sp.cls) for sp in sp_all]),
        "colour": np.array([world.COLOURS.index(sp.colour) for sp in sp_all]),
        "ident": np.array(ident),
    }


def train(s: TrainSettings, log=print) -> tuple[Evaluator, dict]:
    """Seeded training on renders only. Returns the evaluator and a summary of the run."""
    import torch
    from torch.nn import functional as F

    world, _ = _world()
    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    t0 = time.time()
    pool = build_pool(s, log)
    t_render = time.time() - t0
    config = {"scenes": list(world.SCENES), "classes": list(world.CLASSES), "colours": list(world.COLOURS),
              "identities": identity_names(), "widths": list(s.widths), "embed_dim": s.embed_dim, "image": IMAGE,
              "ref_seed": REF_SEED}
    ev = Evaluator.build(config)
    net = ev.net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=s.steps, pct_start=0.15)
    g = torch.Generator().manual_seed(s.seed)
    rng = np.random.default_rng(s.seed + 7)
    n = len(pool["images"])
    labels = {k: torch.from_numpy(pool[k]).long() for k in ("scene", "class", "colour", "ident")}
    hist: list[dict] = []
    t1 = time.time()
    for step in range(s.steps):
        b = torch.from_numpy(rng.integers(0, n, s.batch))
        x = _augment(_tensor(pool["images"][b.numpy()]), g)                     # [B,3,64,64]
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
               "train_seconds": round(time.time() - t1, 1), "total_seconds": round(time.time() - t0, 1),
               "torch": torch.__version__, "threads": s.threads, "history": hist,
               "params": int(sum(p.numel() for p in net.parameters()))}
    return ev, summary


# --------------------------------------------------------------------------------------------- validation


def validate(ev: Evaluator, n_attr: int = 2400, n_pos: int = 100, n_neg_generic: int = 200,
             n_per_other: int = 100, log=print) -> dict:
    """Fresh renders (seeds never used in training): attribute accuracy over all combos (and the held-out combos
    alone), and per-individual ROC-AUC of `identity_similarity` for the individual's renders (positives) vs the
    other same-class individuals' renders and generic members of the class (negatives)."""
    world, ind = _world()
    t = time.time()
    imgs, specs = render_generic(n_attr, seed=VAL_ATTR_SEED)
    pa = ev.prompt_alignment(imgs, specs)
    held = [i for i, sp in enumerate(specs) if (sp.scene, sp.cls, sp.colour) in world.HELD_OUT]
    ph = ev.prompt_alignment(imgs[held], [specs[i] for i in held]) if held else None
    # per-value accuracy, to see which labels (if any) are confused
    pred = ev.predict(imgs)
    per_value: dict[str, dict[str, float]] = {}
    for k, attr in (("scene", "scene"), ("class", "cls"), ("colour", "colour")):
        vals = sorted({getattr(sp, attr) for sp in specs})
        per_value[k] = {v: round(float(np.mean([p == v for p, sp in zip(pred[k], specs) if getattr(sp, attr) == v])), 4)
                        for v in vals}
    attrs = {"n": pa["n"], **{k: round(pa[k], 4) for k in ("scene", "class", "colour", "all")},
             "held_out_combos": ({"n": ph["n"], **{k: round(ph[k], 4) for k in ("scene", "class", "colour", "all")}}
                                 if ph else None),
             "per_value": per_value}
    log(f"attributes: {json.dumps({k: attrs[k] for k in ('n', 'scene', 'class', 'colour', 'all')})}")
    # identity
    names = sorted(ind.INDIVIDUALS)
    fresh = {nm: render_individual(nm, n_pos, seed=VAL_ID_SEED + j)[0] for j, nm in enumerate(names)}
    generic = {c: render_generic_class(c, n_neg_generic, seed=VAL_ID_SEED + 500 + j)[0]
               for j, c in enumerate(world.CLASSES)}
    emb = {nm: ev.embed(a) for nm, a in fresh.items()}
    gemb = {c: ev.embed(a) for c, a in generic.items() if any(ind.INDIVIDUALS[nm].cls == c for nm in names)}
    per: dict[str, dict] = {}
    for nm in names:
        c = ind.INDIVIDUALS[nm].cls
        ref = ev.reference_embedding(nm)
        others = [o for o in names if o != nm and ind.INDIVIDUALS[o].cls == c]
        pos = emb[nm] @ ref
        neg_o = np.concatenate([emb[o] for o in others]) @ ref if others else np.zeros(0)
        neg_g = gemb[c] @ ref
        neg = np.concatenate([neg_o, neg_g])
        per[nm] = {"class": c, "auc": round(roc_auc(pos, neg), 4),
                   "auc_vs_individuals": round(roc_auc(pos, neg_o), 4) if len(neg_o) else None,
                   "auc_vs_generic": round(roc_auc(pos, neg_g), 4),
                   "mean_sim_pos": round(float(pos.mean()), 4), "mean_sim_neg": round(float(neg.mean()), 4),
                   "n_pos": int(len(pos)), "n_neg": int(len(neg)), "other_individuals": others}
    aucs = [v["auc"] for v in per.values()]
    ident = {"per_individual": per, "min_auc": min(aucs), "mean_auc": round(float(np.mean(aucs)), 4),
             "reference": {"n_ref": 32, "seed": REF_SEED}}
    log(f"identity: min AUC {ident['min_auc']}, mean {ident['mean_auc']}; "
        + ", ".join(f"{k}={v['auc']}" for k, v in per.items()))
    met = {"scene": attrs["scene"] >= TARGET_ATTR_ACC, "class": attrs["class"] >= TARGET_ATTR_ACC,
           "colour": attrs["colour"] >= TARGET_ATTR_ACC, "identity": ident["min_auc"] >= TARGET_ID_AUC}
    return {"attributes": attrs, "identity": ident,
            "targets": {"attribute_accuracy": TARGET_ATTR_ACC, "identity_auc": TARGET_ID_AUC, "met": met,
                        "all_met": all(met.values())},
            "seeds": {"attributes": VAL_ATTR_SEED, "identity": VAL_ID_SEED}, "seconds": round(time.time() - t, 1)}


# --------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cns_cli.demo.evaluator", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train, validate, write evaluator.safetensors + evaluator.json")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "data")
    tr.add_argument("--steps", type=int, default=TrainSettings.steps)
    tr.add_argument("--threads", type=int, default=TrainSettings.threads)
    tr.add_argument("--quick", action="store_true", help="a tiny smoke run (does not meet the targets)")
    va = sub.add_parser("validate", help="re-run validation of the packaged (or given) weights; print the report")
    va.add_argument("--weights", type=Path, default=None)
    va.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    if args.cmd == "train":
        s = TrainSettings(seed=args.seed, steps=args.steps, threads=args.threads)
        if args.quick:
            s = TrainSettings(seed=args.seed, steps=5, batch=16, n_generic=200, n_per_individual=10, threads=args.threads)
        ev, summary = train(s)
        report = {"format": FORMAT, "version": VERSION, "training": summary, "validation": validate(ev),
                  "weights": "evaluator.safetensors"}
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
    report = validate(ev)
    print(json.dumps(report, indent=1))
    return 0 if report["targets"]["all_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
