"""`cns bench`: the continual-personalization benchmark on the demo world.

Every method learns the same personal concepts in the same order, from the same photos, seeds and step
budget; after each concept, every concept learned so far is scored by the demo evaluator (identity and prompt
alignment), and so is the model's zero-shot accuracy on held-out base captions.

    methods.py   the methods: cns and its ablations (through a real bank), and the baselines (in memory)
    trainer.py   the one training loop the in-memory baselines share
    scoring.py   what is measured after each step
    protocol.py  the loop, and the JSON document it returns
    report.py    table (markdown), forgetting-curve plot, contact sheet
"""
