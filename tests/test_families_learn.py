"""The loop on SD 2.x (v-prediction) and SDXL through the CLI (issue 16): init from a folder and from a single file
with --config, learn a concept, what changed (only the concept's rows of attn2 K/V, the token row in every text
encoder), forget back to the base bit for bit, and the bad inputs (exit 2, one line, nothing written)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from cns_cli.bank import FORMAT_VERSION, Bank
from cns_cli.bank.delta import read_delta
from cns_cli.model.loading import kv_layers, load_pipeline, resolve_base
from cns_cli.model.text import text_pairs
from tests.clitools import cns, one_line_error

from tests.conftest import FAMILY_BASES as BASES

FAST = ["--steps", "3", "--score-steps", "1"]


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


@pytest.fixture(scope="module")
def learned(family, family_dog_banks) -> Path:
    """A bank on the family's tiny base with <dog>, learned through the CLI (read-only for the tests below)."""
    path = family_dog_banks[family]
    assert Bank.open(path).head().number == 1
    return path


@pytest.fixture(scope="module")
def base_pipe(family_base):
    return load_pipeline(resolve_base(family_base))


@pytest.fixture(scope="module")
def single_file(family, base_pipe, family_base, tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, weightless config folder) of the family's tiny base."""
    from tools.ldm_checkpoint import config_folder, save_single_file

    out = tmp_path_factory.mktemp(f"{family}-single")
    return save_single_file(base_pipe, out / "model.safetensors"), config_folder(family_base, out / "configs")


def test_init_records_the_family(family, family_base, tmp_path):
    r = cns("--bank", tmp_path / "b.cnsbank", "init", "--base", family_base, "--json")
    assert r.exit_code == 0, r.stderr
    pointer = json.loads(r.stdout)["base"]
    expected = {"sd2": ("sd2", "v_prediction", [64], 64, 14), "sdxl": ("sdxl", "epsilon", [32, 64], 96, 24)}[family]
    assert (pointer["family"], pointer["prediction_type"], pointer["embedding_dims"], pointer["text_dim"],
            len(pointer["kv_layers"])) == expected
    assert json.loads((tmp_path / "b.cnsbank" / "revisions" / "000000.json").read_text())["format_version"] == FORMAT_VERSION
    shown = json.loads(cns("--bank", tmp_path / "b.cnsbank", "inspect", "--json").stdout)["base"]
    assert shown["family"] == family and shown["family_name"] == {"sd2": "SD 2.x", "sdxl": "SDXL"}[family]
    text = cns("--bank", tmp_path / "b.cnsbank", "inspect").stdout
    assert {"sd2": "family    SD 2.x, v-prediction", "sdxl": "family    SDXL"}[family] in text


def test_init_from_a_single_file_with_config(family, family_base, single_file, tmp_path):
    ckpt, configs = single_file
    r = cns("--bank", tmp_path / "b.cnsbank", "init", "--base", ckpt, "--config", configs, "--json")
    assert r.exit_code == 0, r.stderr
    pointer = json.loads(r.stdout)["base"]
    from_folder = json.loads(cns("--bank", tmp_path / "f.cnsbank", "init", "--base", family_base, "--json").stdout)["base"]
    assert (pointer["kind"], pointer["config"], pointer["family"]) == ("single-file", str(configs.resolve()), family)
    assert pointer["fingerprint"] == from_folder["fingerprint"]  # the same weights, through diffusers' converter


