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
Training and validation (`train`, `validate`, ...) live in `cns_cli.demo.evaluator_training`.
"""

from __future__ import annotations

import argparse
import json
import sys
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
FINGERPRINT_SEED = 4_242  # renders hashed by world_fingerprint


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
    """sha256 over what the world draws: the label lists, one seeded render of every scene × class × colour
    triple and four of every individual. The evaluator measures the world it was trained on; `validate`
    says so when the renders have changed since (refactoring the drawing code without changing a pixel
    keeps the fingerprint)."""
    import hashlib
    from itertools import product

    world, ind = _world()
    h = hashlib.sha256()
    labels = [world.SCENES, world.CLASSES, world.COLOURS, world.SIZES, world.POSITIONS, sorted(ind.INDIVIDUALS)]
    h.update(json.dumps(labels).encode())
    for k, (scene, cls, colour) in enumerate(product(world.SCENES, world.CLASSES, world.COLOURS)):
        rng = np.random.default_rng((FINGERPRINT_SEED, k))
        spec = world.Spec(scene, cls, colour, world.SIZES[k % len(world.SIZES)], world.POSITIONS[k % len(world.POSITIONS)])
        h.update(world.render_array(spec, rng)[0].tobytes())
    for name in sorted(ind.INDIVIDUALS):
        h.update(ind.reference_renders(name, 4, seed=FINGERPRINT_SEED).tobytes())
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


# --------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    from .evaluator_training import TrainSettings, train, validate

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
