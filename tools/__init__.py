"""Developer tools of the cns repository: the trainers of the models `cns_cli` ships (the demo base model, the
demo evaluator). Not part of the installed package; run them from a clone (see tools/README.md)."""
