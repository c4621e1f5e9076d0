"""One cns command as N processes ("ranks"), started by `torchrun`, `accelerate launch` or `srun` + torchrun.

In one process (WORLD_SIZE unset or 1) every function here is what it would be in a world of one, and imports
nothing: `broadcast` returns its argument, `all_gather` a list of one, `barrier` does nothing, `together(fn)` is
`fn()`. A single-process run executes exactly the code it always did.

Under a launcher the process group starts once, on first use, through accelerate's `PartialState`:
`cpu=True` on a host without CUDA (without it, PartialState makes every rank a world of one that does all the
work) and `backend="gloo"` where a node runs more ranks than it has GPUs (NCCL refuses two ranks on one device).
The world size PartialState reports is checked against WORLD_SIZE, so a silently single-process run cannot pass.

The API the commands build on (generate now; bench and learn):

    launched() -> bool                 WORLD_SIZE > 1: read from the environment, no import, no collective
    rank(), size(), local_rank(), is_main()   also from the environment, so usable before the group starts
    alone()                            a context in which this rank is a world of one (bench: one method's learn)
    start(device="auto", timeout=None) -> World   join the group (idempotent; collectives call it themselves)
    finish()                           barrier, then leave the group: the end of a command that went well
    device_of(kind) -> str             where this rank places a model: "cuda" -> "cuda:<its GPU>", else kind
    shard(n, rank, size) -> range      units rank, rank + size, ...: round-robin (generate's calls, bench's methods)
    split(n, rank, size) -> range      a contiguous, balanced slice of n items (a global batch: learn)
    broadcast(obj, src=0) -> obj       any picklable object from rank `src`
    all_gather(obj) -> list            one object per rank, in rank order, on every rank
    gather(obj) -> list | None         the same on the main process only (None elsewhere)
    all_reduce_mean(tensors) -> list   each tensor's mean over ranks (new tensors; accelerate.utils.reduce)
    all_reduce_sum(tensors) -> list    each tensor's sum over ranks
    barrier()                          wait for every rank
    together(fn, *args)                every rank runs fn; a failure on any rank is raised on every rank
    on_main(fn, *args)                 the main process runs fn (stdin, HEAD, a report); the result or failure is shared
    in_turn(fn, *args)                 the ranks of a node run fn one after another (model loads: host RAM, disk);
                                       the failures are shared like together's
    attempt(fn, *args) -> (value, Failure | None)   fn's outcome without raising, for a collective of one's own;
    raise_failures(failures)           ... then every rank raises the first of the gathered failures
    timeout_s() -> float               how long a collective waits for a silent rank (CNS_DIST_TIMEOUT)

Failures. A command's error on one rank must not leave the others blocked in a collective for the timeout, and
must reach the user once. So commands run their fallible phases through together / on_main / in_turn (or attempt +
a collective + raise_failures): each rank's outcome travels with the collective, and then every rank raises the
same `DistributedError`, with the failing rank's exit code; only the main process prints it (`quiet` elsewhere),
prefixed "[rank N]" unless every rank failed alike. A rank that dies, or stops answering for `timeout_s()`, makes
the others' next collective fail: a `DistributedError` naming CNS_DIST_TIMEOUT, while the launcher stops the rest
and exits 1 with each rank's own code in its report.

Ordering rules for callers: every rank must make the same collectives in the same order (so decide loop counts
from shared data), and nothing inside a `together` / `in_turn` / `on_main` function may itself be a collective.
A command opts in with `@command(distributed=True)` in cli.py; every other command refuses a launcher.

Recipes (in one process each line is the plain one-process code):

    mine = [m for i, m in enumerate(methods) if i in shard(len(methods), rank(), size())]   # bench: methods
    results = on_main(merge, all_gather(run(mine)))          # rank 0 assembles and writes the report
    rows = split(batch_size, rank(), size())                 # learn: this rank's slice of the global batch
    grads = all_reduce_mean([p.grad for p in trainables])    # equal slices; else all_reduce_sum of share-scaled
    for p, g in zip(trainables, grads): p.grad.copy_(g)
    rev = on_main(commit, bank, ...)                         # only rank 0 locks and writes the bank
    pipe = in_turn(load, ...)                                # a node's ranks load one after another
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import CnsError, from_os_error

T = TypeVar("T")

TIMEOUT_ENV = "CNS_DIST_TIMEOUT"
# torch's own default for gloo (30 min): long enough for the ranks of a node loading a large base one after another
DEFAULT_TIMEOUT_S = 1800.0


class DistributedError(CnsError):
    """A failure shared by every rank of a launched run: raised alike on each, printed by the main process only
    (`quiet` on the others), exiting with the failing rank's own exit code."""

    def __init__(self, message: str, exit_code: int = 2, quiet: bool = False):
        super().__init__(message)
        self.exit_code, self.quiet = exit_code, quiet


