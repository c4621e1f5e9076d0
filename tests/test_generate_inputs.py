"""`cns generate`'s numeric options and prompt texts (issue 35): a value the model cannot sample with is one line and
exit 2 before the model loads where it can be known then, and NaN that appears anyway during sampling is one line
and exit 2 naming the flag to change, with no (black) image written."""

from __future__ import annotations

import pytest

from tests.clitools import cns, one_line_error


def _files(folder) -> list:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("guidance", ["1e22", "101", "inf", "nan", "-1"])
def test_absurd_guidance_is_refused_before_the_model_loads(dog_bank_readonly, tmp_path, no_model_load, guidance):
    out = tmp_path / "out"
    r = cns("--bank", dog_bank_readonly, "generate", "<dog>", "--guidance", guidance, "--steps", "2", "--out", out)
    line = one_line_error(r)
    assert "--guidance" in line and "100" in line, line
    assert _files(out) == []


@pytest.mark.parametrize("where, model, module", [("the latents at step 1", "unet", "conv_out"),
                                                  ("the decoded image", "vae", "decoder")])
def test_nan_during_sampling_is_one_line_and_writes_no_image(dog_bank_readonly, tmp_path, monkeypatch, where, model, module):
    """NaN from an overflow inside the UNet (every later step would stay NaN) or the VAE (fp16's usual failure):
    simulated by a forward hook, since the tiny fp32 model does not overflow at an allowed --guidance."""
    from cns_cli import generate

    real = generate.build_pipeline

    def overflowing(*args, **kwargs):
        pipe = real(*args, **kwargs)
        getattr(pipe, model).get_submodule(module).register_forward_hook(lambda m, inputs, out: out * float("nan"))
        return pipe

    monkeypatch.setattr(generate, "build_pipeline", overflowing)
    out = tmp_path / "out"
    r = cns("--bank", dog_bank_readonly, "generate", "<dog>", "--guidance", "90", "--steps", "2", "--out", out)
    line = one_line_error(r)
    assert where in line and "NaN" in line and "--guidance" in line and "no image was written" in line, line
    assert "RuntimeWarning" not in r.stderr
    assert _files(out) == []


# -- prompt texts: one line of UTF-8 (a NUL cut the PNG's recorded prompt, a newline in --negative forged A1111 fields)


@pytest.mark.parametrize("args, stdin, words", [
    (["a <dog>\x00 on a beach"], None, ["the prompt", "control character", "U+0000", "character 8"]),
    (["a <dog>\x1b[2J"], None, ["control character", "U+001B"]),
    (["-"], "a <dog>\x07 on a beach\n", ["control character", "U+0007"]),
    (["a <dog>\u2028Steps: 99"], None, ["line separator", "U+2028"]),
    (["<dog>", "--negative", "blurry\nSteps: 99, Seed: 1"], None, ["--negative", "control character", "U+000A"]),
    (["<dog>", "--layout", "auto", "--region-prompt", "<dog>=a\x00dog"], None, ["--region-prompt of <dog>", "U+0000"]),
    (["a <dog> caf\udce9"], None, ["the prompt", "byte 0xe9", "UTF-8"]),  # argv bytes b"caf\xe9" (Latin-1 "café")
    (["<dog>", "--negative", "caf\udce9"], None, ["--negative", "byte 0xe9", "UTF-8"]),
    (["-"], b"a <dog> caf\xe9\n", ["stdin is not UTF-8", "0xe9"]),
])
def test_prompt_texts_are_one_line_of_utf8(dog_bank_readonly, tmp_path, no_model_load, args, stdin, words):
    out = tmp_path / "out"
    r = cns("--bank", dog_bank_readonly, "generate", *args, "--steps", "1", "--out", out, input=stdin)
    line = one_line_error(r)
    assert all(w in line for w in words), line
    assert _files(out) == []


def test_a_tab_in_a_prompt_or_negative_reads_as_a_space_everywhere(dog_bank_readonly, tmp_path):
    import json

    from PIL import Image

    r = cns("--bank", dog_bank_readonly, "generate", "<dog>\ton a beach", "--negative", "blurry,\tdark", "--steps", "1",
            "--out", tmp_path, "--json")
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert (rec["prompt"], rec["text"], rec["negative"]) == ("<dog> on a beach", "<dog> dog on a beach", "blurry, dark")
    chunks = Image.open(rec["path"]).text
    assert chunks["cns:prompt"] == "<dog> on a beach" and chunks["cns:negative"] == "blurry, dark"
    assert "\t" not in chunks["parameters"]


def test_layout_given_empty_is_refused_with_the_layouts(dog_bank_readonly, tmp_path, no_model_load):
    r = cns("--bank", dog_bank_readonly, "generate", "<dog>", "--layout", "", "--steps", "1", "--out", tmp_path / "out")
    line = one_line_error(r)
    assert "--layout ''" in line and "layouts: auto" in line, line


# -- sampling steps below what a scheduler takes


def test_pndm_with_fewer_steps_than_its_warm_up_is_refused_before_the_model_loads(dog_bank_readonly, tmp_path,
                                                                                    no_model_load):
    out = tmp_path / "out"
    r = cns("--bank", dog_bank_readonly, "generate", "<dog>", "--scheduler", "pndm", "--steps", "3", "--out", out)
    line = one_line_error(r)
    assert "--scheduler PNDM needs --steps 4 or more" in line and "PLMS" in line, line
    assert _files(out) == []


