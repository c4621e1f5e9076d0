"""tools/train_evaluator.py: the packaged evaluator weights were trained on the world as it draws today, the
world's fingerprint follows its pixels, training writes weights `cns_cli.demo.evaluator` loads, and the ROC AUC."""

from __future__ import annotations

import json
from importlib.resources import files

import numpy as np

from cns_cli.demo.evaluator import Evaluator
from cns_cli.demo.world import model_world
from cns_cli.errors import ModelError
from cns_cli.model.loading import builtin_path
from tools import train_evaluator as TE


def test_packaged_weights_were_trained_on_this_world():
    """Any change to the world's pixels (a colour, a shape, a scene) must come with retrained evaluator weights:
    `python tools/train_evaluator.py train --world W`."""
    report = json.loads((files("cns_cli") / "data" / "evaluator.json").read_text())
    ev = Evaluator.load()
    assert ev.config["world_sha256"] == report["world_sha256"] == TE.world_fingerprint(ev.world)


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


def test_a_world_2_evaluator_measures_world_2(tmp_path):
    """`train --world 2`: world 2's colours and individuals, reference renders drawn in world 2, and an
    evaluator that refuses a model of another world."""
    import pytest

    from cns_cli.demo.individuals import individuals_of, reference_renders
    from cns_cli.demo.stage import WORLD_COLOURS

    ev, _ = TE.train(TE.TrainSettings(steps=1, batch=8, n_generic=30, n_per_individual=2, world=2), log=lambda m: None)
    again = Evaluator.load(ev.save(tmp_path / "evaluator.safetensors"))
    assert again.world == 2 and again.colours == list(WORLD_COLOURS[2])
    assert again.config["world_sha256"] == TE.world_fingerprint(2) != TE.world_fingerprint(1)
    expected = again.embed(reference_renders("luna", 32, seed=again.config["ref_seed"], world=2)).mean(0)
    np.testing.assert_allclose(again.reference_embedding("luna"), expected / np.linalg.norm(expected), atol=1e-6)
    assert set(again.nearest_individual(reference_renders("rex", 2, seed=1, world=2))) <= set(individuals_of(2))
    again.check_world(2)
    with pytest.raises(ModelError, match="world 1"):
        again.check_world(1)
    assert Evaluator.load().world == model_world(builtin_path("demo"))  # the packaged one: the bundled model's


def test_a_generic_render_with_an_individual_s_composition_is_that_individual():
    from cns_cli.demo.individuals import individuals_of
    from cns_cli.demo.world import Spec

    rex = individuals_of(2)["rex"]
    assert TE.identity_of(Spec("grass", "dog", "brown", marks=rex.marks, world=2)) == "rex"
    assert TE.identity_of(Spec("grass", "dog", "brown", marks=rex.marks[:1], world=2)) == "generic dog"
    assert TE.identity_of(Spec("grass", "dog", "red")) == "generic dog"  # world 1's individuals have own drawings
    _, specs = TE.render_generic_class("dog", 200, seed=3, w=2)
    assert all(TE.identity_of(s) == "generic dog" for s in specs) and any(s.marks for s in specs)


def test_colour_accuracy_is_reported_per_class_and_pattern():
    from cns_cli.demo.world import Spec

    specs = [Spec("grass", "car", "orange", marks=(("stripes", "black"),), world=2),
             Spec("grass", "car", "orange", marks=(("stripes", "black"), ("cabin", "white")), world=2),
             Spec("grass", "car", "red", marks=(("cabin", "white"),), world=2),
             Spec("grass", "ball", "red", world=2)]
    assert TE._colour_by_pattern(["brown", "orange", "red", "blue"], specs) == {
        "ball none": 0.0, "car none": 1.0, "car stripes": 0.5}
