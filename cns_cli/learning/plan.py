"""Step 1 of a learn: load the model at the bank's current state and decide what this concept trains.

`open_session` loads the base with every earlier concept applied, the concept's images, latents and prompts,
and adds the new token (to every text encoder: SDXL has two); `make_plan` chooses the basis slice (CNS step 4),
the general neurons (step 2, cached per base in the bank) and the concept neurons (steps 1 and 3). Every family
runs the same steps; `Session.conditioner` gives the text states the UNet of that family reads (model/text.py).
Shapes: latents (N, C, h, w); text states (B, 77, d); rows per layer int32 (n,).
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..bank import Bank, Revision
from ..bank.models import BaseModelPointer, Slice, trained_parameters
from ..bank.names import token_for, vector_tokens
from ..bank.store import encode_object
from ..errors import UsageError
from ..reporting import Reporter
from .commit import delta_tensors, embedding_tensors
from .results import Plan

GENERAL_CACHE_VERSION = "activation-v1"


@dataclass
class Session:
    """The loaded model and data of one learn. Not a result: `make_plan` and `fit` read it, `fit` trains in it."""

    pipe: object
    device: str
    dtype: torch.dtype
    base: BaseModelPointer
    model_dir: Path | None  # where the base may keep its own calibration prompts
    earlier: list[str]  # concepts of the parent kept while learning this one (applied to `pipe`)
    images: object  # images.ImageSet
    prompts: list[str]
    latents: torch.Tensor
    scheduler: object  # DDPM with the pipeline's noise schedule: the forward process of training
    gen: torch.Generator  # every random draw of scoring and training, in that order
    token_ids: list[list[int]]  # per tokenizer (pipeline order) the ids of the new token's k tokens, in row order
    token_init: list[torch.Tensor]  # per text encoder (k, e_i): where the k vectors start (the class word's mean embedding)
    conditioner: object  # model.text.TextConditioner: texts -> what the UNet is conditioned with
    share: object = None  # model.share.BatchShare: this rank's part of every batch under a launcher; None in one process
    calib: torch.Tensor | None = None  # text states of the calibration prompts, encoded once (plan and fit)
    cache: dict = field(default_factory=dict)  # what plan and fit share: the protected sets' moments
    seconds: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def amp(self):
        from ..model.runtime import autocast

        return autocast(self.device, self.dtype)


def open_session(spec, bank: Bank | None, parent: Revision | None, name: str, class_word: str, images_dir: Path,
                 cfg, reporter: Reporter) -> Session:
    """The base at W_{t-1} (every earlier concept applied in fp32) on the configured device and precision, the
    concept's images and latents, and the new token: `cfg.vectors` tokens `<name>`, `<name>_1`, … in every
    tokenizer, each vector started at the class word's mean embedding."""
    from ..distributed import device_of
    from ..images import load_images
    from ..model import loading, runtime, text, tokens, train
    from ..model.share import BatchShare
    from ..prompts import training_prompt

    kind = runtime.resolve_device(cfg.device)
    dtype = runtime.resolve_precision(cfg.precision, kind)
    device = device_of(kind)  # under a launcher a rank's own GPU ("cuda:3"); else the kind itself
    reporter.phase(f"loading the base model ({runtime.precision_name(dtype)} on {device})")
    earlier = [n for n in (parent.concepts if parent else {}) if n != name]
    if parent is not None:  # the one way a personalised pipeline is built (spec is the parent's base)
        from ..model.personalised import load_personalised

        pipe, base = load_personalised(bank, parent, earlier, device, dtype, spec=spec), parent.base
    else:
        pipe = loading.load_pipeline(spec)
        base = loading.describe_base(spec, pipe)  # fingerprinted in float32, before it is placed
        loading.place(pipe, device, dtype)
    if cfg.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
        pipe.unet.train()  # older diffusers checkpoint only in training mode; SD's UNet has no active dropout
    resolution = cfg.resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    if resolution % pipe.vae_scale_factor:
        raise UsageError(f"--resolution must be a multiple of {pipe.vae_scale_factor} for this model, got {resolution}")
    images = load_images(images_dir, resolution)
    pairs = text.text_pairs(pipe)
    init = [tokens.class_word_start(tok, enc, class_word, cfg.vectors) for tok, enc in pairs]
    ids = tokens.add_tokens_everywhere(pairs, [(token_for(name), init)])
    from diffusers import DDPMScheduler

    return Session(
        pipe=pipe, device=device, dtype=dtype, base=base, model_dir=loading.model_dir(spec), earlier=earlier,
        images=images, prompts=[training_prompt(name, class_word, c) for c in images.captions],
        latents=train.encode_latents(pipe.vae, images.pixels, device),
        scheduler=DDPMScheduler.from_config(pipe.scheduler.config), gen=torch.Generator().manual_seed(cfg.seed),
        token_ids=ids, token_init=init, conditioner=text.TextConditioner(pipe, resolution),
        share=BatchShare.of_this_rank(),
    )