def test_learn_changes_only_the_concepts_rows_and_adds_its_token_everywhere(family, learned, base_pipe):
    from cns_cli.model.personalised import load_personalised

    bank = Bank.open(learned)
    rev = bank.head()
    dog = rev.concepts["dog"]
    assert dog.neurons.total > 0 and rev.base.family == family
    pipe = load_personalised(bank, rev)
    owned = {layer: set(d.rows.tolist()) for layer, d in read_delta(bank, dog).items()}
    before, after = base_pipe.unet.state_dict(), pipe.unet.state_dict()
    kv = {f"{name}.weight" for name in kv_layers(base_pipe.unet)}
    changed_rows = {}
    for key in before:
        if key in kv:
            rows = set(torch.nonzero((before[key] != after[key]).any(dim=1)).flatten().tolist())
            changed_rows[key.removesuffix(".weight")] = rows
        else:
            assert torch.equal(before[key], after[key]), f"{key} is not a K/V weight but changed"
    assert all(rows <= owned.get(layer, set()) for layer, rows in changed_rows.items())
    assert any(changed_rows.values())
    # the token: one new row in each text encoder, holding the stored vector; every base row as it was
    stored = bank.read_object(dog.embedding)
    names = ["embedding", "embedding_2"][: len(text_pairs(pipe))]
    assert sorted(stored) == names and len(names) == {"sd2": 1, "sdxl": 2}[family]
    for name, (tok, enc), (btok, benc) in zip(names, text_pairs(pipe), text_pairs(base_pipe)):
        tid = tok.convert_tokens_to_ids("<dog>")
        assert tid == len(btok)
        w, w0 = enc.get_input_embeddings().weight, benc.get_input_embeddings().weight
        assert torch.equal(w[: len(w0)], w0) and torch.equal(w[tid], torch.from_numpy(stored[name][0]))
        assert stored[name].shape == (1, w0.shape[1])


def test_sdxl_training_passes_the_added_conditioning(tiny_sdxl, dog_photos, tmp_path, monkeypatch):
    from cns_cli.model import train

    seen = []
    real = train.diffusion_loss

    def spy(unet, scheduler, latents, states, gen, added=None, rows=None):
        seen.append((states.shape[-1], None if added is None else added["time_ids"][0].tolist(),
                     None if added is None else added["text_embeds"].shape[-1], scheduler.config.prediction_type))
        return real(unet, scheduler, latents, states, gen, added, rows)

    monkeypatch.setattr(train, "diffusion_loss", spy)
    r = cns("--bank", tmp_path / "b.cnsbank", "learn", "dog", dog_photos, "--class", "dog", "--base", tiny_sdxl,
            "--steps", "2", "--score-steps", "1", "--resolution", "24")
    assert r.exit_code == 0, r.stderr
    assert seen == [(96, [24.0, 24.0, 0.0, 0.0, 24.0, 24.0], 64, "epsilon")] * 3  # 1 scoring batch + 2 steps


def test_forget_gives_back_the_base_bit_for_bit(family, learned, base_pipe, hat_photos, tmp_path):
    from cns_cli.model.bank_apply import apply_concepts
    from cns_cli.model.personalised import load_personalised

    path = tmp_path / "b.cnsbank"
    shutil.copytree(learned, path)
    assert cns("--bank", path, "learn", "hat", hat_photos, "--class", "hat", *FAST).exit_code == 0
    bank = Bank.open(path)
    both = bank.head()
    assert cns("--bank", path, "forget", "hat").exit_code == 0
    assert cns("--bank", path, "forget", "dog").exit_code == 0
    empty = load_personalised(bank, bank.head())

    def state(pipe):
        parts = [pipe.unet.state_dict()] + [enc.state_dict() for _, enc in text_pairs(pipe)]
        return [(k, v) for sd in parts for k, v in sd.items()], [len(tok) for tok, _ in text_pairs(pipe)]

    def same(a, b):
        (wa, la), (wb, lb) = state(a), state(b)
        return la == lb and [k for k, _ in wa] == [k for k, _ in wb] and all(torch.equal(x, y) for (_, x), (_, y) in zip(wa, wb))

    assert same(empty, base_pipe)
    # in-process: both concepts applied to that same pipeline and removed again, every encoder included
    with apply_concepts(empty, bank, both) as applied:
        assert len(applied.token_ids_per_encoder) == len(text_pairs(empty))
        assert not same(empty, base_pipe)
    assert same(empty, base_pipe)


def test_a_single_file_bank_keeps_loading_offline_with_its_recorded_config(family, single_file, dog_photos, hat_photos, tmp_path):
    ckpt, configs = single_file
    path = tmp_path / "b.cnsbank"
    r = cns("--bank", path, "learn", "dog", dog_photos, "--class", "dog", "--base", ckpt, "--config", configs, *FAST)
    assert r.exit_code == 0, r.stderr
    assert json.loads((path / "revisions" / "000000.json").read_text())["operation"]["argv"][-2:] == ["--config", str(configs)]
    r = cns("--bank", path, "learn", "hat", hat_photos, "--class", "hat", *FAST)  # the pointer's config: no flag needed
    assert r.exit_code == 0, r.stderr
    assert sorted(Bank.open(path).head().concepts) == ["dog", "hat"]
    # the recorded folder moved: say so and name `cns relocate --config DIR` (every bank command can follow it);
    # learn's --config names the new place for this run (the fingerprint still checks)
    moved = configs.with_name("moved-configs")
    configs.rename(moved)
    try:
        before = tree(path)
        msg = one_line_error(cns("--bank", path, "learn", "cat", hat_photos, *FAST))
        assert f"the config folder {configs} this bank records" in msg and "is gone" in msg, msg
        assert "`cns relocate --config DIR`" in msg and tree(path) == before
        r = cns("--bank", path, "learn", "cat", hat_photos, "--config", moved, *FAST, "--dry-run")  # loads, plans
        assert r.exit_code == 0, r.stderr
    finally:
        moved.rename(configs)