@dataclass(frozen=True)
class Failure:
    """What one rank's failed step sends to the others: small and picklable (never the exception itself)."""

    rank: int
    message: str
    exit_code: int


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int  # the rank's index on its node
    local_size: int  # ranks on its node
    device: str  # where PartialState put this rank: "cpu", "cuda:1", ...
    backend: str | None  # "gloo", "nccl"; None in one process


# -- the environment (no imports, no collectives) -------------------------------------------------------------


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


_alone = 0  # > 0 inside `alone()`


def size() -> int:
    return 1 if _alone else max(1, _env_int("WORLD_SIZE", 1))


@contextmanager
def alone() -> Iterator[None]:
    """Inside, this rank is a world of one (launched() False, rank 0, size 1): for work a rank does by itself
    under a launcher, such as one of `cns bench`'s methods, whose `cns learn` must not wait for the other ranks.
    No collective may run inside."""
    global _alone
    _alone += 1
    try:
        yield
    finally:
        _alone -= 1


def launched() -> bool:
    return size() > 1


def rank() -> int:
    return _env_int("RANK", 0) if launched() else 0


def local_rank() -> int:
    return _env_int("LOCAL_RANK", 0) if launched() else 0


def is_main() -> bool:
    return rank() == 0


def timeout_s(override: float | None = None) -> float:
    """The collective timeout in seconds: `override` (a command's flag), else $CNS_DIST_TIMEOUT, else 30 min."""
    if override is not None:
        return float(override)
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise DistributedError(f"{TIMEOUT_ENV}={text!r} is not a positive number of seconds; e.g. {TIMEOUT_ENV}=600")
    return value


def check_timeout_flag(seconds: float | None) -> None:
    """A command's --dist-timeout: None (not given) or a positive, finite number of seconds; said once (rank 0)."""
    import math

    if seconds is not None and not (seconds > 0 and math.isfinite(seconds)):
        raise DistributedError(f"--dist-timeout must be a positive number of seconds, got {seconds:g}",
                               quiet=not is_main())


# -- pure sharding ----------------------------------------------------------------------------------------------


def shard(n: int, rank: int, size: int) -> range:
    """The units of `rank` among `n` (0..n-1): rank, rank + size, ... Every unit belongs to exactly one rank, and
    units [r * size, (r + 1) * size) form round r, one per rank, in order."""
    return range(rank, n, size)


def split(n: int, rank: int, size: int) -> range:
    """A contiguous slice of `n` items for `rank`: the first n % size ranks take one more, so sizes differ by at
    most one and the slices, in rank order, are 0..n-1."""
    q, r = divmod(n, size)
    start = rank * q + min(rank, r)
    return range(start, start + q + (rank < r))


# -- the process group ----------------------------------------------------------------------------------------

_world: World | None = None
_waits = ""  # how long the group waits for a silent rank, and who said so: "--dist-timeout 60", "CNS_DIST_TIMEOUT=90"


