"""`cns bench` and `cns demo` follow the demo world of the model they are given, and a model of another world than
the packaged evaluator's is one line (exit 2) before anything is written."""

from __future__ import annotations

import json
import shutil

import pytest

from cns_cli.bench.protocol import BenchConfig
from cns_cli.demo.world import model_world
from cns_cli.model.loading import builtin_path
from tests.clitools import cns, one_line_error

BUNDLED = model_world(builtin_path("demo"))  # the packaged evaluator's world too
OTHER = 3 - BUNDLED  # the other demo world (1 or 2)


@pytest.fixture
def other_world_model(tmp_path):
    """The bundled model's folder, recorded as a model of the other demo world (its weights do not matter:
    nothing may load)."""
    folder = tmp_path / "model"
    shutil.copytree(builtin_path("demo"), folder, ignore=shutil.ignore_patterns("*.safetensors", "*.png", "*.log"))
    doc = json.loads((folder / "training.json").read_text())
    (folder / "training.json").write_text(json.dumps({**doc, "world": OTHER}))
    return folder


@pytest.mark.parametrize("command", ["bench", "demo"])
def test_a_model_of_another_world_than_the_evaluator_is_refused_first(command, other_world_model, tmp_path, no_model_load):
    out = tmp_path / "out"
    r = cns(command, "--base", other_world_model, "--out", out)
    assert r.exit_code == 2, r.stderr
    line = one_line_error(r)
    assert f"evaluator scores demo world {BUNDLED}, but the --base model is of world {OTHER}" in line, line
    assert "leave out --base" in line and "tools/" not in line  # pip installs no tools/ (issue 35)
    assert not out.exists()


def test_bench_draws_the_concepts_and_captions_of_the_model_s_world(other_world_model, tmp_path, monkeypatch):
    """With an evaluator of the model's world, the photos are that world's individuals and the zero-shot captions
    that world's (stopped at the first photo: nothing needs to train to show what bench asked for)."""
    from cns_cli.bench.protocol import run_bench
    from cns_cli.demo import individuals
    from cns_cli.demo.evaluator import Evaluator

    asked = []

    class Stop(Exception):
        pass

    def photos(name, folder, n=6, seed=0, captions=False, world=1):
        asked.append((name, world))
        raise Stop

    monkeypatch.setattr(Evaluator, "check_world", lambda self, world: None)  # as that world's evaluator would pass
    monkeypatch.setattr(individuals, "render_photos", photos)
    with pytest.raises(Stop):
        run_bench(tmp_path / "out", BenchConfig.quick(base=str(other_world_model)))
    assert asked == [("rex", OTHER)]
    assert BenchConfig().sampling(OTHER).world == OTHER  # and what the scores are drawn with


def test_a_model_of_an_unknown_world_is_one_line(other_world_model, tmp_path, no_model_load):
    record = other_world_model / "training.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "world": 3}))
    r = cns("demo", "--base", other_world_model, "--out", tmp_path / "out")
    assert r.exit_code == 2 and "unknown world 3" in one_line_error(r) and not (tmp_path / "out").exists()
