"""Run by tests/bench/test_launched.py under `torchrun --nproc-per-node 2`: `cns ARGS...` on this rank, with two
test hooks set through the environment (nothing in cns itself):

    CNS_TEST_MADE_LOG=FILE      append "RANK KEY" to FILE for every method this rank starts
    CNS_TEST_FAIL_METHOD=KEY    that method fails after learning its first concept, as on a full disk
"""

from __future__ import annotations

import errno
import os
import sys


def main() -> None:
    import cns_cli.bench.protocol as protocol
    from cns_cli.cli import run

    real = protocol.make_method

    def make_method(key, budget, workdir):
        if os.environ.get("CNS_TEST_MADE_LOG"):
            with open(os.environ["CNS_TEST_MADE_LOG"], "a") as f:
                f.write(f"{os.environ['RANK']} {key}\n")  # the launcher's rank: a method runs inside alone()
        method = real(key, budget, workdir)
        if key == os.environ.get("CNS_TEST_FAIL_METHOD"):
            learn = method.learn

            def learn_then_fail(c):
                learn(c)
                raise OSError(errno.ENOSPC, "No space left on device", str(workdir / f"{key}.cnsbank"))

            method.learn = learn_then_fail
        return method

    protocol.make_method = make_method
    sys.argv = ["cns", *sys.argv[1:]]
    run()


if __name__ == "__main__":
    main()
