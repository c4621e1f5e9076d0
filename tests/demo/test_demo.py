"""`cns demo` end to end at reduced steps. The bundled demo model is trained by
`python tools/train_demo_model.py`; until it ships, the run uses the tests' tiny pipeline as its base, which
exercises every stage (photos, two learns, generation, forgetting, scoring, contact sheet)."""

from __future__ import annotations

import pytest
from PIL import Image
from typer.testing import CliRunner

from cns_cli.cli import app
from cns_cli.demo.run import PAIR, DemoConfig, run_demo
from cns_cli.errors import UsageError
from cns_cli.model.loading import builtin_path

pytestmark = pytest.mark.slow  # runs benchmarks, the demo or a trainer end to end (docs/development.md: the quick subset)


def test_demo_runs_end_to_end(tiny_demo_base, tmp_path):
    cfg = DemoConfig(base=tiny_demo_base, steps=2, photos=3, sample_steps=2)
    doc = run_demo(tmp_path / "demo", cfg)
    assert doc["concepts"] == list(PAIR) == ["milo", "cottage"]
    for name in doc["concepts"]:
        s = doc["scores"][name]
        assert -1 <= s["identity_learned"] <= 1 and -1 <= s["identity_base_class"] <= 1
        assert 0 <= s["scene_accuracy"] <= 1
    assert [doc["scores"][n]["base_class_prompt"] for n in PAIR] == ["an orange cat", "a pink house"]  # caption words
    assert doc["forget_kept_other_identical"] is True
    sheet = Image.open(doc["contact_sheet"])
    assert sheet.height == 128 * 9  # 3 rows per concept, both together plain and with regions, after forgetting
    regional = sorted((tmp_path / "demo" / "images").glob("*-regions-*.png"))
    assert len(regional) == 4 and doc["together_regions"]["layout"] == "auto"
    assert set(doc["together_regions"]["identity"]) == set(PAIR) and 0 <= doc["together_regions"]["in_order"] <= 1
    # running it again replaces the earlier run (README's setup command can be re-run) ...
    (tmp_path / "demo" / "stale.txt").write_text("from the first run")
    again = run_demo(tmp_path / "demo", cfg)
    assert again["scores"] == doc["scores"] and not (tmp_path / "demo" / "stale.txt").exists()
    # ... but a folder that is not a demo run is never touched
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    with pytest.raises(UsageError, match="not empty"):
        run_demo(other, cfg)
    assert (other / "keep.txt").read_text() == "precious"


def test_demo_without_the_bundled_model_says_what_to_do(tmp_path, monkeypatch):
    import cns_cli.model.loading as loading

    monkeypatch.setattr(loading, "builtin_path", lambda name: tmp_path / "absent")
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo")])
    assert r.exit_code == 2 and "not bundled" in r.stderr


@pytest.mark.skipif(not (builtin_path("demo") / "model_index.json").is_file(),
                    reason="the demo model is not bundled yet (python tools/train_demo_model.py)")
def test_demo_on_the_bundled_model_at_reduced_steps(tmp_path):
    """The real quickstart path (`--base demo`), shortened: photos with captions, two learns on the bundled
    model, generation, exact forgetting, scores and the sheet."""
    cfg = DemoConfig(steps=10, photos=4, sample_steps=6)
    doc = run_demo(tmp_path / "demo", cfg)
    assert doc["forget_kept_other_identical"] is True
    assert len(doc["together"]["prompts"]) == 4 and set(doc["together"]["identity"]) == set(PAIR)
    assert (tmp_path / "demo" / "photos" / "milo" / "milo-00.txt").read_text().startswith("a <milo> cat ")
    for name in PAIR:
        assert 0 <= doc["scores"][name]["class_accuracy"] <= 1
    assert Image.open(doc["contact_sheet"]).size[1] == 128 * 9
