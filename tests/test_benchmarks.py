"""The benchmark scripts run end to end on tiny settings and report what they promise (their numbers are
measured by running them, not asserted here: timing assertions in tests only measure the CI machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cns_cli.learn import LearnConfig

pytestmark = pytest.mark.slow  # runs benchmarks, the demo or a trainer end to end (docs/development.md: the quick subset)

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, str(BENCH / script), *args, "--json"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_storage_compares_the_three_ways_of_storing_a_concept():
    r = run("storage.py")
    for shape in ("tiny", "sd15", "sdxl"):
        assert r[shape]["cns_bytes"] < r[shape]["lora_r4_fp16_bytes"] < r[shape]["lora_r4_fp32_bytes"]
    assert r["sd15"]["cns_rows"] == 1454 and r["sd15"]["kv_rows"] == 24960  # the paper's budget at SD 1.5 shapes
    # SDXL: 70 attn2 layers (140 K/V linears: 20 of 640 rows, 120 of 1280) and the target of ≤ 100 KB
    assert r["sdxl"]["kv_rows"] == 20 * 640 + 120 * 1280 and r["sdxl"]["cns_bytes"] <= 100_000
    assert r["sdxl"]["cns_parameters"] == r["sdxl"]["cns_rows"] * 4 + 768 + 1280


def test_learn_step_reports_time_ratio_and_memory_for_every_method():
    r = run("learn_step.py", "--rounds", "1", "--steps", "1")
    assert set(r["step_ms"]) == set(r["peak_memory_mb"]) == {"cns", "cns_rows_only", "lora", "kv_full"}
    assert r["step_ratio_to_lora"]["lora"] == 1.0
    assert r["trainable_parameters"]["cns"] < r["trainable_parameters"]["lora"]


def test_generate_scale_covers_each_bank_size():
    r = run("generate_scale.py", "--concepts", "0", "3", "--steps", "2", "--rounds", "1")
    assert set(r["cns_generate_s"]) == set(r["apply_deltas_ms"]) == {"0", "3"}
    assert r["plain_diffusers_s"] > 0
    two = r["two_regions"]["tiny"]  # the regions column: both timings of one run, and their ratio
    assert two["plain_s"] > 0 and two["regions_s"] > 0
    assert abs(two["ratio"] - two["regions_s"] / two["plain_s"]) < 0.01  # the ratio of the unrounded medians


@pytest.mark.parametrize("model", ["tiny", "tiny-sdxl"])
def test_gpu_script_runs_on_the_tiny_model_on_cpu(model):
    """The GPU script's code paths (SD 1.x, and SDXL: two text encoders, added conditioning) on tiny pipelines."""
    r = run("gpu_sd15.py", "--model", model, "--device", "cpu", "--precision", "fp32", "--rounds", "1")
    assert {"learn_step_ms", "generate_step_cfg_ms", "apply_100_concepts_ms"} <= set(r)
    assert set(r["learn_step_ms"]) == {"cns", "cns_rows_only", "lora", "kv_full"}


@pytest.mark.parametrize("script, args", [("cli_latency.py", ["--concepts", "3", "--runs", "1"]),
                                          ("learn_tiny.py", ["--concepts", "1", "--steps", "2"])])
def test_other_benchmarks_run(script, args):
    assert run(script, *args)


def test_token_lr_sweep_runs_the_bench_once_per_value(tiny_demo_base, tmp_path):
    rows = run("token_lr_sweep.py", "--quick", "--concepts", "1", "--base", tiny_demo_base, "--values", "0,2e-3",
               "--methods", "ti", "--out", str(tmp_path / "sweep"))
    assert [(r["lr_token"], r["method"]) for r in rows] == [(0.0, "ti"), (2e-3, "ti")]
    assert "rex_identity" in rows[0] and "fedora_identity" not in rows[0]  # --concepts counts with --quick
    saved = json.loads((tmp_path / "sweep" / "lr_token-0.002" / "bench.json").read_text())
    assert saved["config"]["lr_token"] == 2e-3


def test_row_training_sweep_trains_cns_under_each_variant(tiny_demo_base, tmp_path):
    from cns_cli.bank import Bank

    rows = run("row_training_sweep.py", "--quick", "--base", tiny_demo_base, "--variant", "half-lambda", "reg_lambda=0.5",
               "--out", str(tmp_path / "sweep"))
    assert [(r["variant"], r["overrides"], r["basis"]) for r in rows] == [("half-lambda", "reg_lambda=0.5", "random")]
    bank = Bank.open(tmp_path / "sweep" / "banks" / "half-lambda.cnsbank")
    assert bank.head().concepts["fedora"].training["reg_lambda"] == 0.5  # the override reached cns learn


def test_learn_each_learns_through_cns_with_the_given_flags_and_scores_each_individual(tiny_demo_base, tmp_path):
    from cns_cli.bank import Bank

    out = subprocess.run([sys.executable, str(BENCH / "learn_each.py"), "--base", tiny_demo_base, "--names", "rex,cap",
                          "--photos", "2", "--seeds", "1", "--sample-steps", "1", "--learn-args", "--steps 2 --rank 2",
                          "--captions", "--keep", str(tmp_path / "work"), "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads((tmp_path / "r.json").read_text())
    assert list(doc["results"]) == ["rex", "cap"] and doc["learn_args"] == ["--steps", "2", "--rank", "2"]
    assert doc["images_per_individual"] == 4 and doc["summary"]["individuals"] == 2  # 4 scenes x 1 seed
    assert all(0 <= r["recognised"] <= 1 for r in doc["results"].values())
    training = Bank.open(tmp_path / "work" / "cap.cnsbank").head().concepts["cap"].training
    assert (training["steps"], training["rank"]) == (2, 2)  # the flags reached `cns learn`, the rest are defaults
    assert (training["max_drift"], training["reg_lambda"]) == (LearnConfig.max_drift, 0.0)
    assert (tmp_path / "work" / "photos" / "rex" / "rex-00.txt").read_text().startswith("a <rex> dog ")  # --captions


def test_the_calibration_energy_basis_is_orthogonal_and_ordered_by_energy(tiny_base):
    import numpy as np

    sys.path.insert(0, str(BENCH))
    from row_training_sweep import calibration_energy_basis, parse_overrides

    q, energy = calibration_energy_basis(tiny_base)
    assert np.abs(q.T @ q - np.eye(q.shape[0])).max() < 1e-4
    assert energy[:-1] == sorted(energy[:-1]) and energy[-1] <= energy[0]  # the empty direction goes last
    assert parse_overrides("reg_lambda=0,remove_general=false,rank=2") == {"reg_lambda": 0.0, "remove_general": False,
                                                                             "rank": 2}