# -- bad input: exit 2, one line, nothing written -----------------------------------------------------------


def test_single_file_without_config_is_refused_offline(single_file, dog_photos, tmp_path):
    ckpt, _ = single_file
    for args in (["init", "--base", ckpt], ["learn", "dog", dog_photos, "--base", ckpt, *FAST]):
        msg = one_line_error(cns("--bank", tmp_path / "b.cnsbank", *args))
        assert "single-file checkpoint" in msg and "pass --config DIR" in msg
        assert not (tmp_path / "b.cnsbank").exists()


def test_config_of_another_family_is_refused(family, single_file, tiny_base, tmp_path):
    ckpt, _ = single_file
    msg = one_line_error(cns("--bank", tmp_path / "b.cnsbank", "init", "--base", ckpt, "--config", tiny_base))
    assert "is an SD 1.x model but" in msg and "pass a config folder of an" in msg
    assert not (tmp_path / "b.cnsbank").exists()


def test_config_that_is_not_a_diffusers_folder_or_beside_a_folder_base(single_file, family_base, tmp_path):
    ckpt, configs = single_file
    assert "not a diffusers folder" in one_line_error(cns("--bank", tmp_path / "b", "init", "--base", ckpt, "--config", tmp_path))
    assert "leave out --config" in one_line_error(cns("--bank", tmp_path / "b", "init", "--base", family_base, "--config", configs))
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("cls, words", [("StableDiffusion3Pipeline", "is SD 3"), ("FluxPipeline", "is Flux")])
def test_unsupported_architecture_is_refused(cls, words, dog_photos, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text(json.dumps({"_class_name": cls}))
    for args in (["init", "--base", model], ["learn", "dog", dog_photos, "--base", model, *FAST]):
        msg = one_line_error(cns("--bank", tmp_path / "b.cnsbank", *args))
        assert words in msg and "cns works on SD 1.x, SD 2.x and SDXL" in msg
        assert not (tmp_path / "b.cnsbank").exists()


def test_a_bank_made_on_sdxl_is_refused_on_an_sd1_model(learned, family, tiny_base, dog_photos, tmp_path):
    """An SDXL (or SD 2.x) bank whose base folder now holds an SD 1.x model: fingerprint mismatch, nothing written."""
    path = tmp_path / "b.cnsbank"
    shutil.copytree(learned, path)
    head = json.loads((path / "revisions" / "000001.json").read_text())
    moved = tmp_path / "base"
    shutil.copytree(tiny_base, moved)  # the bank's base location, now an SD 1.x model
    for name in ("000000.json", "000001.json"):  # point the revisions at it (revision files carry no digest)
        doc = json.loads((path / "revisions" / name).read_text())
        doc["base"]["location"] = str(moved)
        (path / "revisions" / name).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    assert head["base"]["family"] == family
    before = tree(path)
    for args in (["learn", "hat", dog_photos, *FAST], ["generate", "a <dog>", "--steps", "1", "--out", tmp_path / "out"]):
        assert "not the one this bank was built on" in one_line_error(cns("--bank", path, *args))
    assert tree(path) == before and not (tmp_path / "out").exists()


def test_a_hub_id_in_the_local_cache_is_detected_and_loaded_offline(tiny_sdxl, tmp_path, hub_cache):
    from cns_cli.model.loading import detect_family

    hub_cache(tiny_sdxl, "someone/tiny-xl")
    assert detect_family(resolve_base("someone/tiny-xl")) == "sdxl"
    r = cns("--bank", tmp_path / "b.cnsbank", "init", "--base", "someone/tiny-xl", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["base"]["family"] == "sdxl"