def start(device: str = "auto", timeout: float | None = None, default: float | None = None) -> World:
    """This rank's World, joining the process group on the first call under a launcher (later calls return it).
    `device`: "cpu" keeps every rank on the CPU even where CUDA exists; "auto" / "cuda" use the node's GPUs.
    `timeout`: seconds a collective waits for a silent rank (a command's flag), else $CNS_DIST_TIMEOUT, else
    `default` (a command's own: bench waits for hour-long methods), else 30 min."""
    global _world, _waits
    if _world is not None:
        return _world
    if not launched():
        return World(0, 1, 0, 1, device, None)  # not kept: nothing to join, and a later call may name another device
    if timeout is None and not os.environ.get(TIMEOUT_ENV, "").strip() and default is not None:
        seconds, _waits = float(default), f"the default {default:g}"
    else:
        seconds = timeout_s(timeout)
        _waits = f"--dist-timeout {seconds:g}" if timeout is not None else f"{TIMEOUT_ENV}={seconds:g}"
    try:
        _world = _join(device, seconds)
    except CnsError:
        raise
    except Exception as e:  # a rendezvous that fails: no MASTER_ADDR, a port taken, a peer that never came
        raise DistributedError(f"could not join the other processes (RANK={os.environ.get('RANK')}, "
                               f"WORLD_SIZE={os.environ.get('WORLD_SIZE')}): {_first_line(e)}; start cns with "
                               "torchrun or accelerate launch (docs/distributed.md)") from None
    return _world


def _join(device: str, timeout: float) -> World:
    import atexit
    from datetime import timedelta

    import torch

    try:
        from accelerate import PartialState
    except ImportError:
        raise DistributedError("running across processes needs accelerate: pip install 'cns-cli[distributed]'") from None

    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    kwargs: dict[str, Any] = {"timeout": timedelta(seconds=timeout)}
    local_size = max(1, _env_int("LOCAL_WORLD_SIZE", size()))
    if cuda and local_size > torch.cuda.device_count():
        kwargs["backend"] = "gloo"  # NCCL refuses two ranks on one GPU; gloo shares it (slower collectives, same pixels)
    state = PartialState(cpu=not cuda, **kwargs)
    if state.num_processes != size():
        raise DistributedError(f"the launcher started {size()} processes but they did not join one group (each "
                               f"sees {state.num_processes}); see docs/distributed.md, pitfalls")
    atexit.register(state.destroy_process_group)
    return World(state.process_index, state.num_processes, state.local_process_index, local_size,
                 str(state.device), state.backend)


def finish() -> None:
    """Wait for every rank, then leave the group: what a launched command does when it ends well, so that no rank
    tears its connections down while another still uses them (the atexit hook of `start` covers the rest)."""
    global _world
    if _world is None or not launched():
        return
    barrier()
    import torch.distributed as td

    if td.is_initialized():
        td.destroy_process_group()
    _world = None


def device_of(kind: str) -> str:
    """Where this rank places a model asked to run on `kind`: its own GPU under a launcher ("cuda:3"), else
    `kind` itself. Records keep `kind`, so names and metadata match a one-process run."""
    if kind != "cuda" or not launched():
        return kind
    return start(kind).device


def _collective(op: Callable[[], T]) -> T:
    """Run one torch.distributed call; a dead or silent peer becomes one line instead of a backend traceback."""
    start()
    try:
        return op()
    except Exception as e:
        waited = _waits or f"{TIMEOUT_ENV}={timeout_s():g}"
        raise DistributedError(f"lost the other processes of this run (one ended, or one stopped answering for "
                               f"{waited} s): {_first_line(e)}; see the launcher's report and the other ranks' "
                               "messages") from None


def _first_line(e: BaseException) -> str:
    """The first line of a backend error, without gloo's "[/path/to/file.cc:129] " source location."""
    import re

    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    line = re.sub(r"^\[[^\]]*\.(cc|cpp|h|hpp):\d+\]\s*", "", line)
    return line.split(". ")[0] or type(e).__name__  # gloo goes on with advice ("... GLHF!") after the fact


# -- collectives (identities in one process) ----------------------------------------------------------------------


def broadcast(obj: T, src: int = 0) -> T:
    if not launched():
        return obj

    def op():
        import torch.distributed as td

        box = [obj]
        td.broadcast_object_list(box, src=src)
        return box[0]

    return _collective(op)


def all_gather(obj: T) -> list[T]:
    if not launched():
        return [obj]

    def op():
        import torch.distributed as td

        out: list[Any] = [None] * size()
        td.all_gather_object(out, obj)
        return out

    return _collective(op)


def gather(obj: T) -> list[T] | None:
    """`obj` of every rank in rank order on the main process, None on the others."""
    if not launched():
        return [obj]

    def op():
        import torch.distributed as td

        out: list[Any] | None = [None] * size() if is_main() else None
        td.gather_object(obj, out, dst=0)
        return out

    return _collective(op)


