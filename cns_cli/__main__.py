"""`python -m cns_cli`: the `cns` command, so that `accelerate launch -m cns_cli ...` and `torchrun -m cns_cli ...`
run the real CLI (docs/distributed.md)."""

from .cli import run

if __name__ == "__main__":
    run()
