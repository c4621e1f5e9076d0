"""`cns generate --skip-existing`: the settings hash names an image exactly, so a rerun after an interrupted or lost
run draws only what is missing, prints the whole set as the first run did, and writes no -2 copies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cns_cli import generate as gen

from tests.clitools import cns

ARGS = ["a <dog> on the beach", "a <dog> in the snow", "-n", "3", "--batch-size", "2", "--steps", "2", "--json"]


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def first_run(dog_bank_readonly, tmp_path):
    r = cns("--bank", dog_bank_readonly, "generate", *ARGS, "--out", tmp_path)
    assert r.exit_code == 0, r.stderr
    return r.stdout, files_in(tmp_path)


def _counting_sample(monkeypatch) -> list:
    calls = []
    real = gen._sample

    def sample(pipe, text, plan, config, seeds, progress):
        calls.append(seeds)
        return real(pipe, text, plan, config, seeds, progress)

    monkeypatch.setattr(gen, "_sample", sample)
    return calls


def test_a_rerun_draws_only_the_missing_images(dog_bank_readonly, tmp_path, first_run, monkeypatch):
    stdout, files = first_run
    records = [json.loads(line) for line in stdout.splitlines()]
    lost = [Path(records[i]["path"]) for i in (2, 3)]  # the first prompt's last call, the second's first image
    for path in lost:
        path.unlink()
    calls = _counting_sample(monkeypatch)
    r = cns("--bank", dog_bank_readonly, "generate", *ARGS, "--out", tmp_path, "--skip-existing")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == stdout  # the whole set, in order, with the records of the files kept
    assert files_in(tmp_path) == files  # the lost ones drawn again, byte for byte; no -2 copy
    assert calls == [[2], [0, 1]]  # prompt 0's call of seed 2; prompt 1's of seeds 0 and 1 (seed 1 is kept, not rewritten)
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(files)


def test_a_complete_set_is_not_drawn_again(dog_bank_readonly, tmp_path, first_run, monkeypatch):
    stdout, files = first_run
    calls = _counting_sample(monkeypatch)
    r = cns("--bank", dog_bank_readonly, "generate", *ARGS, "--out", tmp_path, "--skip-existing", "--grid")
    assert r.exit_code == 0, r.stderr
    assert calls == [] and r.stdout.splitlines()[:-1] == stdout.splitlines()
    assert "grid" in json.loads(r.stdout.splitlines()[-1])  # the sheet of the set on disk


def test_other_settings_are_other_images(dog_bank_readonly, tmp_path, first_run, monkeypatch):
    _, files = first_run
    calls = _counting_sample(monkeypatch)
    r = cns("--bank", dog_bank_readonly, "generate", *ARGS, "--guidance", "2", "--out", tmp_path, "--skip-existing")
    assert r.exit_code == 0, r.stderr
    assert len(calls) == 4 and len(files_in(tmp_path)) == 2 * len(files)  # 6 new names, none skipped