def make_plan(s: Session, bank: Bank | None, parent: Revision | None, name: str, class_word: str, cfg,
              reporter: Reporter, new_basis: np.ndarray | None = None) -> Plan:
    """CNS steps 1-4 for this concept. `new_basis` replaces the seeded Q when this learn creates the bank's
    basis (an input for experiments such as benchmarks/row_training_sweep.py; default: the seeded Q)."""
    from .protection import calibration_states

    q, basis, slice_ = _slice(s, bank, parent, cfg, reporter, new_basis)
    calib = calibration_states(s)
    general_rows, key, cached = _general_rows(s, bank, parent, calib, cfg, reporter)
    rows, budget_rows, unet_params = _concept_rows(s, general_rows, name, cfg, reporter)
    plan = Plan(name=name, class_word=class_word, base=s.base, q=q, basis=basis, slice=slice_, rows=rows,
                taken=_taken_bases(s, bank, parent, q) if slice_.own else np.zeros((q.shape[0], 0), np.float32),
                general_rows=general_rows, general_key=key, general_cached=cached, training=cfg.record())
    doc = _plan_doc(plan, s, budget_rows, unet_params, cfg.rank)
    doc["protection"] = _protection_doc(s, parent, plan, cfg)
    return replace(plan, doc=doc)


def _protection_doc(s: Session, parent, plan: Plan, cfg) -> dict:
    """The drift budget and what decides whether the rows can move (learning/protection.py), before training."""
    from ..model.loading import kv_layers
    from .protection import before_training, slice_basis

    layers = kv_layers(s.pipe.unet)
    b = slice_basis(s, parent, plan).to(s.device)  # a concept slice: as it would be chosen now, before the warm-up
    weights = {n: layer.weight for n, layer in layers.items() if n in plan.rows}  # fit's order: energies are shared
    doc = before_training(s, parent, plan.class_word, weights, b)
    return {"max_drift": cfg.max_drift, "reg_lambda": cfg.reg_lambda, "slice": cfg.slice, **doc}


def _slice(s: Session, bank, parent, cfg, reporter: Reporter, new_basis):
    """CNS step 4: the bank's basis Q (made now by the first learn) and this concept's slice: the first free block
    of `rank` columns of Q (shared), or, for a concept slice (format 1.3), its own basis chosen in `fit` after the
    token's warm-up (start None)."""
    from ..method.basis import BASIS_SEED, allocate_slice, orthogonal_basis

    rank = cfg.rank
    if parent is not None and parent.basis is not None:
        q, basis = bank.read_object(parent.basis.object)["Q"], parent.basis
    else:
        q = new_basis if new_basis is not None else orthogonal_basis(s.base.text_dim, BASIS_SEED)
        basis = None
    dim = q.shape[0]
    if rank > dim:
        raise UsageError(f"--rank {rank} is larger than the text width {dim}; use a smaller rank")
    if cfg.slice == "concept":
        left = dim - sum(parent.concepts[n].slice.rank for n in s.earlier) if parent else dim
        if left < rank:
            raise UsageError(f"only {max(left, 0)} of the {dim} text directions are left outside the earlier concepts' "
                             f"slices; learn with --rank {max(left, 1)} or --slice shared (which overlaps them)")
        return np.asarray(q, dtype=np.float32), basis, Slice(start=None, rank=rank)
    used = [(parent.concepts[n].slice.start, parent.concepts[n].slice.rank) for n in s.earlier
            if not parent.concepts[n].slice.own]
    start, full = allocate_slice(used, dim, rank)
    if full:
        reporter.warn(f"basis capacity reached ({dim} columns, {len(used)} concepts): this concept's slice "
                      "overlaps earlier ones, so their deltas are no longer orthogonal; consider a smaller --rank")
    return np.asarray(q, dtype=np.float32), basis, Slice(start=start, rank=rank)


def _taken_bases(s: Session, bank, parent, q: np.ndarray) -> np.ndarray:
    """(d, k): the earlier concepts' B side by side (their own bases or their columns of Q): what a concept slice
    must stay orthogonal to (read only for one: every earlier delta object is opened)."""
    from ..bank.delta import basis_of

    parts = [basis_of(bank.read_object(parent.concepts[n].delta), parent.concepts[n], q) for n in s.earlier]
    return np.concatenate(parts, axis=1) if parts else np.zeros((q.shape[0], 0), np.float32)


