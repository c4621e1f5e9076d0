"""Issue 35, writes: no command writes over what cns reads (the bank, its base model, the base's --config
folder), and what the environment refuses (read-only disk, disk full, no permission, …) is one line and exit 2,
never exit 101 or a damaged bank."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.clitools import cns, one_line_error


def _tree_digest(folder: Path) -> str:
    """One sha256 over every file's relative path and bytes: equal digests = the folder is unchanged."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def own_base_bank(tiny_base, dog_photos, tmp_path_factory):
    """(bank, base): a bank with <dog> on its own copy of the tiny base, `./tiny-sd-copy` of the issue."""
    from cns_cli.learn import LearnConfig, learn

    root = tmp_path_factory.mktemp("own-base")
    base = root / "tiny-sd-copy"
    shutil.copytree(tiny_base, base)
    bank = root / "base1.cnsbank"
    learn(bank, "dog", dog_photos, class_word="dog", base=str(base), config=LearnConfig(steps=2, score_steps=1))
    return bank, base


def test_export_pipeline_over_the_banks_own_base_is_refused_and_the_base_kept(own_base_bank):
    bank, base = own_base_bank
    before = _tree_digest(base)
    r = cns("--bank", bank, "export", base, "--format", "pipeline", "--force")
    line = one_line_error(r)
    assert "base model" in line and str(base.resolve()) in line, line
    assert _tree_digest(base) == before
    assert cns("--bank", bank, "verify").exit_code == 0


@pytest.mark.parametrize("where", ["bank", "bank/revisions", "bank/objects/new", "base/unet"])
def test_export_into_the_bank_or_its_base_is_refused(own_base_bank, where):
    bank, base = own_base_bank
    out = {"bank": bank, "base": base}[where.split("/")[0]].joinpath(*where.split("/")[1:])
    before = _tree_digest(bank), _tree_digest(base)
    line = one_line_error(cns("--bank", bank, "export", out, "--force"))
    assert ("lies inside" if "/" in where else " is ") in line, line
    assert (_tree_digest(bank), _tree_digest(base)) == before


def test_export_into_a_folder_holding_the_bank_is_refused_with_force(own_base_bank):
    """--force may replace what OUT holds; a folder that holds the bank (or the base) is never such a folder."""
    bank, base = own_base_bank
    line = one_line_error(cns("--bank", bank, "export", bank.parent, "--force", "--format", "pipeline"))
    assert "contains" in line, line


def test_a_symlink_to_the_base_does_not_hide_it(own_base_bank, tmp_path):
    bank, base = own_base_bank
    link = tmp_path / "looks-new"
    link.symlink_to(base, target_is_directory=True)
    before = _tree_digest(base)
    line = one_line_error(cns("--bank", bank, "export", link, "--format", "pipeline", "--force"))
    assert str(base.resolve()) in line, line
    assert _tree_digest(base) == before


@pytest.mark.parametrize("where", ["bank/revisions", "bank", "base"])
def test_generate_into_the_bank_or_its_base_is_refused(own_base_bank, where, no_model_load):
    bank, base = own_base_bank
    out = {"bank": bank, "base": base}[where.split("/")[0]].joinpath(*where.split("/")[1:])
    before = _tree_digest(bank), _tree_digest(base)
    one_line_error(cns("--bank", bank, "generate", "<dog>", "--steps", "1", "--out", out))
    assert (_tree_digest(bank), _tree_digest(base)) == before


def test_generate_next_to_the_bank_is_fine(own_base_bank):
    """`--out .` beside ./.cnsbank only adds new files (protected.py): allowed, and the bank is untouched."""
    bank, _ = own_base_bank
    before = _tree_digest(bank)
    r = cns("--bank", bank, "generate", "<dog>", "--steps", "1", "--out", bank.parent)
    assert r.exit_code == 0, r.stderr
    assert Path(r.stdout.strip()).parent == bank.parent
    assert _tree_digest(bank) == before


def test_a_new_bank_inside_its_base_model_folder_is_refused(tiny_base, dog_photos, tmp_path, no_model_load):
    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    before = _tree_digest(base)
    line = one_line_error(cns("--bank", base / ".cnsbank", "learn", "dog", dog_photos, "--class", "dog", "--base", base))
    assert "lies inside the base model" in line, line
    one_line_error(cns("--bank", base / "b.cnsbank", "init", "--base", base))
    assert _tree_digest(base) == before


def test_demo_out_inside_its_base_model_is_refused(tiny_demo_base, tmp_path):
    base = tmp_path / "demo-base"
    shutil.copytree(tiny_demo_base, base)
    before = _tree_digest(base)
    line = one_line_error(cns("demo", "--base", base, "--out", base / "cns-demo", "--steps", "1"))
    assert "lies inside the base model" in line, line
    assert _tree_digest(base) == before


def test_bench_out_over_its_base_model_is_refused(tiny_demo_base, tmp_path):
    base = tmp_path / "demo-base"
    shutil.copytree(tiny_demo_base, base)
    before = _tree_digest(base)
    line = one_line_error(cns("bench", "--quick", "--base", base, "--out", base))
    assert "is the base model" in line, line
    assert _tree_digest(base) == before
