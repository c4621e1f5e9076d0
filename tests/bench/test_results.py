"""The bench's per-method result files (results.py), and what lets a method run on any rank: bench.json
assembled from the files, resume from them or from an older run's layout, the global generators seeded per
method, a launched run's wait. Quick: no model runs (the runs are in test_protocol.py and test_launched.py)."""

from __future__ import annotations

import json

import pytest

from cns_cli.bench import results


def _tiles(value: int) -> dict:
    import numpy as np

    return {"concepts": {"rex": np.full((1, 2, 2, 3), value, np.uint8)}, "pairs": np.zeros((0, 2, 2, 3), np.uint8)}


def test_bench_json_is_assembled_from_the_finished_methods_files_in_the_config_order(tmp_path):
    """Whichever process wrote which method when: the config's order, only methods whose JSON and images are both
    there and whose config is this run's."""
    config = {"seed": 0, "steps": 3, "methods": ["cns", "ti", "lora-seq", "kv-finetune"]}
    results.save_method(tmp_path, "ti", config, {"label": "ti"}, _tiles(1))  # finished first, on another rank
    results.save_method(tmp_path, "cns", {**config, "methods": ["cns"]}, {"label": "cns"}, _tiles(2))
    results.save_method(tmp_path, "lora-seq", {**config, "steps": 4}, {"label": "other settings"}, _tiles(3))
    results.save_method(tmp_path, "kv-finetune", config, {"label": "images lost"}, _tiles(4))
    results.images_path(tmp_path, "kv-finetune").unlink()
    skeleton = {"config": config, "base": {"zero_shot": {}}, "concepts": ["rex"], "resumed": []}
    doc = results.assemble(tmp_path, skeleton, tuple(config["methods"]))
    assert list(doc["methods"]) == ["cns", "ti"] and doc["methods"]["ti"] == {"label": "ti"}
    assert {k: v for k, v in doc.items() if k != "methods"} == skeleton
    assert results.load_images(results.images_path(tmp_path, "ti"))["concepts"]["rex"].tolist() == \
        _tiles(1)["concepts"]["rex"].tolist()


def test_resume_keeps_the_methods_of_a_run_written_before_the_method_files(tmp_path):
    """An older run kept every entry in bench.json and the images beside it: those with images count as finished
    (and get their JSON, so the files alone tell from then on); one without images runs again."""
    config = {"seed": 0, "methods": ["cns", "ti"]}
    earlier = {"config": config, "methods": {"cns": {"label": "cns, old run"}, "ti": {"label": "ti, old run"}}}
    results.save_images(results.images_path(tmp_path, "cns"), _tiles(5))
    done = results.finished(tmp_path, ("cns", "ti", "lora-seq"), config, earlier)
    assert done == {"cns": {"label": "cns, old run"}}
    assert results.load_entry(tmp_path, "cns", config) == {"label": "cns, old run"}
    assert not results.entry_path(tmp_path, "ti").exists()
    # the per-method file wins over bench.json, which a later run rewrites from the files
    assert results.finished(tmp_path, ("cns",), config, {"methods": {}}) == {"cns": {"label": "cns, old run"}}


@pytest.mark.slow  # two interpreters with torch
def test_the_global_generators_are_seeded_per_method_alike_in_every_process():
    """seed_globals: the same draws after it whatever was drawn before, other draws for another method, and the
    same in another process (PYTHONHASHSEED differs: str hashes do, crc32 does not)."""
    import os
    import random
    import subprocess
    import sys

    import numpy as np
    import torch

    from cns_cli.bench.protocol import seed_globals

    def draws(key, seed=0):
        seed_globals(seed, key)
        return [torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()]

    first = draws("cns")
    torch.rand(5), np.random.rand(3), random.random()  # a method before it drew from all three
    assert draws("cns") == first
    assert all(a != b for a, b in zip(draws("ti"), first)) and all(a != b for a, b in zip(draws("cns", 1), first))
    code = ("import json, random, numpy as np, torch\nfrom cns_cli.bench.protocol import seed_globals\n"
            "seed_globals(0, 'cns')\nprint(json.dumps([torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()]))")
    for hash_seed in ("1", "2"):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == first


def test_a_launched_bench_waits_a_day_for_the_slowest_rank_unless_told(monkeypatch):
    """The bench joins the group with --dist-timeout as the wait, else 24 h as its default (distributed.start puts
    $CNS_DIST_TIMEOUT between them: tests/test_distributed.py); a bad flag is refused before anything starts."""
    from cns_cli import distributed
    from cns_cli.errors import CnsError

    from tests.clitools import cns, one_line_error

    asked = []

    def start(device, timeout=None, default=None):
        asked.append((timeout, default))
        raise CnsError("stopped here by the test")

    monkeypatch.setattr(distributed, "start", start)
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}
    for flag in ([], ["--dist-timeout", "600"]):
        assert "stopped here by the test" in one_line_error(cns("bench", "--quick", *flag, env=env))
    assert asked == [(None, 24 * 3600), (600.0, 24 * 3600)]
    for bad in ("0", "-1", "nan", "inf"):
        assert "--dist-timeout must be a positive number of seconds" in one_line_error(
            cns("bench", "--quick", "--dist-timeout", bad))
    assert len(asked) == 2
