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
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IMAGE = 64
FORMAT = "cns-demo-evaluator"
META_KEY = "cns_demo_evaluator"  # the safetensors metadata key holding {"format", "version", "config"}
VERSION = 1
REF_SEED = 12345  # default seed of the reference renders an identity is compared with
# Validation seeds: far from every seed training draws from (training uses seed + small offsets).
VAL_ATTR_SEED = 900_001
VAL_ID_SEED = 900_101
TARGET_ATTR_ACC = 0.95
TARGET_ID_AUC = 0.98


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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
    """uint8 [N,64,64,3] from: an array [N,H,W,3] or [H,W,3] (uint8 0..255, or float in 0..1 as diffusers'
    output_type="np" gives), a PIL image, or a list of PIL images / arrays, of any size (resized to 64x64 with
    Lanczos, converted to RGB)."""
    from PIL import Image

    def as_uint8(a: np.ndarray) -> np.ndarray:
        if np.issubdtype(a.dtype, np.floating):
            return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
        return a.astype(np.uint8, copy=False)

    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, np.ndarray):
        images = as_uint8(images[None] if images.ndim == 3 else images)
        if images.shape[1:] == (IMAGE, IMAGE, 3):
            return np.ascontiguousarray(images)
        images = list(images)
    out = np.empty((len(images), IMAGE, IMAGE, 3), np.uint8)
    for i, im in enumerate(images):
        if not isinstance(im, Image.Image):
            im = Image.fromarray(as_uint8(np.asarray(im)))
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


def world_fingerprint() -> str:
    """sha256 over the sources of `world.py` and `individuals.py`: the evaluator measures the world it was trained
    on; `validate` says so when the world has changed since."""
    import hashlib

    world, ind = _world()
    h = hashlib.sha256()
    for mod in (world, ind):
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()


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
        scene, colour, size, pos = (o[int(rng.integers(len(o)))] for o in (world.SCENES, world.COLOURS, world.SIZES,
                                                                           world.POSITIONS))
        spec = world.Spec(scene, cls, colour, size, pos)
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
    def build(cls, config: dict) -> Evaluator:
        net = _net_cls()(len(config["scenes"]), len(config["classes"]), len(config["colours"]),
                         len(config["identities"]), tuple(config["widths"]), config["embed_dim"])
        return cls(net.eval(), dict(config))

    @classmethod
    def load(cls, path: str | Path | None = None) -> Evaluator:
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
            meta = json.loads((f.metadata() or {}).get(META_KEY, "{}"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} file (no {META_KEY!r} metadata of that format)")
        if meta.get("version") != VERSION:
            raise ValueError(f"{path}: {FORMAT} version {meta.get('version')}, this code reads version {VERSION}")
        ev = cls.build(meta["config"])
        ev.net.load_state_dict(load_file(str(path)))
        ev.net.eval()
        return ev

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.net.state_dict().items()}
        # one metadata key: safetensors writes metadata in hash order, so several keys would make the bytes vary
        meta = json.dumps({"format": FORMAT, "version": VERSION, "config": self.config}, sort_keys=True)
        save_file(state, str(path), metadata={META_KEY: meta})
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
                for k, acc in outs.items():
                    acc.append((o[k] if k == "embed" else o[k].softmax(1)).numpy())
        dims = {"scene": len(self.scenes), "class": len(self.classes), "colour": len(self.colours),
                "embed": self.config["embed_dim"]}
        return {k: (np.concatenate(v) if v else np.zeros((0, dims[k]), np.float32)) for k, v in outs.items()}

    def predict(self, images: Any) -> dict[str, Any]:
        """images: see `to_array` (uint8 [N,64,64,3], floats in 0..1, or PIL images of any size).
        An individual's expected colour label is `Individual.colour` (the COLOURS word nearest its main colour).
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
        mean = lambda v: float(np.mean(v)) if v else float("nan")
        return {"n": len(specs), **{k: mean(v) for k, v in per.items()}, "all": mean(allok), "per_image": per}


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
    log(f"rendered {sum(len(p) for p in parts)} training images in {time.time() - t:.1f}s")
    return {
        "images": np.concatenate(parts),
        "scene": np.array([world.SCENES.index(sp.scene) for sp in sp_all]),
        "class": np.array([world.CLASSES.index(sp.cls) for sp in sp_all]),
        "colour": np.array([world.COLOURS.index(sp.colour) for sp in sp_all]),
        "ident": np.array(ident),
    }


def train(s: TrainSettings, log=_log) -> tuple[Evaluator, dict]:
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
              "ref_seed": REF_SEED, "world_sha256": world_fingerprint()}
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
    _, ind = _world()
    names = sorted(fresh)
    emb = {nm: ev.embed(a) for nm, a in fresh.items()}                 # name -> [n_pos,64]
    gemb = {c: ev.embed(a) for c, a in generic.items()}               # class -> [n_gen,64]
    per: dict[str, dict] = {}
    for nm in names:
        c = ind.INDIVIDUALS[nm].cls
        ref = ev.reference_embedding(nm)                               # [64]; references are never degraded
        others = [o for o in names if o != nm and ind.INDIVIDUALS[o].cls == c]
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


def validate(ev: Evaluator, n_attr: int = 2400, n_pos: int = 100, n_neg_generic: int = 200,
             n_robust: int = 40, log=_log) -> dict:
    """Fresh renders (seeds never used in training): attribute accuracy over all combos (and the held-out combos
    alone), and per-individual ROC-AUC of `identity_similarity` for the individual's renders (positives) vs the
    other same-class individuals' renders and generic members of the class (negatives). Then the same measures on
    degraded copies of part of those renders (blur / down-up / noise): informative, no targets."""
    world, ind = _world()
    t = time.time()
    imgs, specs = render_generic(n_attr, seed=VAL_ATTR_SEED)
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
    keys = ("scene", "class", "colour", "all")
    attrs = {"n": pa["n"], **{k: round(pa[k], 4) for k in keys},
             "held_out_combos": ({"n": ph["n"], **{k: round(ph[k], 4) for k in keys}} if ph else None),
             "per_value": per_value}
    log(f"attributes: {json.dumps({k: attrs[k] for k in ('n', *keys)})}")
    # identity
    names = sorted(ind.INDIVIDUALS)
    fresh = {nm: render_individual(nm, n_pos, seed=VAL_ID_SEED + j)[0] for j, nm in enumerate(names)}
    classes = sorted({ind.INDIVIDUALS[nm].cls for nm in names}, key=world.CLASSES.index)
    generic = {c: render_generic_class(c, n_neg_generic, seed=VAL_ID_SEED + 500 + world.CLASSES.index(c))[0]
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
    met = {"scene": attrs["scene"] >= TARGET_ATTR_ACC, "class": attrs["class"] >= TARGET_ATTR_ACC,
           "colour": attrs["colour"] >= TARGET_ATTR_ACC, "identity": ident["min_auc"] >= TARGET_ID_AUC}
    return {"attributes": attrs, "identity": ident, "robustness": robust,
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
    if ev.config.get("world_sha256") != world_fingerprint():
        _log("note: world.py / individuals.py changed since these weights were trained; retrain with `train`")
    report = validate(ev)
    report["world_matches_training"] = ev.config.get("world_sha256") == world_fingerprint()
    print(json.dumps(report, indent=1))
    return 0 if report["targets"]["all_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
