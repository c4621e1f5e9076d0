"""`cns learn`: teach the bank's model one new concept (CNS steps 1-6), then commit it atomically.

The writer lock is held for the whole run on an existing bank, so two learns cannot interleave and a
second writer is told at once. Nothing is written before training ends: Ctrl-C or a crash commits nothing.
A missing bank is created at the end, with the learn as its revision 1.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import DEFAULT_BASE
from .bank import Bank, Basis, Concept, Operation, Revision
from .bank.models import Caches, Neurons, Slice, trained_parameters
from .bank.names import check_class_word, check_concept_name, token_for
from .bank.store import encode_object
from .errors import ConceptError, UsageError
from .reporting import NullReporter, Reporter

GENERAL_CACHE_VERSION = "activation-v1"
SELECTIONS = ("attribution", "random")


@dataclass(frozen=True)
class LearnConfig:
    """Every knob of the method, recorded in the revision so a result can be reproduced or ablated."""

    steps: int = 400  # optimiser steps
    lr: float = 1e-3  # AdamW lr of the coefficients A (rows x rank per layer)
    # AdamW lr of the token vector. 1e-3, not TI's usual 5e-3: token embeddings are ~0.02 per dimension (SD's and the
    # demo model's), and on the demo model 5e-3 pulled the token off its class (identity of <rex> 0.149 -> 0.275,
    # <fedora> 0.136 -> 0.287 at 1e-3; 5e-4 and 2e-3 both worse: benchmarks/token_lr_sweep.py, README "Benchmark").
    lr_token: float = 1e-3
    rank: int = 4  # basis slice width r: capacity is text_dim / r concepts before slices overlap
    budget: float = 0.0013  # share of UNet parameters a concept may train (paper: ≈0.13 %)
    reg_lambda: float = 1.0  # weight of the self-regularisation (K/V drift on protected prompts)
    batch_size: int = 1
    resolution: int | None = None  # default: the model's native size (unet sample_size x vae factor)
    score_steps: int = 16  # batches of |W ⊙ ∂L/∂W| accumulated to find the base neurons
    general_top_fraction: float = 0.10  # per prompt, a row is "active" in its layer's top 10 %
    general_min_share: float = 0.50  # ... and general if active for ≥ 50 % of calibration prompts
    # Ablations (cns bench): "random" takes the same number of rows uniformly at random (seeded) instead of the
    # highest-attribution ones; remove_general=False keeps general neurons eligible (skips CNS step 3's subtraction).
    selection: str = "attribution"
    remove_general: bool = True
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # fp32 on CPU; bf16 (fp16) autocast on a GPU, trainables kept in fp32
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, slower

    def __post_init__(self) -> None:
        def need(ok: bool, flag: str, what: str, value) -> None:
            if not ok:
                raise UsageError(f"--{flag} must be {what}, got {value}")

        for flag, value in (("lr", self.lr), ("lr-token", self.lr_token), ("budget", self.budget),
                            ("reg-lambda", self.reg_lambda), ("general-top-fraction", self.general_top_fraction),
                            ("general-min-share", self.general_min_share)):
            need(isinstance(value, (int, float)) and math.isfinite(value), flag, "a finite number", value)
        need(self.steps >= 1, "steps", "at least 1", self.steps)
        need(self.lr > 0, "lr", "positive", self.lr)
        need(self.lr_token >= 0, "lr-token", "0 or more", self.lr_token)
        need(self.rank >= 1, "rank", "at least 1", self.rank)
        need(0 < self.budget <= 1, "budget", "in (0, 1]", self.budget)
        need(self.reg_lambda >= 0, "reg-lambda", "0 or more", self.reg_lambda)
        need(self.batch_size >= 1, "batch-size", "at least 1", self.batch_size)
        # the VAE downsamples by 8 (every SD family): other sizes would be cropped silently by the encoder
        need(self.resolution is None or (self.resolution >= 8 and self.resolution % 8 == 0), "resolution",
             "a positive multiple of 8 (the VAE's downsampling factor)", self.resolution)
        need(self.score_steps >= 1, "score-steps", "at least 1", self.score_steps)
        need(0 < self.general_top_fraction <= 1, "general-top-fraction", "in (0, 1]", self.general_top_fraction)
        need(0 < self.general_min_share <= 1, "general-min-share", "in (0, 1]", self.general_min_share)
        need(self.selection in SELECTIONS, "selection", " or ".join(SELECTIONS), self.selection)
        need(0 <= self.seed < 2**64, "seed", "between 0 and 2^64 - 1 (a torch generator seed)", self.seed)

    def record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("device", "precision")}


@dataclass
class LearnOutcome:
    """What a learn (or its dry run) found and did; `revision` is None for a dry run."""

    name: str
    plan: dict
    revision: int | None = None
    stats: dict = field(default_factory=dict)


def learn(bank_path: Path, name: str, images_dir: Path, *, class_word: str | None = None, base: str | None = None,
          config: LearnConfig = LearnConfig(), replace: bool = False, dry_run: bool = False,
          argv: list[str] | None = None, reporter: Reporter = NullReporter()) -> LearnOutcome:
    """`base` names the model of a new bank (default DEFAULT_BASE); for an existing bank it may only repeat
    the bank's own base. Every input is checked before the model loads (minutes on SD 1.5)."""
    from .images import load_images
    from .model.loading import resolve_base

    check_concept_name(name)
    if class_word is None:
        reporter.warn(f"no --class given, so the class word is {name!r}. The class word is what the model already "
                      f"knows this concept as (dog, hat, person): <{name}> starts from it and prompts say it after the "
                      "token; pass --class WORD if the name is not such a word")
    class_word = check_class_word(class_word if class_word is not None else name)
    load_images(Path(images_dir), 64, warn=False)  # fail fast on the folder, before a model load of many seconds
    root = Path(bank_path)
    if not (root / "HEAD").exists():
        Bank.check_creatable(root)  # a file or a folder of other things: say so now, not after training
        spec = resolve_base(base or DEFAULT_BASE)
        run = _Run(None, None, spec, name, class_word, Path(images_dir), config, reporter)
        outcome = run.execute(dry_run)
        if dry_run:
            return outcome
        bank = Bank.create(root, run.base_pointer, argv=["cns", "init", "--base", base or DEFAULT_BASE])
        with bank.transaction() as tx:
            outcome.revision = run.commit(tx, argv).number
        return outcome
    bank = Bank.open(root)
    if base is not None:
        _check_same_base(bank.head().base, resolve_base(base), base)
    if dry_run:
        parent = bank.head()
        _check_name_free(parent, name, replace)
        return _Run(bank, parent, None, name, class_word, Path(images_dir), config, reporter).execute(True)
    with bank.transaction() as tx:
        if tx.stale_pid:
            reporter.warn(f"took over the lock of process {tx.stale_pid}, which is gone")
        _check_name_free(tx.parent, name, replace)
        run = _Run(bank, tx.parent, None, name, class_word, Path(images_dir), config, reporter)
        outcome = run.execute(False)
        outcome.revision = run.commit(tx, argv).number
    return outcome


