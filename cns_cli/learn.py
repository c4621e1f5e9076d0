"""`cns learn`: teach the bank's model one new concept (CNS steps 1-6), then commit it atomically.

The steps are in cns_cli/learning (plan -> fit -> commit). The writer lock is held from the model load to the
commit, so two learns cannot interleave and a second writer is told at once. Nothing of the concept is
written before training ends: Ctrl-C or a crash commits nothing. A missing bank is created (revision 0) as
soon as its base has loaded, so that its lock is held through training too; if that first learn then fails or
is interrupted, the new bank is removed again (`_removed_unless_committed`), so no empty bank is left behind.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .about import DEFAULT_BASE
from .bank import Bank, Revision
from .bank.store import is_bank_folder
from .bank.names import check_class_word, check_concept_name
from .errors import CnsError, ConceptError, UsageError
from .reporting import NullReporter, Reporter

SELECTIONS = ("attribution", "random")
SLICES = ("shared", "concept")
# A k-vector token takes k of the text encoder's 77 positions wherever a prompt names it; 16 leaves room for a
# sentence and a second concept.
MAX_VECTORS = 16


@dataclass(frozen=True)
class LearnConfig:
    """Every knob of the method, recorded in the revision so a result can be reproduced or ablated."""

    steps: int = 400  # optimiser steps
    lr: float = 1e-3  # AdamW lr of the coefficients A (rows x rank per layer)
    # AdamW lr of the token vector. 1e-3, not TI's usual 5e-3: token embeddings are ~0.02 per dimension (SD's and the
    # demo model's), and on the demo model 5e-3 pulled the token off its class (identity of <rex> 0.149 -> 0.275,
    # <fedora> 0.136 -> 0.287 at 1e-3; 5e-4 and 2e-3 both worse: benchmarks/token_lr_sweep.py, docs/benchmark.md).
    lr_token: float = 1e-3
    rank: int = 4  # basis slice width r: capacity is text_dim / r concepts before slices overlap
    # "shared": B = r free columns of the bank's seeded basis Q, blind to the concept. "concept" (format 1.3): the
    # concept's own B, the r directions with the most concept state energy per unit of protected energy, orthogonal
    # to the earlier concepts' slices, chosen after method.basis.SLICE_WARMUP of the steps trained the token alone.
    slice: str = "shared"
    # Vectors of the concept's token (multi-vector textual inversion): <name> stands for k prompt positions, the
    # tokens <name>, <name>_1, …, <name>_{k-1} (diffusers' convention). 1 is the single token of earlier versions.
    vectors: int = 1
    budget: float = 0.0013  # share of UNet parameters a concept may train (paper: ≈0.13 %)
    # The drift budget ε (method/protect.py): after every step each layer's rows are scaled so that the mean squared
    # relative change of its K/V outputs stays ≤ ε on every protected set (bos, calibration prompts, padding, the
    # class's neighbours, earlier concepts' prompts). Scale-free: the same ε means the same on every model. None: off.
    # 0.1 (RMS ≤ 32 %) was chosen by issue 33's study on the tuning individuals from {1e-3, 1e-2, 1e-1}
    # (benchmarks/method_study.py, docs/method-study.md).
    max_drift: float | None = 0.1
    # Weight of the older penalty λ Σ tr(A G Aᵀ) (squared K/V units against the MSE: its meaning changes with the
    # model, and at 1.0 it pinned the rows on every model; docs/method.md). 0: off.
    reg_lambda: float = 0.0
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
        need(isinstance(self.vectors, int) and not isinstance(self.vectors, bool) and 1 <= self.vectors <= MAX_VECTORS,
             "vectors", f"a whole number from 1 to {MAX_VECTORS}", self.vectors)
        need(0 < self.budget <= 1, "budget", "in (0, 1]", self.budget)
        need(self.reg_lambda >= 0, "reg-lambda", "0 or more", self.reg_lambda)
        need(self.max_drift is None or (isinstance(self.max_drift, (int, float)) and 0 < self.max_drift <= 1),
             "max-drift", "in (0, 1] or off", self.max_drift)
        need(self.batch_size >= 1, "batch-size", "at least 1", self.batch_size)
        # the VAE downsamples by 8 (every SD family): other sizes would be cropped silently by the encoder
        need(self.resolution is None or (self.resolution >= 8 and self.resolution % 8 == 0), "resolution",
             "a positive multiple of 8 (the VAE's downsampling factor)", self.resolution)
        need(self.score_steps >= 1, "score-steps", "at least 1", self.score_steps)
        need(0 < self.general_top_fraction <= 1, "general-top-fraction", "in (0, 1]", self.general_top_fraction)
        need(0 < self.general_min_share <= 1, "general-min-share", "in (0, 1]", self.general_min_share)
        need(self.selection in SELECTIONS, "selection", " or ".join(SELECTIONS), self.selection)
        need(self.slice in SLICES, "slice", " or ".join(SLICES), self.slice)
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
          base_config: str | Path | None = None, config: LearnConfig = LearnConfig(), replace: bool = False, dry_run: bool = False,
          argv: list[str] | None = None, reporter: Reporter = NullReporter(),
          new_basis: np.ndarray | None = None, dist_timeout: float | None = None) -> LearnOutcome:
    """Plan, train and commit one concept (cns_cli/learning). `base` names the model of a new bank (default
    DEFAULT_BASE) and `base_config` the diffusers folder a single-file base loads with (`--config`); for an
    existing bank `base` may only repeat the bank's own, and `base_config` replaces the recorded folder for this
    run (moved, or a 1.1 bank that has none; the fingerprint still has to match). Every input is checked before
    the model loads (minutes on SD 1.5). The writer lock is held from the model load to the commit; a new bank
    is created (revision 0, as `cns init` would) right after its base loads, so its lock is held through
    training too. `new_basis` (d, d) replaces the seeded basis Q of a new bank: an input for experiments.

    Under a launcher (learning/parallel.py) rank 0 runs this flow and the other ranks follow it: every rank loads
    the model and learns on its share of each batch, rank 0 alone locks the bank and commits. `dist_timeout`:
    seconds a rank waits for a silent one (default: distributed.timeout_s())."""
    from . import distributed as dist
    from .learning.parallel import follow, leading

    if dist.launched():
        dist.start(config.device, dist_timeout)
        if not dist.is_main():
            return LearnOutcome(*follow())
    with leading() as lead:
        return _lead(lead, bank_path, name, images_dir, class_word, base, base_config, config, replace, dry_run, argv,
                     reporter, new_basis)


def _lead(lead, bank_path: Path, name: str, images_dir: Path, class_word, base, base_config, config: LearnConfig,
          replace: bool, dry_run: bool, argv, reporter: Reporter, new_basis) -> LearnOutcome:
    """learn() in one process, or on rank 0 (`lead` tells the other ranks when to load and when the bank is locked)."""
    from .checks import check_out_dir
    from .images import load_images
    from .model.loading import resolve_base, spec_of
    from .protected import of_base_named, refuse_overlap

    _check_batch_for_ranks(config.batch_size)
    check_concept_name(name)
    if class_word is None:
        reporter.warn(f"no --class given, so the class word is {name!r}. The class word is what the model already "
                      f"knows this concept as (dog, hat, person): <{name}> starts from it and prompts say it after the "
                      "token; pass --class WORD if the name is not such a word")
    class_word = check_class_word(class_word if class_word is not None else name)
    images_dir = Path(images_dir)
    load_images(images_dir, 64, warn=False)  # fail fast on the folder, before a model load of many seconds
    root = Path(bank_path)
    job = _Job(name, class_word, images_dir, config, reporter, argv, new_basis)
    if not is_bank_folder(root):
        Bank.check_creatable(root)  # a file or a folder of other things: say so now, not after training
        refuse_overlap(root, "--bank", of_base_named(base or DEFAULT_BASE, base_config))
        check_out_dir(root, "--bank")  # a read-only place: say so before the model load, not after it
        session = job.load(lead, resolve_base(base or DEFAULT_BASE, base_config), None, None, dry_run)
        if dry_run:
            lead.locked(None, None)
            return job.planned(session, None, None)
        init_argv = ["cns", "init", "--base", base or DEFAULT_BASE] + ([] if base_config is None else ["--config", str(base_config)])
        was_empty_folder = root.is_dir()  # check_creatable: absent or an empty folder
        bank = Bank.create(root, session.base, argv=init_argv)
        with _removed_unless_committed(bank, was_empty_folder):
            with bank.transaction() as tx:
                lead.locked(bank, tx.parent)
                return job.learn_into(tx, session, bank)
    bank = Bank.open(root)
    if base is not None or base_config is not None:
        _check_same_base(bank.head().base, base, base_config)
    if dry_run:
        parent = bank.head()
        _check_name_free(parent, name, replace)
        session = job.load(lead, spec_of(parent.base, base_config), bank, parent, dry_run)
        lead.locked(bank, parent)
        return job.planned(session, bank, parent)
    with bank.transaction() as tx:
        if tx.stale_pid:
            reporter.warn(f"took over the lock of process {tx.stale_pid}, which is gone")
        _check_name_free(tx.parent, name, replace)
        session = job.load(lead, spec_of(tx.parent.base, base_config), bank, tx.parent, dry_run)
        lead.locked(bank, tx.parent)
        return job.learn_into(tx, session, bank)


@dataclass(frozen=True)
class _Job:
    """What the user asked for; `planned` is a dry run, `learn_into` plans, trains and commits."""

    name: str
    class_word: str
    images_dir: Path
    config: LearnConfig
    reporter: Reporter
    argv: list[str] | None
    new_basis: np.ndarray | None

    def load(self, lead, spec, bank, parent, dry_run: bool):
        """The Session of this learn: the other ranks are told to load too (a node's ranks load in turn)."""
        from . import distributed as dist
        from .learning.parallel import Load
        from .learning.plan import open_session

        lead.load(Load(spec, bank, parent, self.name, self.class_word, self.images_dir, self.config, dry_run,
                       self.new_basis))
        return dist.in_turn(open_session, spec, bank, parent, self.name, self.class_word, self.images_dir,
                            self.config, self.reporter)

    def plan(self, session, bank, parent):
        from .learning.plan import make_plan

        return make_plan(session, bank, parent, self.name, self.class_word, self.config, self.reporter, self.new_basis)

    def planned(self, session, bank, parent) -> LearnOutcome:
        return LearnOutcome(self.name, dict(self.plan(session, bank, parent).doc))

    def learn_into(self, tx, session, bank) -> LearnOutcome:
        from . import distributed as dist
        from .learning.commit import commit
        from .learning.fit import fit

        plan = self.plan(session, bank, tx.parent)
        trained = fit(session, plan, self.config, self.reporter, tx.parent)
        rev = dist.on_main(commit, tx, plan, trained, self.argv)  # the other ranks hear the revision (parallel.follow)
        return LearnOutcome(self.name, dict(plan.doc), rev.number, dict(trained.stats))


@contextmanager
def _removed_unless_committed(bank: Bank, was_empty_folder: bool) -> Iterator[None]:
    """A first learn that fails or is interrupted (Ctrl-C, SIGTERM, bad photos, a diverged training, a full disk)
    takes the bank it just created with it, so that no empty bank is left behind: `_remove_new_bank`, also on the
    interrupt watcher's hard exit. An interruption's message then says so (interrupt.describe)."""
    from . import interrupt

    def undo() -> str:
        return _remove_new_bank(bank, was_empty_folder)

    with interrupt.undo_on_hard_exit(undo):
        try:
            yield
        except BaseException as e:
            left = undo()
            if isinstance(e, KeyboardInterrupt):
                e.outcome = left
            raise


def _remove_new_bank(bank: Bank, was_empty_folder: bool) -> str:
    """Remove a bank this command created, only while it holds nothing but its empty revision 0 (a concept
    committed meanwhile keeps it); an empty folder that was there before stays. Returns what is left, for the
    interruption message."""
    import shutil

    try:
        if bank.revision_numbers() != [0] or bank.head_number() != 0:
            return f"the new bank {bank.root} was kept: it holds committed revisions (see `cns log`)"
        shutil.rmtree(bank.root)
        if was_empty_folder:
            bank.root.mkdir()
    except (OSError, CnsError):  # the original error matters more; an empty bank left behind still works
        return f"nothing was committed; the new, empty bank {bank.root} could not be removed"
    return f"nothing was committed and no bank was created at {bank.root}"


def _check_batch_for_ranks(batch_size: int) -> None:
    """Under a launcher --batch-size is the global batch, shared out: every rank needs at least one image of it."""
    from . import distributed as dist

    if batch_size < dist.size():
        raise UsageError(f"--batch-size {batch_size} is smaller than the {dist.size()} processes: it is the batch of all "
                         f"of them together; give --batch-size {dist.size()} or more (a multiple of {dist.size()} keeps "
                         "their shares equal)")


def _check_same_base(pointer, base: str | None, base_config) -> None:
    """A bank has one base model; a --base naming another one is a mistake, never silently ignored. --config
    only makes sense for a single-file base."""
    from .model.loading import resolve_base

    if base is not None:
        spec = resolve_base(base)
        if (spec.kind, spec.location, spec.revision) != (pointer.kind, pointer.location, pointer.revision):
            raise UsageError(f"this bank is built on {pointer.location}; --base {base} names another model (a bank "
                             "keeps one base): leave out --base, or pass --bank NEW_PATH to start a bank on it")
    if base_config is not None:
        if pointer.kind != "single-file":
            raise UsageError(f"--config is for a single .safetensors checkpoint; this bank's base {pointer.location} "
                             "has its own configs: leave out --config")


def _check_name_free(rev: Revision, name: str, replace: bool) -> None:
    if name in rev.concepts and not replace:
        raise ConceptError(f"concept {name!r} already exists (learned in revision {rev.concepts[name].learned_in}); "
                           "pass --replace to learn it again, or choose another name")
