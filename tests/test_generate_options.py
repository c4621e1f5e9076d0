"""`cns generate --negative TEXT` and `--revision N`: the pixels are diffusers' with the same weights and
arguments, the metadata says so (a third-party A1111 reader sees the negative prompt), and bad values are one
line before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import cns_cli

from tests.clitools import cns, one_line_error

NEGATIVE = "blurry, low quality"


def _generate(bank, tmp_path, *args) -> dict:
    r = cns("--bank", bank, "generate", *args, "--seed", "3", "--steps", "3", "--out", tmp_path, "--json")
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout.splitlines()[0])


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_negative_prompt_is_diffusers_negative_prompt_and_recorded(dog_bank_readonly, tmp_path):
    from sd_parsers import ParserManager

    plain = _generate(dog_bank_readonly, tmp_path, "<dog> on a beach")
    rec = _generate(dog_bank_readonly, tmp_path, "<dog> on a beach", "--negative", NEGATIVE)
    assert rec["negative"] == NEGATIVE and "negative" not in plain and rec["path"] != plain["path"]
    pipe = cns_cli.load_pipeline(dog_bank_readonly, device="cpu")
    want = pipe(rec["text"], negative_prompt=NEGATIVE, num_inference_steps=3, guidance_scale=7.5,
                generator=torch.Generator().manual_seed(3)).images[0]
    assert np.array_equal(_pixels(rec["path"]), np.asarray(want))
    assert not np.array_equal(_pixels(rec["path"]), _pixels(plain["path"]))
    chunks = Image.open(rec["path"]).text
    assert chunks["cns:negative"] == NEGATIVE and chunks["parameters"].split("\n")[1] == f"Negative prompt: {NEGATIVE}"
    info = ParserManager().parse(rec["path"])
    assert [str(p) for p in info.negative_prompts] == [NEGATIVE] and [str(p) for p in info.prompts] == [rec["text"]]


def test_negative_applies_to_prompts_from_stdin_too(dog_bank_readonly, tmp_path):
    r = cns("--bank", dog_bank_readonly, "generate", "-", "--negative", NEGATIVE, "--steps", "1", "--out", tmp_path,
            "--json", input="<dog> on a beach\na <dog> in the snow\n")
    assert r.exit_code == 0, r.stderr
    assert [json.loads(line)["negative"] for line in r.stdout.splitlines()] == [NEGATIVE, NEGATIVE]


def test_revision_generates_from_an_earlier_state(dog_hat_bank_readonly, tmp_path):
    rec = _generate(dog_hat_bank_readonly, tmp_path, "<dog> on a beach", "--revision", "1")
    assert rec["revision"] == 1 and Path(rec["path"]).name.startswith("r1-")
    pipe = cns_cli.load_pipeline(dog_hat_bank_readonly, revision=1, device="cpu")  # <dog> alone, before <hat>
    want = pipe(rec["text"], num_inference_steps=3, guidance_scale=7.5, generator=torch.Generator().manual_seed(3))
    assert np.array_equal(_pixels(rec["path"]), np.asarray(want.images[0]))
    head = _generate(dog_hat_bank_readonly, tmp_path, "<dog> on a beach")
    assert not np.array_equal(_pixels(rec["path"]), _pixels(head["path"]))  # <hat>'s rows change the model too
    line = one_line_error(cns("--bank", dog_hat_bank_readonly, "generate", "<hat>", "--revision", "1", "--out", tmp_path))
    assert "revision 1 has <dog>; <hat> was learned in revision 2" in line  # says where <hat> is


def test_a_revision_that_does_not_exist(dog_bank_readonly, tmp_path, no_model_load):
    for value, words in (("99", "revision 99 does not exist (revisions on disk: 0-1)"),
                         ("-1", "--revision must be a revision number")):
        assert words in one_line_error(cns("--bank", dog_bank_readonly, "generate", "<dog>", "--revision", value,
                                           "--out", tmp_path))


def test_scheduler_by_its_a1111_name(dog_bank_readonly, tmp_path):
    from diffusers import EulerAncestralDiscreteScheduler

    default = _generate(dog_bank_readonly, tmp_path, "<dog> on a beach")
    rec = _generate(dog_bank_readonly, tmp_path, "<dog> on a beach", "--scheduler", "euler  A")
    assert rec["sampler"] == "Euler a" and rec["sampler"] != default["sampler"] and rec["path"] != default["path"]
    pipe = cns_cli.load_pipeline(dog_bank_readonly, device="cpu")
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    want = pipe(rec["text"], num_inference_steps=3, guidance_scale=7.5, generator=torch.Generator().manual_seed(3))
    assert np.array_equal(_pixels(rec["path"]), np.asarray(want.images[0]))
    assert "Sampler: Euler a," in Image.open(rec["path"]).text["parameters"]
    karras = _generate(dog_bank_readonly, tmp_path, "<dog> on a beach", "--scheduler", "DPM++ 2M Karras")
    assert (karras["sampler"], karras["schedule"]) == ("DPM++ 2M", "Karras")


def test_an_unknown_scheduler_lists_the_known_ones_before_loading(dog_bank_readonly, tmp_path, no_model_load):
    line = one_line_error(cns("--bank", dog_bank_readonly, "generate", "<dog>", "--scheduler", "k_euler",
                              "--out", tmp_path))
    assert "unknown --scheduler 'k_euler'" in line and "DPM++ 2M Karras" in line


# -- <name:w>: a concept at a strength -----------------------------------------------------------------------


def test_a_strength_scales_the_concept_and_is_recorded(dog_bank_readonly, tiny_base, tmp_path):
    from cns_cli.model.loading import load_pipeline, resolve_base

    full = _generate(dog_bank_readonly, tmp_path, "<dog> on a beach")
    half = _generate(dog_bank_readonly, tmp_path, "<dog:0.5> on a beach")
    assert half["prompt"] == "<dog:0.5> on a beach" and half["text"] == full["text"] and half["strengths"] == {"dog": 0.5}
    assert Image.open(half["path"]).text["cns:prompt"] == "<dog:0.5> on a beach"
    base = load_pipeline(resolve_base(tiny_base))
    cns_cli.apply_bank(base, dog_bank_readonly, scales={"dog": 0.5})  # W0 + 0.5 ΔW, made directly
    want = base(half["text"], num_inference_steps=3, guidance_scale=7.5, generator=torch.Generator().manual_seed(3))
    diff = np.abs(_pixels(half["path"]).astype(int) - np.asarray(want.images[0]).astype(int))
    assert diff.max() <= 1  # W0 + ΔW - 0.5 ΔW is W0 + 0.5 ΔW within float rounding
    assert not np.array_equal(_pixels(half["path"]), _pixels(full["path"]))
    one = _generate(dog_bank_readonly, tmp_path, "<dog:1> on a beach")
    assert np.array_equal(_pixels(one["path"]), _pixels(full["path"]))  # strength 1 is the concept as learned


def test_after_a_weighted_prompt_the_model_is_exactly_restored(dog_bank_readonly, tmp_path):
    alone = _generate(dog_bank_readonly, tmp_path / "a", "a <dog> in the snow")
    r = cns("--bank", dog_bank_readonly, "generate", "<dog:0.2> on a beach", "a <dog> in the snow", "--seed", "3",
            "--steps", "3", "--out", tmp_path / "b", "--json")
    after = json.loads(r.stdout.splitlines()[1])
    assert np.array_equal(_pixels(after["path"]), _pixels(alone["path"]))


def test_bad_strengths_are_refused_before_loading(dog_bank_readonly, tmp_path, no_model_load):
    for prompt, words in (("<dog:3> on a beach", "must be a number in [0, 2], got '3'"),
                          ("<dog:nan>", "must be a number in [0, 2]"), ("<dog:x>", "got 'x'"),
                          ("<dog:0.5> and <dog:0.7>", "two strengths"), ("<cat:0.5>", "unknown concept <cat>")):
        assert words in one_line_error(cns("--bank", dog_bank_readonly, "generate", prompt, "--out", tmp_path))


def test_batch_size_gives_the_same_images_per_seed(dog_bank_readonly, tmp_path):
    def run(folder, *extra):
        r = cns("--bank", dog_bank_readonly, "generate", "<dog> on a beach", "-n", "3", "--seed", "5", "--steps", "3",
                "--out", tmp_path / folder, "--json", *extra)
        assert r.exit_code == 0, r.stderr
        return [json.loads(line) for line in r.stdout.splitlines()]

    single, batched = run("one"), run("two", "--batch-size", "2")
    assert [x["seed"] for x in batched] == [5, 6, 7] and batched[0]["batch_size"] == 2 and "batch_size" not in single[0]
    for a, b in zip(single, batched):  # batched matmuls may round differently: within 1/255
        assert np.abs(_pixels(a["path"]).astype(int) - _pixels(b["path"]).astype(int)).max() <= 1
    assert "--batch-size must be at least 1" in one_line_error(
        cns("--bank", dog_bank_readonly, "generate", "<dog>", "--batch-size", "0", "--out", tmp_path))


def test_batch_size_with_a_negative_prompt_draws_what_one_at_a_time_draws(dog_bank_readonly, tmp_path):
    """Found by the contract fuzzer: `--batch-size 2 --negative TEXT` was an internal error (diffusers wants one
    negative prompt per prompt when the prompts are a list)."""
    def run(folder, *extra):
        r = cns("--bank", dog_bank_readonly, "generate", "<dog> on a beach", "-n", "2", "--steps", "2",
                "--negative", NEGATIVE, "--out", tmp_path / folder, "--json", *extra)
        assert r.exit_code == 0, r.stderr
        return [json.loads(line) for line in r.stdout.splitlines()]

    single, batched = run("one"), run("two", "--batch-size", "2")
    assert [x["negative"] for x in batched] == [NEGATIVE, NEGATIVE]
    for a, b in zip(single, batched):
        assert np.abs(_pixels(a["path"]).astype(int) - _pixels(b["path"]).astype(int)).max() <= 1


def test_width_alone_keeps_the_native_height_with_and_without_regions(dog_hat_bank_readonly, tmp_path):
    """Found by the contract fuzzer: diffusers falls back to the native size for both sides when either is missing,
    so `--width 64` alone drew a native square (and with `--layout auto` ended in an internal error)."""
    pipe = cns_cli.load_pipeline(dog_hat_bank_readonly, device="cpu")
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    for flag, size in (("--width", (2 * native, native)), ("--height", (native, 2 * native))):
        for extra in ([], ["--layout", "auto"]):
            r = cns("--bank", dog_hat_bank_readonly, "generate", "<dog> and a <hat>", flag, 2 * native, "--steps", "1",
                    "--out", tmp_path / f"{flag}{len(extra)}", "--json", *extra)
            assert r.exit_code == 0, r.stderr
            rec = json.loads(r.stdout.splitlines()[0])
            assert Image.open(rec["path"]).size == size and (rec["width"], rec["height"]) == size
