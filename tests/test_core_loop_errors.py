"""Bad input to learn / generate: one clear line on stderr, exit code 2 (130 for Ctrl-C), bank unchanged."""

from __future__ import annotations

import errno
import hashlib
import shutil
from pathlib import Path

import pytest
from PIL import Image


from tests.clitools import cns, one_line_error

FAST = ["--steps", "3", "--score-steps", "1"]


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "lock"}


@pytest.fixture(scope="module")
def bank(dog_bank_readonly) -> Path:
    return dog_bank_readonly  # every test here checks it is left unchanged


@pytest.fixture
def unchanged(bank):
    before = digest(bank)
    yield
    assert digest(bank) == before


def test_missing_and_empty_image_folder(bank, tmp_path, unchanged):
    assert "does not exist" in one_line_error(cns("--bank", bank, "learn", "hat", tmp_path / "nope", *FAST))
    (tmp_path / "empty").mkdir()
    assert "is empty" in one_line_error(cns("--bank", bank, "learn", "hat", tmp_path / "empty", *FAST))


def test_folder_without_a_readable_image_lists_what_was_skipped(bank, tmp_path, unchanged):
    d = tmp_path / "junk"
    d.mkdir()
    (d / "notes.md").write_text("hi")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.new("RGB", (40, 40)).save(d / "tiny.png")
    msg = one_line_error(cns("--bank", bank, "learn", "hat", d, *FAST))
    assert "notes.md" in msg and "broken.png" in msg and "tiny.png" in msg and "64 px" in msg


def test_corrupt_image_among_good_ones_is_skipped_with_a_warning(bank, dog_photos, tmp_path):
    d = tmp_path / "mixed"
    shutil.copytree(dog_photos, d)
    good = (d / "00.png").read_bytes()
    (d / "zz-truncated.png").write_bytes(good[: len(good) // 2])
    r = cns("--bank", bank, "learn", "cat", d, "--dry-run", "--json", "--score-steps", "1")
    assert r.exit_code == 0, r.stderr
    assert "warning" in r.stderr and r.stderr.count("zz-truncated.png") == 1  # warned once, not per pass
    import json

    plan = json.loads(r.stdout)["plan"]
    assert len(plan["images"]) == 4 and plan["skipped"][0]["file"].endswith("zz-truncated.png")


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--steps", "0"], "--steps must be at least 1"),
        (["--lr", "-1"], "--lr must be positive"),
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--budget", "0"], "--budget must be in (0, 1]"),
        (["--rank", "0"], "--rank must be at least 1"),
        (["--reg-lambda", "inf"], "--reg-lambda must be a finite number"),
        (["--seed", "-3"], "--seed must be between 0 and 2^64 - 1"),
    ],
)
def test_bad_numbers_are_refused_before_any_work(bank, dog_photos, flags, words, unchanged):
    assert words in one_line_error(cns("--bank", bank, "learn", "hat", dog_photos, *flags))


def test_existing_name_needs_replace(bank, dog_photos, unchanged):
    assert "--replace" in one_line_error(cns("--bank", bank, "learn", "dog", dog_photos, *FAST))


def test_bad_concept_name(bank, dog_photos, unchanged):
    assert "contains '<' or '>'" in one_line_error(cns("--bank", bank, "learn", "<dog>", dog_photos, *FAST))


def test_prompt_with_unknown_concept_lists_known_ones(bank, tmp_path, unchanged):
    msg = one_line_error(cns("--bank", bank, "generate", "<dog> and <cat>", "--out", tmp_path))
    assert "unknown concept <cat>" in msg and "<dog>" in msg
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("flags, words", [(["--steps", "0"], "--steps"), (["-n", "0"], "-n must"),
                                          (["--guidance", "nan"], "--guidance"), (["--width", "30"], "multiple of 8")])
def test_bad_generate_numbers(bank, tmp_path, flags, words):
    assert words in one_line_error(cns("--bank", bank, "generate", "<dog>", "--out", tmp_path, *flags))


def test_prompts_from_stdin(bank, tmp_path):
    r = cns("--bank", bank, "generate", "-", "--steps", "1", "--out", tmp_path, input="<dog> on grass\n\n# skip\na ball\n")
    assert r.exit_code == 0, r.stderr
    paths = r.stdout.split()
    assert len(paths) == 2 and all(Path(p).is_file() for p in paths)


def test_base_that_cannot_be_loaded_offline(dog_photos, tmp_path):
    msg = one_line_error(cns("--bank", tmp_path / "new.cnsbank", "learn", "dog", dog_photos, *FAST))
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in msg and "download it first" in msg
    assert not (tmp_path / "new.cnsbank").exists()


def test_bank_on_a_different_base_is_refused(tiny_base, dog_photos, tmp_path):
    from cns_cli.model.tiny import save_tiny_pipeline

    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    path = tmp_path / "b.cnsbank"
    assert cns("--bank", path, "init", "--base", base).exit_code == 0
    other = save_tiny_pipeline(tmp_path / "other", seed=1)
    shutil.rmtree(base / "unet")
    shutil.copytree(other / "unet", base / "unet")
    before = digest(path)
    assert "not the one this bank was built on" in one_line_error(cns("--bank", path, "learn", "dog", dog_photos, *FAST))
    assert "not the one this bank was built on" in one_line_error(cns("--bank", path, "generate", "a dog", "--out", tmp_path / "o"))
    assert digest(path) == before


def test_disk_full_while_committing(bank, hat_photos, monkeypatch, unchanged):
    import cns_cli.bank.atomic as atomic

    real = atomic.os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "write", full)
    msg = one_line_error(cns("--bank", bank, "learn", "hat", hat_photos, *FAST))
    monkeypatch.setattr(atomic.os, "write", real)
    assert "disk full" in msg
    assert not [p for p in bank.rglob(".tmp-*")]


def test_ctrl_c_during_training_commits_nothing(bank, hat_photos, monkeypatch, unchanged):
    import cns_cli.model.train as train

    def interrupted(self):
        if self.steps_done == 2:  # mid-run, after some optimiser steps
            raise KeyboardInterrupt
        return real_step(self)

    real_step = train.Trainer.step
    monkeypatch.setattr(train.Trainer, "step", interrupted)
    r = cns("--bank", bank, "learn", "hat", hat_photos, *FAST)
    assert r.exit_code == 130 and "nothing was committed" in r.stderr
    monkeypatch.undo()
    assert cns("--bank", bank, "learn", "hat", hat_photos, *FAST, "--dry-run").exit_code == 0  # lock released