def all_reduce_mean(tensors: list) -> list:
    """Each tensor's mean over the ranks, as new tensors (the inputs are untouched): for gradients of equal-sized
    slices. Unequal slices: scale each rank's by its share of the batch and use all_reduce_sum."""
    return _reduce(tensors, "mean")


def all_reduce_sum(tensors: list) -> list:
    return _reduce(tensors, "sum")


def _reduce(tensors: list, how: str) -> list:
    if not launched():
        return [t.clone() for t in tensors]

    def op():
        from accelerate.utils import reduce

        return list(reduce(list(tensors), reduction=how))

    return _collective(op)


def barrier() -> None:
    if not launched():
        return

    def op():
        import torch.distributed as td

        td.barrier()

    _collective(op)


# -- shared failures ------------------------------------------------------------------------------------------------

_local_error: BaseException | None = None  # this rank's last failure in `attempt`: re-raised as is under CNS_DEBUG=1


def attempt(fn: Callable[..., T], *args) -> tuple[T | None, Failure | None]:
    """(fn(*args), None), or (None, the Failure) when fn raised an Exception (Ctrl-C and SIGTERM pass through)."""
    global _local_error
    try:
        return fn(*args), None
    except Exception as e:  # noqa: BLE001 - every failure must reach the other ranks, or they wait for the timeout
        _local_error = e
        return None, failure_of(e)


def failure_of(e: Exception) -> Failure:
    """The message and exit code `cns` gives `e` (cli._handled's rules), as a Failure of this rank."""
    from .errors import INTERNAL_ERROR_EXIT

    if isinstance(e, CnsError):  # DistributedError included: its exit code is the failing rank's
        return Failure(rank(), str(e), e.exit_code)
    known = from_os_error(e)
    if known is not None:
        return Failure(rank(), str(known), known.exit_code)
    return Failure(rank(), f"internal error: {type(e).__name__}: {e} (rerun with CNS_DEBUG=1 and report it)",
                   INTERNAL_ERROR_EXIT)


def raise_failures(failures: list[Failure | None], name_rank: bool = True) -> None:
    """Raise the first failure (lowest rank) on this rank, if any rank failed. The main process prints it; it is
    prefixed with the failing rank unless every rank failed with the same message (or `name_rank` is False: a
    step only the main process ran, on behalf of all)."""
    failed = [f for f in failures if f is not None]
    if not failed:
        return
    mine = next((f for f in failed if f.rank == rank()), None)
    if mine is not None and _local_error is not None and os.environ.get("CNS_DEBUG") == "1":
        raise _local_error
    first = failed[0]
    alike = len(failed) == size() and len({f.message for f in failed}) == 1
    message = first.message if alike or not name_rank or not launched() else f"[rank {first.rank}] {first.message}"
    raise DistributedError(message, first.exit_code, quiet=not is_main()) from None


def together(fn: Callable[..., T], *args) -> T:
    """fn(*args) on every rank; if it failed on any, every rank raises the first failure (DistributedError)."""
    if not launched():
        return fn(*args)
    value, failure = attempt(fn, *args)
    raise_failures(all_gather(failure))
    return value  # type: ignore[return-value]


def on_main(fn: Callable[..., T], *args) -> T:
    """fn(*args) on the main process only; its result (picklable) or its failure reaches every rank."""
    if not launched():
        return fn(*args)
    value, failure = attempt(fn, *args) if is_main() else (None, None)
    value, failure = broadcast((value, failure))
    raise_failures([failure], name_rank=False)
    return value  # type: ignore[return-value]


def in_turn(fn: Callable[..., T], *args) -> T:
    """fn(*args) on every rank, the ranks of a node one after another (local rank 0 first), nodes in parallel: N
    ranks loading a model at once would need N times the host memory and disk bandwidth. Failures as together's."""
    if not launched():
        return fn(*args)
    turns = max(all_gather(local_rank())) + 1  # nodes may run different numbers of ranks
    value, failure = None, None
    for turn in range(turns):
        if turn == local_rank():
            value, failure = attempt(fn, *args)
        barrier()
    raise_failures(all_gather(failure))
    return value  # type: ignore[return-value]
