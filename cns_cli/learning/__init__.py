"""`cns learn` in three steps, each a function with a frozen result (the facade is cns_cli/learn.py):

    plan    (plan.py, torch)   the model, the images, the slice, the general and the concept neurons -> Plan
    fit     (fit.py, torch)    the one training loop on the plan's rows and the new token          -> Trained
    commit  (commit.py, numpy) Plan + Trained -> a new revision, inside the caller's transaction

A dry run stops after `plan`; `commit` needs no model and is tested with the bank factory.
"""
