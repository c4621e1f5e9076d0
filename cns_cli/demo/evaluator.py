"""The closed-world evaluator: what CLIP-I / CLIP-T / DINO are for real images, for the procedural demo world.

A small CNN trained on renders of `cns_cli.demo.world` and `cns_cli.demo.individuals` only (never on a
model's outputs), so it is an independent measuring instrument for what a generator drew:

  * prompt alignment (the CLIP-T role): heads that read the scene, the object class and its colour, compared
    with the `Spec` a prompt asked for;
  * identity (the CLIP-I / DINO role): a 64-d L2-normalised embedding trained with a cosine-margin
    classifier over identities = every individual + one "generic" identity per class, so it learns what
    separates an individual from the other members of its class (spots, collars, patterns), not just the class.
    `identity_similarity` is the cosine similarity to the mean embedding of reference renders.

The weights ship as `cns_cli/data/evaluator.safetensors` (safetensors only, never pickle; the architecture and
the label vocabularies live in its metadata) with the validation report `cns_cli/data/evaluator.json`. An
evaluator measures one world (`Evaluator.world`, its config's "world"; 1 when absent): its identities are that
world's individuals, and its reference renders are drawn in it. This
module is the inference only; training and validation are a developer tool, `tools/train_evaluator.py`
in the repository (`train`, ≈ 7 min on 2 CPU threads; `validate` re-measures the packaged weights).
"""

from __future__ import annotations

import json
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


def to_tensor(arr: np.ndarray):
    """uint8 [N,64,64,3] -> float32 [N,3,64,64] in [-1,1], the network's input."""
    import torch

    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)  # [N,3,64,64] in [-1,1]


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

    @property
    def world(self) -> int:
        """The demo world it was trained on and measures (`stage.WORLDS`)."""
        return int(self.config.get("world", 1))

    def check_world(self, world: int) -> None:
        """ModelError (a one-line CLI error) unless this evaluator measures `world` (a model's, `world.model_world`)."""
        from ..errors import ModelError

        if world != self.world:  # tools/ is in a clone of the repository only: pip does not install it
            raise ModelError(f"the bundled evaluator scores demo world {self.world}, but the --base model is of world "
                             f"{world} (a model without a demo-world record in its training.json counts as world 1): "
                             "the demo and the benchmark run only on a model of the demo world, so leave out --base "
                             "to use the bundled one (to try your own model, use cns learn and cns generate)")

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
                o = self.net(to_tensor(arr[i: i + batch]))
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
        """Unit-norm mean embedding [64] of `individuals.reference_renders(name, n_ref, seed)` in its world."""
        key = (name, n_ref, seed)
        if key not in self._ref_cache:
            from .individuals import reference_renders

            e = self.embed(np.asarray(reference_renders(name, n_ref, seed, world=self.world), np.uint8)).mean(0)
            self._ref_cache[key] = e / max(float(np.linalg.norm(e)), 1e-8)
        return self._ref_cache[key]

    def identity_similarity(self, images: Any, name: str, n_ref: int = 32, seed: int = REF_SEED) -> np.ndarray:
        """float [N]: cosine similarity of each image's embedding to individual `name`'s reference embedding
        (1 = indistinguishable from the individual; other members of its class score clearly lower)."""
        return self.embed(images) @ self.reference_embedding(name, n_ref, seed)

    def nearest_individual(self, images: Any) -> list[str]:
        """Per image, the individual (of every one in the world) whose reference embedding is nearest to it."""
        from .individuals import individuals_of

        names = list(individuals_of(self.world))
        refs = np.stack([self.reference_embedding(n) for n in names])  # [12, 64]
        return [names[j] for j in (self.embed(images) @ refs.T).argmax(1)]

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
