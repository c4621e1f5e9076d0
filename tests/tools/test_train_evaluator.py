"""tools/train_evaluator.py: the packaged evaluator weights were trained on the world as it draws today, the
world's fingerprint follows its pixels, training writes weights `cns_cli.demo.evaluator` loads, and the ROC AUC."""

from __future__ import annotations

import json
from importlib.resources import files

import numpy as np

from cns_cli.demo.evaluator import Evaluator
from tools import train_evaluator as TE


def test_packaged_weights_were_trained_on_this_world():
    """Any change to the world's pixels (a colour, a shape, a scene) must come with retrained evaluator weights:
    `python tools/train_evaluator.py train`."""
    report = json.loads((files("cns_cli") / "data" / "evaluator.json").read_text())
    assert Evaluator.load().config["world_sha256"] == report["world_sha256"] == TE.world_fingerprint()


def test_world_fingerprint_follows_the_pixels(monkeypatch):
    from cns_cli.demo import world

    before = TE.world_fingerprint()
    monkeypatch.setitem(world.COLOUR_RGB, "red", (200, 30, 30))
    assert TE.world_fingerprint() != before


def test_a_tiny_training_run_writes_weights_the_package_loads(tmp_path):
    ev, summary = TE.train(TE.TrainSettings(steps=2, batch=8, n_generic=40, n_per_individual=3), log=lambda m: None)
    assert summary["pool_images"] == 40 + 3 * len(TE.ind.INDIVIDUALS) and len(summary["history"]) == 2
    assert ev.config["identities"] == TE.identity_names() and ev.config["world_sha256"] == TE.world_fingerprint()
    again = Evaluator.load(ev.save(tmp_path / "evaluator.safetensors"))
    images = TE.render_individual("rex", 4, seed=1)[0]
    np.testing.assert_array_equal(again.embed(images), ev.embed(images))


def test_roc_auc():
    assert TE.roc_auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert TE.roc_auc(np.array([0.0]), np.array([1.0])) == 0.0
    assert TE.roc_auc(np.array([1.0]), np.array([1.0])) == 0.5
