"""Region flags and plans (no torch): parsing, the auto layout, the context and region texts, and every bad input
`cns generate` must refuse with one line, exit 2, before a model loads and with nothing written."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cns_cli.cli import app
from cns_cli.errors import UsageError
from cns_cli.regions import Box, RegionRequest, auto_boxes, boxes_below_one_cell, context_text, plan_regions, region_text

from tests.bank import bankfactory as bf

CLASSES = {"milo": "cat", "cottage": "house", "rex": "dog"}
runner = CliRunner()


def request(**kw) -> RegionRequest:
    return RegionRequest.from_flags(kw.get("region"), kw.get("layout"), kw.get("region_prompt"), kw.get("strength"))


def test_no_region_flag_means_no_request():
    assert RegionRequest.from_flags(None, None, None, None) is None
    assert RegionRequest.from_flags([], None, [], None) is None


def test_region_flag_parses_with_or_without_brackets():
    r = request(region=["<milo>=0,0,0.5,1", "cottage = 0.5, 0.25, 1, 0.75"])
    assert r.boxes == {"milo": Box(0, 0, 0.5, 1), "cottage": Box(0.5, 0.25, 1, 0.75)}
    assert r.layout == "manual" and r.strength == 1.0


def test_auto_layout_is_equal_columns_in_order_of_first_mention():
    plan = plan_regions("a <cottage> and a <milo> and a <rex> on grass", request(layout="auto"), CLASSES)
    assert [r.concept for r in plan.regions] == ["cottage", "milo", "rex"]
    assert [r.box.as_list() for r in plan.regions] == [[0, 0, 1 / 3, 1], [1 / 3, 0, 2 / 3, 1], [2 / 3, 0, 1, 1]]
    assert auto_boxes(["a", "b"]) == [Box(0, 0, 0.5, 1), Box(0.5, 0, 1, 1)]
    assert plan.layout == "auto"


def test_context_text_drops_references_and_keeps_class_words():
    assert context_text("a <milo> and a <cottage> on grass", CLASSES) == "a cat and a house on grass"
    assert context_text("a <milo> cat on grass", CLASSES) == "a cat on grass"  # already expanded: no double class


def test_region_texts_default_and_scene_style_and_override():
    prompt = "a <milo> and a <cottage> on the beach"
    assert region_text("milo", prompt, CLASSES, "short") == "a <milo> cat"
    assert region_text("milo", prompt, CLASSES) == "a <milo> cat on the beach"  # the default: scene words kept
    assert region_text("milo", "a <milo> on grass next to a house", CLASSES) == "a <milo> cat on grass next to a house"
    assert region_text("milo", "<milo> and <rex>", CLASSES) == "a <milo> cat"  # nothing after the last concept
    assert region_text("cottage", "a <milo> cat and a <cottage> house in the snow", CLASSES, "scene") == \
        "a <cottage> house in the snow"
    plan = plan_regions(prompt, request(layout="auto", region_prompt=["milo=a <milo> in the snow"]), CLASSES)
    assert plan.texts == ["a <milo> cat in the snow", "a <cottage> house on the beach"]


def test_plan_record_and_a1111_name_everything():
    plan = plan_regions("a <milo> and a <cottage> on grass",
                        request(region=["milo=0,0,0.6,1", "cottage=0.4,0,1,1"], strength=0.8), CLASSES)
    rec = plan.record()
    assert rec == {"layout": "manual", "strength": 0.8, "context": "a cat and a house on grass",
                   "regions": [{"concept": "milo", "box": [0, 0, 0.6, 1], "text": "a <milo> cat on grass"},
                               {"concept": "cottage", "box": [0.4, 0, 1, 1], "text": "a <cottage> house on grass"}]}
    line = plan.a1111()
    assert 'milo=0,0,0.6,1 "a <milo> cat on grass"' in line and "Region strength: 0.8" in line and "Region layout: manual" in line


def test_unconditional_class_texts_only_when_asked():
    r = RegionRequest(auto=True, uncond="class")
    assert plan_regions("a <milo> and a <rex> on grass", r, CLASSES).uncond_texts == ("a cat", "a dog")
    assert plan_regions("a <milo> and a <rex> on grass", request(layout="auto"), CLASSES).uncond_texts is None


def test_small_boxes_are_found():
    small, big = Box(0, 0, 0.05, 1), Box(0, 0, 0.5, 0.5)
    assert boxes_below_one_cell([small, big], 16, 16) == [small]


@pytest.mark.parametrize("kw, words", [
    ({"region": ["milo=0,0,1.5,1"]}, "must lie in [0, 1]"),
    ({"region": ["milo=-0.1,0,1,1"]}, "must lie in [0, 1]"),
    ({"region": ["milo=0.5,0,0.5,1"]}, "empty or inverted"),
    ({"region": ["milo=0.6,0,0.2,1"]}, "empty or inverted"),
    ({"region": ["milo=0,0,1"]}, "four numbers"),
    ({"region": ["milo=0,0,a,1"]}, "four numbers"),
    ({"region": ["milo:0,0,1,1"]}, "NAME=VALUE"),
    ({"region": ["Milo=0,0,1,1"]}, "NAME=VALUE"),
    ({"region": ["milo=0,0,1,1", "<milo>=0,0,.5,1"]}, "two --region boxes"),
    ({"region": ["milo=0,0,1,1"], "layout": "auto"}, "exclude each other"),
    ({"layout": "grid"}, "--layout 'grid'"),
    ({"layout": "auto", "strength": 1.5}, "--region-strength must be in [0, 1]"),
    ({"layout": "auto", "strength": float("nan")}, "--region-strength"),
    ({"strength": 0.5}, "need regions"),
    ({"region_prompt": ["milo=a cat"]}, "need regions"),
    ({"layout": "auto", "region_prompt": ["milo="]}, "no text"),
])
def test_bad_flags(kw, words):
    with pytest.raises(UsageError) as e:
        request(**kw)
    assert words in str(e.value)


@pytest.mark.parametrize("prompt, kw, words", [
    ("a <milo> on grass", {"region": ["rex=0,0,1,1", "milo=0,0,1,1"]}, "does not mention <rex>"),
    ("a <milo> and a <rex>", {"region": ["milo=0,0,.5,1"]}, "mentions <rex> but no --region"),
    ("a <milo> on grass", {"region": ["dino=0,0,1,1"]}, "the bank does not have"),
    ("a cat on grass", {"layout": "auto"}, "mentions none"),
    ("a <milo> on grass", {"layout": "auto", "region_prompt": ["rex=a <rex>"]}, "does not mention <rex>"),
])
def test_prompts_that_do_not_match_the_regions(prompt, kw, words):
    with pytest.raises(UsageError) as e:
        plan_regions(prompt, request(**kw), CLASSES)
    assert words in str(e.value)
    if words != "the bank does not have":
        assert repr(prompt) in str(e.value)  # the error names the prompt


@pytest.fixture(scope="module")
def fake_bank(tmp_path_factory):
    """A bank whose base model cannot be loaded: any error below came before a model load."""
    path = tmp_path_factory.mktemp("rg") / "b.cnsbank"
    bank = bf.build_bank(path, 0)
    bf.learn(bank, "milo", seed=1)
    bf.learn(bank, "rex", seed=2)
    return path


@pytest.mark.parametrize("args, words", [
    (["a <milo> and a <rex>", "--region", "milo=0,0,2,1", "--region", "rex=0,0,1,1"], "must lie in [0, 1]"),
    (["a <milo> and a <rex>", "--region", "milo=0,0,1,1"], "no --region gives it a box"),
    (["a <milo>", "--region", "rex=0,0,1,1", "--region", "milo=0,0,1,1"], "does not mention <rex>"),
    (["a <milo>", "--region", "milo=0,0,1,1", "--layout", "auto"], "exclude each other"),
    (["a cat", "--layout", "auto"], "mentions none"),
    (["a <milo>", "--layout", "auto", "--region-strength", "-0.1"], "--region-strength"),
    (["a <milo> and a <rex>", "-", "--region", "milo=0,0,.5,1", "--region", "rex=.5,0,1,1"],
     "prompt 'a <milo> on grass' does not mention <rex>"),
])
def test_cli_refuses_before_loading_a_model(fake_bank, tmp_path, args, words):
    out = tmp_path / "out"
    r = runner.invoke(app, ["--bank", str(fake_bank), "generate", *args, "--out", str(out)],
                      input="a <milo> and a <rex>\na <milo> on grass\n")
    assert r.exit_code == 2, (r.stderr, r.exception)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in r.stderr
    assert words in lines[0], lines[0]
    assert not out.exists()