def _general_rows(s: Session, bank, parent, calib, cfg, reporter: Reporter):
    """CNS step 2: the general neurons of this base, from the bank's cache when made with the same settings."""
    from ..model.text import general_neuron_masks
    from ..prompts import calibration_id

    key = {"method": GENERAL_CACHE_VERSION, "calibration": calibration_id(s.model_dir),
           "top_fraction": repr(cfg.general_top_fraction), "min_share": repr(cfg.general_min_share)}
    cached = parent.caches.general_neurons if parent is not None else None
    if cached is not None and all(bank.read_object_metadata(cached).get(k) == v for k, v in key.items()):
        return bank.read_object(cached), key, True
    reporter.phase("finding general neurons (once per base model)")
    masks = general_neuron_masks(s.pipe.unet, calib, cfg.general_top_fraction, cfg.general_min_share, s.share)
    return {n: np.flatnonzero(m.numpy()).astype(np.int32) for n, m in masks.items()}, key, False


def _concept_rows(s: Session, general_rows, name: str, cfg, reporter: Reporter):
    """CNS steps 1 and 3: the highest-attribution rows that are not general, at most the budget; or, for the
    `random` ablation, as many non-general rows drawn at random. Returns (layer -> int32 rows, budget, params)."""
    from ..method.select import budget_in_rows, concept_neurons, random_neurons
    from ..model import loading, train

    layers = loading.kv_layers(s.pipe.unet)
    general = {n: _mask(general_rows.get(n) if cfg.remove_general else None, layer.out_features)
               for n, layer in layers.items()}
    unet_params = sum(p.numel() for p in s.pipe.unet.parameters())
    budget_rows = budget_in_rows(cfg.budget, unet_params, s.base.text_dim)
    t0 = time.perf_counter()
    if cfg.selection == "random":  # ablation: no scoring pass at all
        # seeded per concept name too: one --seed must not give every concept the same rows
        stream = torch.Generator().manual_seed((cfg.seed * 1_000_003 + zlib.crc32(name.encode())) % 2**64)
        rows = random_neurons(general, budget_rows, stream)
    else:
        reporter.phase(f"scoring neurons on {len(s.prompts)} images ({cfg.score_steps} batches)")
        scores = train.score_rows(s.pipe, s.scheduler, s.latents, s.prompts, cfg.score_steps, cfg.batch_size,
                                  s.gen, s.conditioner, s.amp, s.share)
        rows = concept_neurons(scores, general, budget_rows)
    s.seconds["scoring"] = time.perf_counter() - t0 if cfg.selection != "random" else 0.0
    picked = {n: r.cpu().numpy().astype(np.int32) for n, r in rows.items() if r.numel()}
    return picked, budget_rows, unet_params


def _mask(rows, size: int) -> torch.Tensor:
    m = torch.zeros(size, dtype=torch.bool)
    if rows is not None and len(rows):
        m[torch.as_tensor(rows, dtype=torch.long)] = True
    return m


def _plan_doc(plan: Plan, s: Session, budget_rows: int, unet_params: int, rank: int) -> dict:
    """What would be stored; sizes are exact (the objects are encoded, with zero coefficients)."""
    per_layer = {n: int(len(r)) for n, r in plan.rows.items()}
    zeros = {n: np.zeros((k, rank), np.float32) for n, k in per_layer.items()}
    own = np.zeros((s.base.text_dim, rank), np.float32) if plan.slice.own else None
    delta_bytes = len(encode_object(delta_tensors(plan.rows, zeros, own), "delta"))
    k = plan.training["vectors"]
    emb_bytes = len(encode_object(embedding_tensors([np.zeros((k, w), np.float32) for w in s.base.embedding_widths]),
                                  "embedding"))
    n_rows = sum(per_layer.values())
    return {
        "concept": plan.name, "token": token_for(plan.name), "vectors": k,
        "tokens": vector_tokens(token_for(plan.name), k), "class_word": plan.class_word,
        "images": [str(p) for p in s.images.files],
        "skipped": [{"file": str(p), "reason": why} for p, why in s.images.skipped],
        "neurons": n_rows, "neurons_per_layer": per_layer, "budget_rows": budget_rows,
        "general_neurons": int(sum(len(r) for r in plan.general_rows.values())) if plan.training["remove_general"] else 0,
        "calibration": plan.general_key["calibration"],
        "slice": {"start": plan.slice.start, "rank": plan.slice.rank, "own_basis": plan.slice.own},
        "parameters_trained": trained_parameters(n_rows, rank, k * sum(s.base.embedding_widths)),
        "share_of_unet": (n_rows * s.base.text_dim) / unet_params,
        "bytes_to_store": delta_bytes + emb_bytes,
    }
