"""`cns relocate`: a bank whose base model (or a single-file base's config folder) moved is pointed at the new
place as a new revision, checked by the model's fingerprint; generate and export name that fix (issue 35)."""

from __future__ import annotations

import json
import shutil

import pytest

from cns_cli.bank import Bank
from tests.clitools import cns, one_line_error


@pytest.fixture
def moved_base(tiny_base, tmp_path):
    """(bank, old place, new place): a bank made on a copy of the tiny base, which is then moved."""
    old, new = tmp_path / "models" / "pipe", tmp_path / "elsewhere" / "pipe"
    shutil.copytree(tiny_base, old)
    bank = tmp_path / "b.cnsbank"
    assert cns("--bank", bank, "init", "--base", old).exit_code == 0
    new.parent.mkdir()
    old.rename(new)
    return bank, old, new


def test_a_moved_base_is_named_with_the_relocate_that_fixes_it(moved_base, tmp_path, dog_photos):
    bank, old, new = moved_base
    for args in (["generate", "a photo", "--steps", "1", "--out", tmp_path / "out"],
                 ["learn", "dog", dog_photos, "--class", "dog", "--dry-run"]):
        line = one_line_error(cns("--bank", bank, *args))
        assert f"not at {old} any more" in line and "`cns relocate NEW_PATH`" in line and "--config" not in line, line
    r = cns("--bank", bank, "relocate", new, "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    head = Bank.open(bank).head()
    assert (doc["revision"], head.operation.kind, head.format_version, head.base.location) == (1, "relocate", "1.4", str(new))
    assert head.base.fingerprint == Bank.open(bank).revision(0).base.fingerprint and doc["was"]["location"] == str(old)
    for revision in ([], ["--revision", "0"]):  # revision 0 still records the old place: HEAD's pointer is used
        r = cns("--bank", bank, "generate", "a photo", "--steps", "1", "--out", tmp_path / f"out{len(revision)}", *revision)
        assert r.exit_code == 0, r.stderr


def test_relocate_refuses_another_model(moved_base, tmp_path):
    from cns_cli.model.tiny import save_tiny_pipeline

    bank, _, _ = moved_base
    other = save_tiny_pipeline(tmp_path / "other", seed=1)
    before = sorted(p.name for p in (bank / "revisions").iterdir())
    line = one_line_error(cns("--bank", bank, "relocate", other))
    assert "is not the base model this bank was built on" in line and "nothing was changed" in line, line
    assert sorted(p.name for p in (bank / "revisions").iterdir()) == before
    assert (bank / "HEAD").read_text() == "0\n"


def test_relocate_needs_a_place(moved_base):
    bank, _, new = moved_base
    assert "cns relocate PATH" in one_line_error(cns("--bank", bank, "relocate"))
    assert "is a local-dir" in one_line_error(cns("--bank", bank, "relocate", "--config", new))


def test_a_moved_config_folder_of_a_single_file_base(tiny_base, tmp_path):
    from cns_cli.model import loading
    from tools.ldm_checkpoint import config_folder, save_single_file

    ckpt = save_single_file(loading.load_pipeline(loading.resolve_base(tiny_base)), tmp_path / "model.safetensors")
    configs = config_folder(tiny_base, tmp_path / "configs")
    bank = tmp_path / "b.cnsbank"
    assert cns("--bank", bank, "init", "--base", ckpt, "--config", configs).exit_code == 0
    moved = configs.rename(tmp_path / "configs-moved")
    line = one_line_error(cns("--bank", bank, "generate", "a photo", "--steps", "1", "--out", tmp_path / "out"))
    assert f"the config folder {configs}" in line and "`cns relocate --config DIR`" in line, line
    r = cns("--bank", bank, "relocate", "--config", moved)
    assert r.exit_code == 0, r.stderr
    head = Bank.open(bank).head()
    assert (head.base.location, head.base.config) == (str(ckpt), str(moved))
    r = cns("--bank", bank, "generate", "a photo", "--steps", "1", "--out", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
