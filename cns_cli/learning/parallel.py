"""`cns learn` as N ranks under torchrun / accelerate launch (docs/distributed.md): one concept, learned data-parallel.

Rank 0 runs learn.py's one-process flow: it checks the input, creates or opens the bank and alone takes its writer
lock and commits. At two points it tells the other ranks ("followers") to go on, with what they need:

    load     the model to load (spec, bank, parent revision) and the job: every rank loads it, a node's ranks in
             turn (distributed.in_turn). Sent before the load: for an existing bank once the lock is held, for a
             new bank before it is created (one process also loads first, then creates the bank).
    locked   the bank and parent revision to plan against: the new bank exists and its lock is held.

Then every rank plans and trains on its share of each batch (model/share.py): the general-neuron scan, the
scoring and every training step sum the ranks' parts in all-reduces, so each rank holds the concept one process
would learn with that `--batch-size`. Rank 0 commits (distributed.on_main) and every rank hears the revision.

Failures. A check that fails on rank 0 before a point is sent in its place, so every follower raises it at once
(a locked bank stops every rank). Later failures are shared by the collectives (in_turn, on_main) or, for a rank
that dies, reach the others as a lost connection; a rank that stops answering ends the run after the timeout
(`--dist-timeout`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .. import distributed as dist
from ..reporting import NullReporter

POINTS = ("load", "locked")


@dataclass(frozen=True)
class Load:
    """What the followers load and learn (picklable: rank 0 broadcasts it)."""

    spec: object  # model.loading spec of the base
    bank: object  # Bank to load the parent from (None for a new bank)
    parent: object  # Revision whose concepts are applied (None for a new bank)
    name: str
    class_word: str
    images_dir: Path
    config: object  # LearnConfig
    dry_run: bool
    new_basis: object = None


class Lead:
    """Rank 0's side: `load` and `locked` send the two points, in that order. In one process both do nothing."""

    def __init__(self) -> None:
        self.pending = list(POINTS) if dist.launched() else []

    def load(self, load: Load) -> None:
        self._send("load", load)

    def locked(self, bank, parent) -> None:
        self._send("locked", (bank, parent))

    def _send(self, point: str, payload) -> None:
        if not self.pending:
            return
        assert self.pending[0] == point, f"learn sent {point!r} before {self.pending[0]!r}"
        self.pending.pop(0)
        dist.broadcast((payload, None))

    def fail(self, e: BaseException) -> None:
        """Rank 0 failed before sending a point: the followers waiting for it raise the same error. A
        DistributedError was already shared by a collective (or the others are gone): nothing to send."""
        if self.pending and isinstance(e, Exception) and not isinstance(e, dist.DistributedError):
            self.pending = []
            dist.broadcast((None, dist.failure_of(e)))


@contextmanager
def leading() -> Iterator[Lead]:
    """The Lead of rank 0's (or the one process's) learn; a failure before a point reaches the followers."""
    lead = Lead()
    try:
        yield lead
    except BaseException as e:
        lead.fail(e)
        raise


def _receive():
    payload, failure = dist.broadcast((None, None))
    dist.raise_failures([failure], name_rank=False)  # rank 0's own error, raised on every rank
    return payload


def follow() -> tuple[str, dict, int | None, dict]:
    """A follower's whole learn: load when told, plan and train in step with the others, hear the revision.
    Returns what learn.LearnOutcome holds: (name, plan, revision or None for a dry run, this rank's stats)."""
    from .commit import commit
    from .fit import fit
    from .plan import make_plan, open_session

    quiet = NullReporter()
    job: Load = _receive()
    session = dist.in_turn(open_session, job.spec, job.bank, job.parent, job.name, job.class_word, job.images_dir,
                           job.config, quiet)
    bank, parent = _receive()
    plan = make_plan(session, bank, parent, job.name, job.class_word, job.config, quiet, job.new_basis)
    if job.dry_run:
        return job.name, dict(plan.doc), None, {}
    trained = fit(session, plan, job.config, quiet, parent)
    rev = dist.on_main(commit, None, plan, trained)  # run by rank 0 only: its revision, or its failure
    return job.name, dict(plan.doc), rev.number, dict(trained.stats)