@pytest.mark.parametrize("scheduler", ["PNDM", "PLMS"])
def test_the_fewest_steps_allowed_sample(dog_bank_readonly, tmp_path, scheduler):
    """The boundary is diffusers' own: PNDM samples at 4 steps (and failed with a numpy error at 3), PLMS at 1."""
    steps = "4" if scheduler == "PNDM" else "1"
    r = cns("--bank", dog_bank_readonly, "generate", "<dog>", "--scheduler", scheduler, "--steps", steps, "--out", tmp_path)
    assert r.exit_code == 0, r.stderr
    assert len(_files(tmp_path)) == 1


def test_a_model_whose_own_scheduler_is_pndm_refuses_too_few_steps(tiny_base, tmp_path, request):
    """No --scheduler: the model's own scheduler config (read from its folder, no weights loaded) sets the minimum."""
    import json
    import shutil

    base = tmp_path / "pndm-sd"
    shutil.copytree(tiny_base, base)
    config_path = base / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config.update(_class_name="PNDMScheduler", skip_prk_steps=False)
    config_path.write_text(json.dumps(config))
    bank = tmp_path / "pndm.cnsbank"
    assert cns("--bank", bank, "init", "--base", base).exit_code == 0
    request.getfixturevalue("no_model_load")  # from here on
    r = cns("--bank", bank, "generate", "a dog", "--steps", "2", "--out", tmp_path / "out")
    line = one_line_error(r)
    assert "--steps 2 is fewer than this model's own scheduler takes (at least 4" in line, line
    r = cns("--bank", bank, "generate", "a dog", "--steps", "2", "--scheduler", "DDIM", "--out", tmp_path / "out")
    assert "at least 4" not in r.stderr  # --scheduler replaces the model's own (then the model load is refused here)


# -- papercuts: the flag blamed, what a flag changes, what a message says


def test_a_count_of_images_past_every_seed_blames_n_not_seed(dog_bank_readonly, tmp_path, no_model_load):
    line = one_line_error(cns("--bank", dog_bank_readonly, "generate", "<dog>", "-n", str(10**23), "--out", tmp_path))
    assert line.startswith(f"error: -n {10**23} is more images than there are seeds") and "--seed" not in line, line


def test_a_batch_larger_than_n_draws_and_names_exactly_what_n_does(dog_bank_readonly, tmp_path):
    import json

    def run(*flags):
        r = cns("--bank", dog_bank_readonly, "generate", "<dog>", "-n", "2", "--steps", "1", "--out", tmp_path / "out",
                "--json", *flags)
        assert r.exit_code == 0, r.stderr
        return [json.loads(line) for line in r.stdout.splitlines()]

    exact, huge = run("--batch-size", "2"), run("--batch-size", str(10**23))
    assert [r["batch_size"] for r in huge] == [2, 2]
    # the same settings hash: the second run's names are the first's with "-2" (never overwritten)
    assert [r["path"].removesuffix("-2.png") for r in huge] == [r["path"].removesuffix(".png") for r in exact]


def test_revision_without_the_concept_says_where_it_is(dog_hat_bank_readonly, tmp_path, no_model_load):
    def line(prompt, revision):
        return one_line_error(cns("--bank", dog_hat_bank_readonly, "generate", prompt, "--revision", revision,
                                  "--out", tmp_path))

    assert line("<dog> on a beach", "0") == ("error: revision 0 has no concepts; <dog> was learned in revision 1 "
                                             "(drop --revision to draw from HEAD, revision 2)")
    assert "revision 1 has <dog>; <hat> was learned in revision 2" in line("<dog> and <hat:0.5>", "1")
    assert "no revision of the bank has <cat>" in line("<cat>", "1")


def test_the_grid_is_named_after_the_prompt_its_images_are(dog_bank_readonly, tmp_path):
    """`<dog:0.5>` is drawn as `<dog>` at strength 0.5: the images say dog-on-a-beach, so does the grid."""
    from pathlib import Path

    r = cns("--bank", dog_bank_readonly, "generate", "<dog:0.5> on a beach", "--steps", "1", "--grid", "--out", tmp_path)
    assert r.exit_code == 0, r.stderr
    image, grid = (Path(p).name for p in r.stdout.splitlines())
    assert image.startswith("r1-000-dog-on-a-beach-s0-") and grid.startswith("r1-grid-dog-on-a-beach-s0-"), (image, grid)


@pytest.mark.parametrize("base", ["tiny_base", "tiny_sdxl"])
def test_pndm_below_its_warm_up_is_refused_on_sd1_and_sdxl(base, tmp_path, request):
    """The issue's two families: both failed with exit 101 inside diffusers at --steps 3."""
    bank = tmp_path / "b.cnsbank"
    assert cns("--bank", bank, "init", "--base", request.getfixturevalue(base)).exit_code == 0
    request.getfixturevalue("no_model_load")
    r = cns("--bank", bank, "generate", "a dog", "--scheduler", "PNDM", "--steps", "3", "--out", tmp_path / "out")
    assert "--scheduler PNDM needs --steps 4 or more" in one_line_error(r)
