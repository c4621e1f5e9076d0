"""`cns demo`'s inputs and progress (issue 35): a bad --steps is one line before any photo is rendered, a --base that
is no demo-world model gets advice that works after `pip install` (no repository tool), and every long phase
(generating, scoring) says what it does, with the sampling progress `cns generate` shows."""

from __future__ import annotations

import pytest

from cns_cli.demo.run import DemoConfig, run_demo
from cns_cli.reporting import NullReporter, SamplingProgress
from tests.clitools import cns, one_line_error


def test_bad_steps_are_refused_before_any_photo_is_rendered(tmp_path, no_model_load):
    out = tmp_path / "demo"
    line = one_line_error(cns("demo", "--steps", "0", "--out", out))
    assert line == "error: --steps must be at least 1, got 0"
    assert not out.exists()


def test_a_base_of_no_demo_world_is_told_to_leave_out_base(tiny_base, tmp_path, no_model_load):
    """tiny_base has no training.json: world 1, not the bundled evaluator's world."""
    out = tmp_path / "demo"
    line = one_line_error(cns("demo", "--base", tiny_base, "--out", out))
    assert "leave out --base" in line and "cns learn and cns generate" in line and "tools/" not in line, line
    assert not out.exists()


class _Phases(NullReporter):
    def __init__(self):
        self.phases = []

    def phase(self, message):
        self.phases.append(message)


class _Draws(SamplingProgress):
    def __init__(self):
        self.runs, self.steps = [], 0

    def start(self, images, steps):
        self.runs.append(images)

    def step(self, done, total):
        self.steps += 1


@pytest.mark.slow  # the demo end to end (docs/development.md: the quick subset)
def test_generating_and_scoring_phases_are_reported_with_sampling_progress(tiny_demo_base, tmp_path):
    reporter, draws = _Phases(), _Draws()
    run_demo(tmp_path / "demo", DemoConfig(base=tiny_demo_base, steps=1, photos=2, sample_steps=1), reporter, draws)
    generating = [p for p in reporter.phases if p.startswith("generating")]
    assert len(generating) == 4 and reporter.phases[-1] == "scoring the images with the demo evaluator", reporter.phases
    assert any(p.startswith("forgetting") for p in reporter.phases)
    # every `generate` call of the demo reports its images: first alone, all, regions, after forgetting
    assert draws.runs == [4, 12, 4, 4] and draws.steps == sum(draws.runs)
