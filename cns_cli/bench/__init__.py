"""`cns bench`: the continual-personalization benchmark on the demo world.

Every method learns the same personal concepts in the same order, from the same photos, seeds and step
budget; after each concept, every concept learned so far is scored by the demo evaluator (identity and prompt
alignment), and so is the model's zero-shot accuracy on held-out base captions.

    methods.py   the methods: cns and its ablations (through a real bank), and the baselines (in memory)
    trainer.py   the baselines' use of the one training loop (model.train.Trainer)
    scoring.py   what is measured after each step
    protocol.py  the loop, and the JSON document it returns
    report.py    table (markdown), forgetting-curve plot, contact sheet
"""

BENCH_EXTRA = ("peft", "matplotlib")  # the `cns-cli[bench]` extra: the LoRA baselines and the plot


def require_bench_extra() -> None:
    """Exit 2 with the pip command when the bench extra is not installed (nothing else of cns needs it)."""
    from importlib.util import find_spec

    from ..errors import UsageError

    missing = [m for m in BENCH_EXTRA if find_spec(m) is None]
    if missing:
        raise UsageError(f"cns bench needs {' and '.join(missing)}, which plain cns does not install; "
                         "run: pip install 'cns-cli[bench]' (or pip install peft matplotlib)")
