"""`cns bench --quick` end to end on the tests' tiny pipeline: the output, not the numbers (a random model
draws noise). The full benchmark on the demo model is a long run (docs/benchmark.md)."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image
from typer.testing import CliRunner

from cns_cli.bank import Bank
from cns_cli.learn import LearnConfig
from cns_cli.bench import results
from cns_cli.bench.methods import METHODS
from cns_cli.bench.protocol import BenchConfig, run_bench, summarise
from cns_cli.cli import app
from cns_cli.errors import UsageError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench(tiny_demo_base, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    return out, run_bench(out, BenchConfig.quick(base=tiny_demo_base, steps=3))


def _numbers(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _numbers(v)
    elif isinstance(x, list):
        for v in x:
            yield from _numbers(v)
    elif isinstance(x, float):
        yield x


def test_every_method_scores_every_learned_concept_after_every_step(bench):
    out, doc = bench
    assert list(doc["methods"]) == list(METHODS) and doc["concepts"] == ["rex", "fedora"]
    for key, m in doc["methods"].items():
        assert [st["learned"] for st in m["steps"]] == ["rex", "fedora"]
        assert [list(st["concepts"]) for st in m["steps"]] == [["rex"], ["rex", "fedora"]]
        for group in ("pairs", "regional_pairs"):
            p = m[group]  # in order is a special case of either order
            assert p["n"] == 2 and len(p["prompts"]) == 2
            assert 0 <= p["in_order"] <= p["shown"] <= 1 and 0 <= p["classes"] <= 1
        assert m["regional_pairs"]["regions"]["layout"] == "auto" and "regions" not in m["pairs"]
        assert m["regional_triples"] == {"n": 0}  # --quick learns two concepts
        assert all(math.isfinite(v) for v in _numbers(m)), key
    assert json.loads((out / "bench.json").read_text()) == json.loads(json.dumps(doc))


def test_textual_inversion_keeps_the_base_zero_shot_score_exactly(bench):
    """TI changes no UNet weight and held-out base captions contain no concept token: the same pixels."""
    _, doc = bench
    assert doc["methods"]["ti"]["steps"][-1]["zero_shot"] == doc["base"]["zero_shot"]
    assert doc["methods"]["ti"]["summary"]["zero_shot_change_points"] == 0


def test_cns_trains_and_stores_a_fraction_of_what_the_baselines_do(bench):
    _, doc = bench
    s = {k: m["summary"] for k, m in doc["methods"].items()}
    for baseline in ("kv-finetune", "lora-seq", "lora-merge"):
        assert s["cns"]["params_trained_per_concept"] < s[baseline]["params_trained_per_concept"] / 10
        assert s["cns"]["bytes_per_concept"] < s[baseline]["bytes_per_concept"] / 10
    assert s["cns-dense"]["params_trained_per_concept"] > s["cns"]["params_trained_per_concept"]


def test_each_ablation_is_recorded_in_its_bank_and_changes_what_it_says(bench):
    out, _ = bench
    heads = {k: Bank.open(out / "banks" / f"{k}.cnsbank").head() for k in METHODS if METHODS[k].group != "baseline"}
    training = {k: h.concepts["rex"].training for k, h in heads.items()}
    assert training["cns"]["selection"] == "attribution" and training["cns"]["remove_general"] is True
    assert training["cns-random"]["selection"] == "random"
    assert training["cns-keep-general"]["remove_general"] is False
    assert (training["cns-no-reg"]["max_drift"], training["cns-no-reg"]["reg_lambda"]) == (None, 0)
    assert (training["cns-lambda"]["max_drift"], training["cns-lambda"]["reg_lambda"]) == (None, 1.0)
    assert training["cns"]["max_drift"] == LearnConfig.max_drift
    assert heads["cns-dense"].concepts["rex"].slice.rank == 32  # the tiny text width: full rows
    def rows(key):  # the K/V rows the concept owns, as (layer, row) pairs
        bank = Bank.open(out / "banks" / f"{key}.cnsbank")
        delta = bank.read_object(heads[key].concepts["rex"].delta)
        return {(k, int(r)) for k, v in delta.items() if k.endswith(".rows") for r in v}

    assert rows("cns") and rows("cns-random") and rows("cns") != rows("cns-random")


def test_it_writes_the_table_plot_and_contact_sheet(bench):
    out, doc = bench
    table = (out / "table.md").read_text()
    assert all(f"`{k}`" in table for k in METHODS)
    assert Image.open(doc["files"]["plot"]).size[0] > 400
    sheet = Image.open(doc["files"]["contact_sheet"])
    assert sheet.height == 20 + 96 * (1 + len(METHODS))  # photos row + one row per method


def test_forgetting_is_identity_just_after_learning_minus_at_the_end():
    step = lambda learned, ids: {"learned": learned, "concepts": {n: {"identity": v, "recognised": 1.0, "scene": 1.0, "class": 1.0}  # noqa: E731
                                                                    for n, v in ids.items()},
                                 "zero_shot": {"accuracy": 0.5}, "learn": {"params_trained": 1, "weights_changed": 1,
                                                                            "bytes_total": 10, "seconds": 1.0}}
    entry = {"steps": [step("a", {"a": 0.9}), step("b", {"a": 0.7, "b": 0.8}), step("c", {"a": 0.6, "b": 0.8, "c": 0.5})],
             "pairs": {"shown": 0.5}}
    s = summarise(entry, {"accuracy": 0.6}, 3)
    assert s["mean_forgetting"] == pytest.approx(((0.9 - 0.6) + (0.8 - 0.8)) / 2)
    assert s["final_identity"] == pytest.approx((0.6 + 0.8 + 0.5) / 3)
    assert s["zero_shot_change_points"] == pytest.approx(-10)
    assert s["bytes_per_concept"] == pytest.approx(10 / 3)


def test_bad_input_is_one_line_and_never_touches_a_foreign_folder(tiny_demo_base, tmp_path):
    with pytest.raises(UsageError, match="unknown method 'dreambooth'"):
        BenchConfig(methods=("cns", "dreambooth"))
    with pytest.raises(UsageError, match="--concepts must be 1..12"):
        BenchConfig(concepts=13)
    with pytest.raises(UsageError, match="--lr-token must be 0 or more"):
        BenchConfig(lr_token=-1e-3)
    with pytest.raises(UsageError, match="--zero-shot-prompts must be at least 1"):
        BenchConfig(zero_shot_n=0)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("precious")
    r = CliRunner().invoke(app, ["bench", "--quick", "--base", tiny_demo_base, "--out", str(mine)])
    assert r.exit_code == 2 and "not empty" in r.output and (mine / "keep.txt").read_text() == "precious"
    r = CliRunner().invoke(app, ["bench", "--quick", "--methods", "cns,nope", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "unknown method 'nope'" in r.output and not (tmp_path / "x").exists()


def test_the_cli_prints_one_json_document(tiny_demo_base, tmp_path):
    r = CliRunner().invoke(app, ["bench", "--quick", "--methods", "ti,cns", "--steps", "1", "--lr-token", "2e-3", "--zero-shot-prompts", "3",
                                 "--base", tiny_demo_base, "--out", str(tmp_path / "b"), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert sorted(doc["methods"]) == ["cns", "ti"] and (tmp_path / "b" / "forgetting.png").is_file()
    assert doc["config"]["lr_token"] == 2e-3 and doc["config"]["zero_shot_n"] == 3
    assert doc["methods"]["ti"]["steps"][0]["zero_shot"]["n"] == 3
    assert Bank.open(tmp_path / "b" / "banks" / "cns.cnsbank").head().concepts["rex"].training["lr_token"] == 2e-3


def test_concepts_are_prompted_the_way_cns_generate_sends_them_with_their_class_word():
    # Every method trained on "a <rex> dog ..." (captions and `cns learn`'s prompt); scoring "a <rex> on the
    # beach" without the class word would measure a prompt no user of `cns generate` ever sends.
    from pathlib import Path

    from cns_cli.bench.scoring import Sampling, concept_prompts, group_prompts
    from cns_cli.bench.trainer import ConceptData

    s = Sampling(scenes=("beach", "night"), seeds=2, steps=1, guidance=1.0, zero_shot_n=1)
    rex, fedora = ConceptData("rex", "dog", Path(".")), ConceptData("fedora", "hat", Path("."))
    prompts, seeds, scenes = concept_prompts(rex, s)
    assert prompts == ["a <rex> dog on the beach"] * 2 + ["a <rex> dog at night"] * 2
    assert len(set(seeds)) == 4 and scenes == ["beach", "beach", "night", "night"]
    pairs = group_prompts([rex, fedora], s, 2)
    assert [p for p, *_ in pairs] == ["a <rex> dog and a <fedora> hat on the beach"] * 2 + \
        ["a <rex> dog and a <fedora> hat at night"] * 2
    assert len({sd for *_, sd in pairs}) == 4 and pairs[0][1] == ("rex", "fedora")


def test_a_group_counts_every_concept_in_any_order_and_nothing_else():
    from cns_cli.bench.scoring import group_outcome

    assert group_outcome(["rex", "fedora"], ["rex", "fedora"]) == {"shown": True, "in_order": True}
    assert group_outcome(["fedora", "rex"], ["rex", "fedora"]) == {"shown": True, "in_order": False}
    assert group_outcome(["rex", "rex"], ["rex", "fedora"]) == {"shown": False, "in_order": False}  # one concept twice
    assert group_outcome(["rex", "bella"], ["rex", "fedora"]) == {"shown": False, "in_order": False}
    assert group_outcome(["milo", "rex", "cap"], ["rex", "cap", "milo"]) == {"shown": True, "in_order": False}
    assert group_outcome(["rex", "rex", "cap"], ["rex", "cap", "milo"]) == {"shown": False, "in_order": False}


def test_columns_are_the_auto_layout_boxes_centred_on_a_canvas():
    import numpy as np

    from cns_cli.demo.pairs import columns

    img = np.zeros((64, 64, 3), np.uint8)
    img[:, :, 0] = np.arange(64)[None, :]  # red = x
    halves, thirds = columns(img, 2), columns(img, 3)
    assert all(c.shape == (64, 64, 3) for c in halves + thirds)
    assert halves[0][0, 16:48, 0].tolist() == list(range(32)) and halves[1][0, 16:48, 0].tolist() == list(range(32, 64))
    assert thirds[1][0, :, 0].min() == 21 and thirds[1][0, :, 0].max() == 42  # x in [21, 43): the middle third


def test_regional_groups_are_drawn_with_the_auto_layout(monkeypatch):
    """score_groups hands generate one `--layout auto` plan per prompt (three columns for triples) and reads one
    column per concept."""
    import numpy as np

    from cns_cli.bench.scoring import RegionMode, Sampling, score_groups
    from cns_cli.bench.trainer import ConceptData
    from cns_cli.demo import assess
    from cns_cli.demo.evaluator import Evaluator
    from cns_cli.demo.individuals import INDIVIDUALS

    seen = {}

    def fake(pipe, prompts, regions=None, **kw):
        seen["regions"] = regions
        return np.zeros((len(prompts), 64, 64, 3), np.uint8)

    monkeypatch.setattr(assess, "generate", fake)
    concepts = [ConceptData(n, INDIVIDUALS[n].cls, None) for n in ("rex", "fedora", "milo")]
    s = Sampling(scenes=("grass", "snow"), seeds=1, steps=1, guidance=1.0, zero_shot_n=1)
    got, images = score_groups(None, Evaluator.load(), concepts, s, 3, RegionMode(), {"rex": 0.5, "fedora": 0.5, "milo": 0.5})
    plans = seen["regions"]
    assert got["n"] == 2 and images.shape == (2, 64, 64, 3) and got["shown"] == 0.0
    assert [r.concept for r in plans[0].regions] == ["rex", "fedora", "milo"]
    assert [r.box.as_list() for r in plans[0].regions][1] == [1 / 3, 0, 2 / 3, 1]
    assert plans[0].context == "a dog and a hat and a cat on grass" and plans[1].texts[0] == "a <rex> dog in the snow"
    assert got["regions"] == {"layout": "auto", "text_style": "scene", "uncond": "keep", "strength": 1.0}


def test_pair_scores_read_each_half_of_real_two_concept_renders(monkeypatch):
    """score_groups on rendered pairs (the evaluator is exact on renders): one pair drawn swapped, which counts for
    "both" (concepts and classes) and not "in order"; one with a dog where the cat should be, which counts for nothing."""
    import numpy as np

    from cns_cli.bench.scoring import Sampling, score_groups
    from cns_cli.bench.trainer import ConceptData
    from cns_cli.demo import assess
    from cns_cli.demo.evaluator import Evaluator
    from cns_cli.demo.individuals import individual_spec, individuals_of
    from cns_cli.demo.pairs import render_pair
    from cns_cli.demo.world import base_world

    ev = Evaluator.load()
    people = individuals_of(ev.world)  # the packaged evaluator's world: the bundled model's (base_world)
    assert ev.world == base_world("demo")

    def spec(name):  # the individual as its world draws it (world 2: its marks too), on grass
        return individual_spec(name, np.random.default_rng(1), scene="grass", world=ev.world)

    drawn = {"a <rex> dog and a <fedora> hat on grass": ("fedora", "rex"),  # swapped
             "a <milo> cat and a <beetle> car on grass": ("bella", "beetle")}  # a dog, not the cat
    monkeypatch.setattr(assess, "generate", lambda pipe, prompts, **kw: np.stack(
        [render_pair(spec(drawn[p][0]), spec(drawn[p][1]), np.random.default_rng(0)) for p in prompts]))
    concepts = [ConceptData(n, people[n].cls, None) for n in ("rex", "fedora", "milo", "beetle")]
    s = Sampling(scenes=("grass",), seeds=1, steps=1, guidance=1.0, zero_shot_n=1, world=ev.world)
    got, images = score_groups(None, ev, concepts, s, 2)
    assert got["n"] == 2 and images.shape == (2, 64, 64, 3)
    assert (got["shown"], got["in_order"], got["classes"]) == (0.5, 0.0, 0.5)


@pytest.mark.parametrize("args,concepts,steps", [(["--quick"], 2, 8), (["--quick", "--concepts", "3"], 3, 8),
                                                 ([], 10, 150), (["--concepts", "4"], 4, 150)])
def test_concepts_counts_with_quick_too(monkeypatch, tmp_path, args, concepts, steps):
    import cns_cli.bench.protocol as protocol

    seen = {}

    def run_bench(out, config, reporter, resume=False):  # the config the CLI built, nothing run
        seen["config"] = config
        return {}

    monkeypatch.setattr(protocol, "run_bench", run_bench)
    r = CliRunner().invoke(app, ["bench", *args, "--out", str(tmp_path / "b"), "--json"])
    assert r.exit_code == 0, r.output
    assert (seen["config"].concepts, seen["config"].steps) == (concepts, steps)
    r = CliRunner().invoke(app, ["bench", "--quick", "--concepts", "13", "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "--concepts must be 1..12" in r.output


def test_without_the_bench_extra_the_bench_says_which_pip_command(tmp_path, monkeypatch):
    import importlib.util

    from tests.clitools import cns, one_line_error

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    line = one_line_error(cns("bench", "--quick", "--out", tmp_path / "b"))
    assert "pip install 'cns-cli[bench]'" in line and "peft" in line and "matplotlib" not in line.split("run:")[0]
    assert not (tmp_path / "b").exists()


def _scores(entry: dict) -> list:
    """What a method measured, without its timings (those differ from process to process)."""
    return [(st["learned"], st["concepts"], st["zero_shot"]) for st in entry["steps"]] + [entry["pairs"]]


def test_an_interrupted_run_resumes_with_the_finished_methods_kept_and_the_same_numbers(bench, tiny_demo_base,
                                                                                         tmp_path, monkeypatch):
    """A run stopped during its second method keeps the first (bench.json and its images); --resume runs only the
    second, which measures what it measures in an uninterrupted run (the module's run of every method)."""
    import cns_cli.bench.protocol as protocol

    _, full = bench
    out, config = tmp_path / "run", BenchConfig.quick(base=tiny_demo_base, steps=3, methods=("ti", "cns"))
    real = protocol.make_method

    def stop_at_cns(key, budget, workdir):
        method = real(key, budget, workdir)
        if key == "cns":  # learns its first concept into its bank, then the machine "goes away"
            learn = method.learn

            def learn_then_stop(c):
                learn(c)
                raise KeyboardInterrupt

            method.learn = learn_then_stop
        return method

    monkeypatch.setattr(protocol, "make_method", stop_at_cns)
    with pytest.raises(KeyboardInterrupt):
        run_bench(out, config)
    assert list(json.loads((out / "bench.json").read_text())["methods"]) == ["ti"]
    assert (out / "images" / "ti.safetensors").is_file() and (out / "banks" / "cns.cnsbank").is_dir()
    monkeypatch.setattr(protocol, "make_method", real)

    doc = run_bench(out, config, resume=True)
    assert doc["resumed"] == ["ti"] and list(doc["methods"]) == ["ti", "cns"]
    for key in ("ti", "cns"):
        assert _scores(doc["methods"][key]) == _scores(full["methods"][key]), key
    assert len(Bank.open(out / "banks" / "cns.cnsbank").head().concepts) == 2  # started over, not on top
    assert json.loads((out / "bench.json").read_text()) == json.loads(json.dumps(doc))
    kept = results.load_images(out / "images" / "ti.safetensors")  # what the sheet's ti row is drawn from
    assert set(kept["concepts"]) == {"rex", "fedora"} and kept["concepts"]["rex"].dtype.name == "uint8"
    # only the sheet's tiles: every image of the first concept, the first of the last one and of each group
    assert len(kept["concepts"]["rex"]) == len(config.scenes) * config.seeds and len(kept["concepts"]["fedora"]) == 1
    assert kept["pairs"].shape == (1, 64, 64, 3) and kept["regional_triples"].shape[0] == 0
    from cns_cli.sheet import contact_sheet

    three_rows = contact_sheet([(k, [kept["pairs"][0]] * 4) for k in ("photos", "ti", "cns")], 96, 130, "t")
    assert Image.open(doc["files"]["contact_sheet"]).height == three_rows.height  # photos, ti (kept) and cns


def test_resume_refuses_a_folder_without_a_run_or_with_other_settings(bench, tiny_demo_base, tmp_path):
    out, _ = bench
    with pytest.raises(UsageError, match="holds no bench run to continue"):
        run_bench(tmp_path / "empty", BenchConfig.quick(base=tiny_demo_base), resume=True)
    with pytest.raises(UsageError, match="has steps 3, this one 4"):
        run_bench(out, BenchConfig.quick(base=tiny_demo_base, steps=4), resume=True)
    assert json.loads((out / "bench.json").read_text())["config"]["steps"] == 3  # untouched
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "cns-bench.json").write_text("{}")
    (broken / "bench.json").write_text('{"config": [1, 2]}')
    with pytest.raises(UsageError, match="not a bench.json this version can read"):
        run_bench(broken, BenchConfig.quick(base=tiny_demo_base), resume=True)


