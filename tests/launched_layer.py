"""Run by tests/test_distributed_launch.py under `torchrun --nproc-per-node 2`: every collective of
cns_cli.distributed on real gloo ranks. Each rank writes what it saw to OUT/rank{N}.json; the test compares."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from cns_cli import distributed as dist
from cns_cli.errors import UsageError


def main(out: Path) -> None:
    import torch
    import torch.distributed as td

    world = dist.start("cpu")
    seen = {"world": [world.rank, world.size, world.local_rank, world.local_size, world.backend],
            "torch_world_size": td.get_world_size(), "env_rank": dist.rank()}
    seen["all_gather"] = dist.all_gather({"rank": dist.rank()})
    seen["gather"] = dist.gather(dist.rank() * 10)
    seen["broadcast"] = dist.broadcast(f"from rank {dist.rank()}")
    seen["on_main"] = dist.on_main(lambda: f"read by rank {dist.rank()}")
    grads = [torch.full((3,), float(dist.rank() + 1)), torch.tensor([[dist.rank() * 2.0]])]
    seen["mean"] = [t.tolist() for t in dist.all_reduce_mean(grads)]
    seen["sum"] = [t.tolist() for t in dist.all_reduce_sum(grads)]
    seen["inputs_untouched"] = grads[0].tolist()

    def load():  # ranks of the node take turns: each records when it ran
        began = time.monotonic()
        time.sleep(0.5)
        return [began, time.monotonic()]

    seen["turn"] = dist.all_gather(dist.in_turn(load))
    seen["failures"] = {}
    for case, fn in (("rank1", _fails_on(1, "bad input on one rank")), ("all", _fails_on(None, "bad everywhere")),
                     ("internal", _breaks_on(1))):
        try:
            dist.together(fn)
            seen["failures"][case] = None
        except dist.DistributedError as e:
            seen["failures"][case] = [str(e), e.exit_code, e.quiet]
    try:
        dist.on_main(_fails_on(0, "stdin is not UTF-8"))
    except dist.DistributedError as e:
        seen["failures"]["on_main"] = [str(e), e.exit_code, e.quiet]
    seen["timeout"] = _silent_rank(1)
    (out / f"rank{dist.rank()}.json").write_text(json.dumps(seen))


def _silent_rank(silent: int):
    """Rank `silent` stops answering for longer than CNS_DIST_TIMEOUT: the other's next exchange fails by then."""
    began = time.monotonic()
    if dist.rank() == silent:
        time.sleep(dist.timeout_s() + 3)
    try:
        dist.all_gather("late")
        return None
    except dist.DistributedError as e:
        return [str(e), round(time.monotonic() - began, 1)]


def _fails_on(rank: int | None, message: str):
    def fn():
        if rank is None or dist.rank() == rank:
            raise UsageError(message)
        return "fine"

    return fn


def _breaks_on(rank: int):
    def fn():
        if dist.rank() == rank:
            raise KeyError("a bug")
        return "fine"

    return fn


if __name__ == "__main__":
    main(Path(sys.argv[1]))