def _check_same_base(pointer, spec, typed: str) -> None:
    """A bank has one base model; a --base naming another one is a mistake, never silently ignored."""
    if (spec.kind, spec.location, spec.revision) != (pointer.kind, pointer.location, pointer.revision):
        raise UsageError(f"this bank is built on {pointer.location}; --base {typed} names another model (a bank "
                         "keeps one base): leave out --base, or pass --bank NEW_PATH to start a bank on it")


def _check_name_free(rev: Revision, name: str, replace: bool) -> None:
    if name in rev.concepts and not replace:
        raise ConceptError(f"concept {name!r} already exists (learned in revision {rev.concepts[name].learned_in}); "
                           "pass --replace to learn it again, or choose another name")


class _Run:
    """One learn: holds the loaded pipeline and the results between `execute` and `commit`."""

    def __init__(self, bank, parent, spec, name, class_word, images_dir, config: LearnConfig, reporter: Reporter):
        self.bank, self.parent, self.spec = bank, parent, spec
        self.name, self.class_word, self.images_dir = name, class_word, images_dir
        self.cfg, self.reporter = config, reporter

    # -- the method ---------------------------------------------------------------------------------

    def execute(self, dry_run: bool) -> LearnOutcome:
        import torch

        from .images import load_images
        from .method.select import budget_in_rows, concept_neurons, random_neurons
        from .model import kv, loading, runtime, text, tokens, train
        from .prompts import calibration_prompts, training_prompt

        cfg, t0 = self.cfg, time.perf_counter()
        device = runtime.resolve_device(cfg.device)
        dtype = runtime.resolve_precision(cfg.precision, device)
        amp = lambda: runtime.autocast(device, dtype)  # noqa: E731 - a fresh context per pass
        pipe, earlier = self._load(device, dtype)
        resolution = cfg.resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
        if resolution % pipe.vae_scale_factor:
            raise UsageError(f"--resolution must be a multiple of {pipe.vae_scale_factor} for this model, got {resolution}")
        images = load_images(self.images_dir, resolution)
        text_dim = self.base_pointer.text_dim

        # Step 4 first (cheap): the basis slice this concept reads the text states through.
        self._choose_slice(earlier)
        b = self.q[:, self.slice.start : self.slice.start + cfg.rank].to(device)

        # The new token starts at its class word's embedding.
        token = token_for(self.name)
        init = tokens.class_word_vector(pipe.tokenizer, pipe.text_encoder, self.class_word)
        (token_id,) = tokens.add_tokens(pipe.tokenizer, pipe.text_encoder, [(token, init)])
        prompts = [training_prompt(self.name, self.class_word, c) for c in images.captions]
        latents = train.encode_latents(pipe.vae, images.pixels, device)
        scheduler = _training_scheduler(pipe)
        gen = torch.Generator().manual_seed(cfg.seed)

        # Steps 1-3: base neurons from the concept's images, minus the (cached) general neurons.
        self.reporter.phase("encoding the calibration prompts")
        with torch.no_grad(), amp():
            calib = text.encode(pipe.tokenizer, pipe.text_encoder, calibration_prompts(self.model_dir)).float()
        self.general_rows = self._general_rows(pipe, calib)
        layers = loading.kv_layers(pipe.unet)
        general = {n: _mask(self.general_rows.get(n) if cfg.remove_general else None, layer.out_features)
                   for n, layer in layers.items()}
        unet_params = sum(p.numel() for p in pipe.unet.parameters())
        budget_rows = budget_in_rows(cfg.budget, unet_params, text_dim)
        score_seconds = 0.0
        if cfg.selection == "random":  # ablation: no scoring pass at all
            # seeded per concept name too: one --seed must not give every concept the same rows
            stream = torch.Generator().manual_seed((cfg.seed * 1_000_003 + zlib.crc32(self.name.encode())) % 2**64)
            self.rows = random_neurons(general, budget_rows, stream)
        else:
            self.reporter.phase(f"scoring neurons on {len(prompts)} images ({cfg.score_steps} batches)")
            t_score = time.perf_counter()
            scores = train.score_rows(pipe, scheduler, latents, prompts, cfg.score_steps, cfg.batch_size, gen, amp)
            score_seconds = time.perf_counter() - t_score
            self.rows = concept_neurons(scores, general, budget_rows)
        plan = self._plan(images, budget_rows, unet_params, general)
        if dry_run:
            return LearnOutcome(self.name, plan)

        # Steps 5-6: train A (rows x r per layer) and the token vector, protected by the regulariser.
        gram = self._protection(pipe, calib, earlier, b, amp)
        wrappers = kv.attach_trainable(pipe.unet, self.rows, b)
        token_wrapper = tokens.attach_trainable_token(pipe.text_encoder, token_id, init)
        self.reporter.start(cfg.steps)
        t_train = time.perf_counter()
        try:
            losses = train.train(pipe, scheduler, latents, prompts, wrappers, token_wrapper, steps=cfg.steps,
                                 batch=cfg.batch_size, lr=cfg.lr, lr_token=cfg.lr_token, reg_lambda=cfg.reg_lambda,
                                 gram=gram, gen=gen, amp=amp, fp16=dtype == torch.float16, on_step=self.reporter.step)
        finally:
            self.reporter.stop()
        train_seconds = time.perf_counter() - t_train
        self.coef = {n: w.coef.detach().float().cpu().numpy() for n, w in wrappers.items()}
        self.embedding = token_wrapper.vector.detach().float().cpu().numpy()[None, :]
        tenth = max(1, len(losses) // 10)  # the loss of one step is noisy: compare means of equal spans
        self.stats = {
            "final_loss": float(np.mean(losses[-tenth:])), "first_loss": losses[0],
            "first_tenth_loss": float(np.mean(losses[:tenth])), "steps_run": len(losses),
            "seconds": round(time.perf_counter() - t0, 3), "seconds_scoring": round(score_seconds, 3),
            "seconds_training": round(train_seconds, 3), "seconds_per_step": round(train_seconds / len(losses), 4),
            "images": len(prompts), "device": device, "precision": runtime.precision_name(dtype),
        }
        return LearnOutcome(self.name, plan, stats=self.stats)

    def _load(self, device: str, dtype):
        """The base at W_{t-1} (every earlier concept applied in fp32), on `device` in `dtype`."""
        from .model import loading, runtime
        from .model.bank_apply import apply_bank

        self.reporter.phase(f"loading the base model ({runtime.precision_name(dtype)} on {device})")
        spec = self.spec or loading.spec_of(self.parent.base)
        self.model_dir = loading.model_dir(spec)  # where the base may keep its own calibration prompts
        pipe = loading.load_pipeline(spec)
        if self.parent is not None:
            loading.check_matches(self.parent.base, pipe)
            self.base_pointer = self.parent.base
        else:
            self.base_pointer = loading.describe_base(spec, pipe)
        earlier = [n for n in (self.parent.concepts if self.parent else {}) if n != self.name]
        if earlier:
            apply_bank(pipe, self.bank, self.parent, earlier)
        loading.place(pipe, device, dtype)
        if self.cfg.gradient_checkpointing:
            pipe.unet.enable_gradient_checkpointing()
        return pipe, earlier

    def _choose_slice(self, earlier: list[str]) -> None:
        """Sets self.q (the basis, (d, d)), self.basis (its record, None if new) and self.slice."""
        import torch

        from .method.basis import BASIS_SEED, allocate_slice, orthogonal_basis
        from .model.bank_apply import basis_matrix

        if self.parent is not None and self.parent.basis is not None:
            self.q, self.basis = basis_matrix(self.bank, self.parent), self.parent.basis
        else:
            self.q, self.basis = torch.from_numpy(orthogonal_basis(self.base_pointer.text_dim, BASIS_SEED)), None
        dim, rank = self.q.shape[0], self.cfg.rank
        if rank > dim:
            raise UsageError(f"--rank {rank} is larger than the text width {dim}; use a smaller rank")
        used = [(self.parent.concepts[n].slice.start, self.parent.concepts[n].slice.rank) for n in earlier]
        start, full = allocate_slice(used, dim, rank)
        if full:
            self.reporter.warn(f"basis capacity reached ({dim} columns, {len(used)} concepts): this concept's slice "
                               "overlaps earlier ones, so their deltas are no longer orthogonal; consider a smaller --rank")
        self.slice = Slice(start=start, rank=rank)

    def _protection(self, pipe, calib, earlier: list[str], b, amp):
        """Gram matrix of the self-regulariser: calibration states + earlier concepts' prompt states, each
        averaged over its own tokens (SPEC, method step 6)."""
        import torch

        from .method.delta import protection_gram
        from .model.text import encode
        from .prompts import training_prompt

        with torch.no_grad():
            gram = protection_gram(calib.flatten(0, 1), b)
            if earlier:
                prompts = [training_prompt(n, self.parent.concepts[n].class_word, None) for n in earlier]
                with amp():
                    prev = encode(pipe.tokenizer, pipe.text_encoder, prompts).float()
                gram = gram + protection_gram(prev.flatten(0, 1), b)
        return gram

    def _general_rows(self, pipe, calib) -> dict[str, np.ndarray]:
        """General neurons of this base: from the bank's cache when it was made with the same settings."""
        from .model.text import general_neuron_masks
        from .prompts import calibration_id

        key = {"method": GENERAL_CACHE_VERSION, "calibration": calibration_id(self.model_dir),
               "top_fraction": repr(self.cfg.general_top_fraction), "min_share": repr(self.cfg.general_min_share)}
        self.general_key = key
        cached = self.parent.caches.general_neurons if self.parent is not None else None
        if cached is not None and all(self.bank.read_object_metadata(cached).get(k) == v for k, v in key.items()):
            self.general_cached = True
            return self.bank.read_object(cached)
        self.general_cached = False
        self.reporter.phase("finding general neurons (once per base model)")
        masks = general_neuron_masks(pipe.unet, calib, self.cfg.general_top_fraction, self.cfg.general_min_share)
        return {n: np.flatnonzero(m.numpy()).astype(np.int32) for n, m in masks.items()}

    def _plan(self, images, budget_rows: int, unet_params: int, general) -> dict:
        """What would be stored; sizes are exact (the objects are encoded, with zero coefficients)."""
        per_layer = {n: int(r.numel()) for n, r in self.rows.items() if r.numel()}
        delta_bytes = len(encode_object(self._delta_tensors({n: np.zeros((k, self.cfg.rank), np.float32)
                                                              for n, k in per_layer.items()}), "delta"))
        emb_bytes = len(encode_object({"embedding": np.zeros((1, self.base_pointer.text_dim), np.float32)}, "embedding"))
        n_rows = sum(per_layer.values())
        return {
            "concept": self.name, "token": token_for(self.name), "class_word": self.class_word,
            "images": [str(p) for p in images.files],
            "skipped": [{"file": str(p), "reason": why} for p, why in images.skipped],
            "neurons": n_rows, "neurons_per_layer": per_layer, "budget_rows": budget_rows,
            "general_neurons": int(sum(int(g.sum()) for g in general.values())),
            "calibration": self.general_key["calibration"],
            "slice": {"start": self.slice.start, "rank": self.slice.rank},
            "parameters_trained": trained_parameters(n_rows, self.cfg.rank, self.base_pointer.text_dim),
            "share_of_unet": (n_rows * self.base_pointer.text_dim) / unet_params,
            "bytes_to_store": delta_bytes + emb_bytes,
        }

    def _delta_tensors(self, coef: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for n, c in coef.items():
            out[f"{n}.rows"] = self.rows[n].cpu().numpy().astype(np.int32)
            out[f"{n}.coef"] = c.astype(np.float32)
        return out

    # -- the commit ---------------------------------------------------------------------------------

    def commit(self, tx, argv: list[str] | None) -> Revision:
        basis = self.basis or Basis(object=tx.put({"Q": self.q.numpy()}, "basis"), dim=self.q.shape[0], seed=0)
        caches = tx.parent.caches
        if not self.general_cached:
            ref = tx.put(self.general_rows, "general_neurons", self.general_key)
            caches = Caches(general_neurons=ref)
        coef = {n: c for n, c in self.coef.items() if c.shape[0]}
        delta = tx.put(self._delta_tensors(coef), "delta", {"concept": self.name})
        emb = tx.put({"embedding": self.embedding.astype(np.float32)}, "embedding", {"token": token_for(self.name)})
        per_layer = {n: int(c.shape[0]) for n, c in coef.items()}
        concept = Concept(
            token=token_for(self.name), class_word=self.class_word, learned_in=tx.number,
            slice=self.slice, neurons=Neurons(total=sum(per_layer.values()), per_layer=per_layer),
            delta=delta, embedding=emb, training=self.cfg.record(), stats=self.stats,
        )
        concepts = dict(tx.parent.concepts) | {self.name: concept}
        return tx.commit(Operation(kind="learn", concept=self.name, argv=argv or []),
                         concepts=concepts, basis=basis, caches=caches)


def _mask(rows, size: int):
    import torch

    m = torch.zeros(size, dtype=torch.bool)
    if rows is not None and len(rows):
        m[torch.as_tensor(rows, dtype=torch.long)] = True
    return m


def _training_scheduler(pipe):
    """A DDPM scheduler with the pipeline's noise schedule: the forward process used in training."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)