def test_bench_vectors_is_checked_as_cns_learn_does_and_an_older_run_resumes_as_one_vector(tmp_path):
    from cns_cli.bench.protocol import MARKER, _config_doc, _earlier_run

    with pytest.raises(UsageError, match=r"^--vectors must be a whole number from 1 to 16, got 0$"):
        BenchConfig(vectors=0)
    r = CliRunner().invoke(app, ["bench", "--quick", "--vectors", "17", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--vectors must be a whole number from 1 to 16, got 17" in r.output
    assert not (tmp_path / "x").exists()
    out = tmp_path / "old"  # a run from before --vectors: its config has no "vectors"
    out.mkdir()
    (out / MARKER).write_text("{}\n")
    config = _config_doc(BenchConfig.quick(), "cpu")
    del config["vectors"]
    (out / "bench.json").write_text(json.dumps({"config": config, "base": {}, "methods": {}}))
    assert _earlier_run(out, BenchConfig.quick(), "cpu")["config"] == config
    with pytest.raises(UsageError, match="has vectors 1, this one 2"):
        _earlier_run(out, BenchConfig.quick(vectors=2), "cpu")


# -- per-method files, order independence, processes ------------------------------------------------------------


def _without_timings(x):
    """A document without what differs from process to process: learning seconds, file paths, resumed keys."""
    if isinstance(x, dict):
        return {k: _without_timings(v) for k, v in x.items()
                if k not in ("seconds", "learn_seconds_per_concept", "files", "resumed")}
    if isinstance(x, list):
        return [_without_timings(v) for v in x]
    return x


@pytest.fixture(scope="module")
def pair(tiny_demo_base, tmp_path_factory):
    """ti then cns: in the module's run of every method cns came first and ti last."""
    out = tmp_path_factory.mktemp("pair") / "out"
    return out, run_bench(out, BenchConfig.quick(base=tiny_demo_base, steps=3, methods=("ti", "cns")))


def test_a_method_measures_the_same_first_or_after_another_method(bench, pair):
    """What runs before a method in its process changes nothing of its numbers or images: so it may run on any
    rank, in any order."""
    (full_out, full), (out, doc) = bench, pair
    for key in ("ti", "cns"):
        assert _without_timings(doc["methods"][key]) == _without_timings(full["methods"][key]), key
        mine, theirs = (results.load_images(results.images_path(o, key)) for o in (out, full_out))
        assert mine["concepts"].keys() == theirs["concepts"].keys()
        assert all((mine["concepts"][n] == theirs["concepts"][n]).all() for n in mine["concepts"])
        assert all((mine[g] == theirs[g]).all() for g in ("pairs", "regional_pairs", "regional_triples"))


def test_each_method_leaves_its_own_files_and_bench_json_is_made_of_them(pair):
    out, doc = pair
    assert sorted(p.name for p in (out / "methods").iterdir()) == ["cns.json", "ti.json"]
    for key in ("ti", "cns"):
        saved = json.loads(results.entry_path(out, key).read_text())
        assert saved["method"] == key and saved["entry"] == json.loads(json.dumps(doc["methods"][key]))
        assert saved["config"] == doc["config"]
    on_disk = json.loads((out / "bench.json").read_text())
    assert list(on_disk["methods"]) == ["ti", "cns"] and on_disk == json.loads(json.dumps(doc))


def test_a_one_process_bench_joins_no_process_group(pair):
    """The run in one process (the `pair` fixture, in this process) started no process group and no PartialState
    (diffusers itself may import accelerate, so the test is that neither was started)."""
    import torch.distributed as td
    from accelerate.state import PartialState

    assert not td.is_initialized() and PartialState._shared_state == {}
