"""Run by tests/test_distributed_learn.py under `torchrun --nproc-per-node 2`: the real `cns` CLI (argv after the
script), with two test hooks set through the environment:

  CNS_TEST_RECORD=DIR      at the first training step every rank writes DIR/rank{N}.json: its pid and what the
                           bank's lock file says (who holds the lock while the ranks train)
  CNS_TEST_FAULT=R:S:KIND  rank R, at training step S: "raise" (an error of that rank alone), "exit" (the process
                           dies: os._exit, nothing cleaned up) or "hang" (stops answering)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _hooked(step, bank: Path, record: str | None, fault: str | None):
    from cns_cli import distributed as dist

    rank = dist.rank()
    fault_rank, fault_step, kind = (fault.split(":") if fault else ("-1", "0", ""))

    def wrapped(self):
        if record and self.steps_done == 0:
            lock = (bank / "lock").read_text() if (bank / "lock").exists() else ""
            Path(record, f"rank{rank}.json").write_text(json.dumps({"pid": os.getpid(), "lock": lock}))
        if rank == int(fault_rank) and self.steps_done + 1 == int(fault_step):
            if kind == "raise":
                from cns_cli.errors import TrainingError

                raise TrainingError("the test's fault on this rank")
            if kind == "exit":
                os._exit(9)
            if kind == "hang":
                time.sleep(3600)
        return step(self)

    return wrapped


def main(argv: list[str]) -> None:
    from cns_cli.cli import run
    from cns_cli.model import train

    bank = Path(argv[argv.index("--bank") + 1])
    train.Trainer.step = _hooked(train.Trainer.step, bank, os.environ.get("CNS_TEST_RECORD"),
                                 os.environ.get("CNS_TEST_FAULT"))
    sys.argv = ["cns", *argv]
    run()


if __name__ == "__main__":
    main(sys.argv[1:])
