"""Training and validation of the closed-world evaluator (`cns_cli.demo.evaluator`): the seeded training pool of
renders, the training loop, and the validation report (attribute accuracy, identity ROC-AUC, robustness).

    python -m cns_cli.demo.evaluator train [--seed 0] [--out cns_cli/data]   # ≈ 5 CPU-minutes on 2 threads
    python -m cns_cli.demo.evaluator validate [--weights PATH]              # re-measure the packaged weights
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from .evaluator import (
    IMAGE,
    REF_SEED,
    Evaluator,
    _log,
    _tensor,
    _world,
    identity_names,
    render_generic_class,
    render_individual,
    roc_auc,
    world_fingerprint,
)

# Validation seeds: far from every seed training draws from (training uses seed + small offsets).
VAL_ATTR_SEED = 900_001
VAL_ID_SEED = 900_101
TARGET_ATTR_ACC = 0.95
TARGET_ID_AUC = 0.98


def render_generic(n: int, seed: int) -> tuple[np.ndarray, list]:
    """`n` generic renders over ALL scene x class x colour combinations (held-out ones included: the evaluator is
    a measuring instrument, not the generator)."""
    world, _ = _world()
    arr, specs, _ = world.render_dataset(n, seed=seed, held_out=None)
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
