"""`python -m cns_cli.demo.assess`: the base model's prompt alignment on seen and held-out captions. On the tests'
tiny random pipeline the numbers mean nothing; what is checked is which captions are scored and the report."""

from __future__ import annotations

import json

from cns_cli.demo import assess, world
from cns_cli.errors import ModelError


def test_alignment_specs_split_seen_from_held_out():
    seen, seen_caps = assess.alignment_specs(40, held_out=False)
    held, held_caps = assess.alignment_specs(40, held_out=True)
    assert not any(world.is_held_out(s) for s in seen)
    assert all(world.is_held_out(s) for s in held)
    for spec, cap in zip(held, held_caps):
        assert f"{spec.colour} {spec.cls}" in cap and world.SCENE_PHRASES[spec.scene] in cap
    assert assess.alignment_specs(40, held_out=True)[1] == held_caps  # seeded


def test_assess_writes_a_report_and_a_sample_sheet(tiny_demo_base, tmp_path):
    from PIL import Image

    assert assess.main([tiny_demo_base, "--n", "3", "--steps", "2", "--out", str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "assessment.json").read_text())
    for key in ("seen", "held_out"):
        assert rep[key]["n"] == 3 and len(rep[key]["captions"]) == 3
        assert all(0 <= rep[key][k] <= 1 for k in ("scene", "class", "colour", "all"))
    assert rep["held_out"]["captions"] == assess.alignment_specs(3, held_out=True, world=world.base_world("demo"))[1]
    width, height = Image.open(tmp_path / "samples.png").size
    assert width == 8 * height  # 3 seen + 3 held-out images: one row of 8 square tiles


def test_a_world_2_model_is_assessed_in_world_2(tiny_base, tmp_path):
    """The captions follow the model's recorded world, the evaluator must measure that world, and a world-2
    report says how often each individual's full description draws that individual."""
    import shutil

    import pytest

    from cns_cli.demo.evaluator import Evaluator
    from cns_cli.demo.individuals import individuals_of
    from cns_cli.model.loading import load_pipeline, resolve_base
    from tools.train_evaluator import TrainSettings, train

    specs, captions = assess.alignment_specs(30, held_out=True, world=2)
    assert all(s.world == 2 and world.is_held_out(s) for s in specs)
    assert any(" with " in c for c in captions) and set(" ".join(captions).split()) <= set(world.vocabulary(2))
    model = tmp_path / "model"
    shutil.copytree(tiny_base, model)
    other = 3 - Evaluator.load().world  # the world the packaged evaluator does not measure
    (model / "training.json").write_text(f'{{"world": {other}}}\n')
    with pytest.raises(ModelError, match=f"world {other}"):
        assess.main([str(model), "--n", "2", "--steps", "1", "--out", str(tmp_path / "a")])
    assert not (tmp_path / "a").exists()
    (model / "training.json").write_text('{"world": 2}\n')
    ev, _ = train(TrainSettings(steps=1, batch=8, n_generic=20, n_per_individual=2, world=2), log=lambda m: None)
    pipe = load_pipeline(resolve_base(str(model)))
    pipe.set_progress_bar_config(disable=True)
    rep = assess.description_recognition(pipe, ev, scenes=("grass",), seeds=1, steps=1)
    assert rep["n"] == 12 and set(rep["per_individual"]) == set(individuals_of(2)) and 0 <= rep["mean"] <= 1
