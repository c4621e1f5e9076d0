"""The prompt syntax as a user meets it in `cns generate`: strengths written with spaces, in the wrong case or
in A1111's LoRA tag get the spelling cns reads; long prompts are quoted in part; text past the encoder's 77
tokens is announced; strengths work in --region-prompt texts too; accented names get an accent-free suggestion."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.clitools import cns, one_line_error

STEP = ["--steps", "1"]


@pytest.fixture(scope="module")
def bank(dog_hat_bank_readonly):
    return dog_hat_bank_readonly


def _records(r) -> list[dict]:
    assert r.exit_code == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def _warnings(r) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith("warning:")]


def test_a_strength_written_with_spaces_is_a_strength(bank, tmp_path):
    r = cns("--bank", bank, "generate", "<dog: 0.7> on a beach", *STEP, "--out", tmp_path, "--json")
    (record,) = _records(r)
    assert record["strengths"] == {"dog": 0.7} and record["text"] == "<dog> dog on a beach"
    assert "no closing" not in r.stderr


def test_an_upper_case_strength_reference_is_told_the_lower_case_spelling(bank, tmp_path, no_model_load):
    line = one_line_error(cns("--bank", bank, "generate", "<Dog:0.7> on a beach", *STEP, "--out", tmp_path))
    assert "write <dog:0.7> instead of <Dog:0.7>" in line


def test_a1111s_lora_tag_is_answered_with_the_cns_spelling(bank, tmp_path, no_model_load):
    line = one_line_error(cns("--bank", bank, "generate", "<lora:dog:0.7> on a beach", *STEP, "--out", tmp_path))
    assert "A1111's LoRA tag" in line and "cns writes <dog:0.7>" in line


def test_a_long_prompt_is_quoted_in_part_around_the_reference(bank, tmp_path):
    prompt = "a dog on grass " * 700 + "<dog at night " + "and a house " * 100  # 10,000+ characters
    r = cns("--bank", bank, "generate", prompt, *STEP, "--out", tmp_path)
    assert r.exit_code == 0, r.stderr
    (unclosed,) = [w for w in _warnings(r) if "no closing" in w]
    assert "<dog at night" in unclosed and len(unclosed) < 300


def test_a_long_prompt_in_a_region_error_is_quoted_in_part(bank, tmp_path, no_model_load):
    prompt = "a cat on grass " * 700
    line = one_line_error(cns("--bank", bank, "generate", prompt, "--region", "<dog>=0,0,1,1", *STEP, "--out", tmp_path))
    assert "does not mention <dog>" in line and len(line) < 400


def test_a_warning_prints_the_users_text_as_it_is(bank, tmp_path):
    """Square brackets in a quoted prompt are text, not terminal markup (an unmatched "[/b]" used to end the run
    with an internal error)."""
    r = cns("--bank", bank, "generate", "<dog [/b] on a beach", *STEP, "--out", tmp_path)
    assert r.exit_code == 0, r.stderr
    assert any("'<dog [/b] on a beach'" in w for w in _warnings(r))


def test_text_past_the_encoders_77_tokens_is_announced_once(bank, tmp_path):
    # the tiny tokenizer reads each of these words as one token: <dog> dog on grass + 40 x (and grass) = 84 tokens
    prompt = "<dog> on grass" + " and grass" * 40
    r = cns("--bank", bank, "generate", prompt, "-n", "2", *STEP, "--out", tmp_path)
    assert r.exit_code == 0, r.stderr
    (warning,) = [w for w in _warnings(r) if "tokens" in w]
    assert "is 84 tokens; the text encoder reads 75, so the last 9" in warning
    short = cns("--bank", bank, "generate", "<dog> on grass", *STEP, "--out", tmp_path)
    assert short.exit_code == 0 and not [w for w in _warnings(short) if "tokens" in w]


def test_a_strength_in_a_region_prompt_draws_the_concept_at_that_strength(bank, tmp_path):
    region = ["--region", "<dog>=0,0,0.5,1"]
    in_region = _records(cns("--bank", bank, "generate", "<dog> on a beach", *region, "--region-prompt",
                             "<dog>=a <dog:0.5> dog", *STEP, "--out", tmp_path / "a", "--json"))[0]
    in_prompt = _records(cns("--bank", bank, "generate", "<dog:0.5> on a beach", *region, "--region-prompt",
                             "<dog>=a <dog> dog", *STEP, "--out", tmp_path / "b", "--json"))[0]
    full = _records(cns("--bank", bank, "generate", "<dog> on a beach", *region, "--region-prompt",
                        "<dog>=a <dog> dog", *STEP, "--out", tmp_path / "c", "--json"))[0]
    assert in_region["strengths"] == {"dog": 0.5}
    assert in_region["regions"]["regions"][0]["text"] == "a <dog> dog"  # the encoder reads the concept's token

    def pixels(record):
        return np.asarray(Image.open(record["path"]).convert("RGB"))

    assert np.array_equal(pixels(in_region), pixels(in_prompt))
    assert not np.array_equal(pixels(in_region), pixels(full))


def test_two_strengths_for_one_concept_across_prompt_and_region_prompt_are_refused(bank, tmp_path, no_model_load):
    line = one_line_error(cns("--bank", bank, "generate", "<dog:0.7> on a beach", "--region", "<dog>=0,0,1,1",
                              "--region-prompt", "<dog>=a <dog:0.5> dog", *STEP, "--out", tmp_path))
    assert "<dog> has strength 0.7 and 0.5" in line and "give it one strength" in line


def test_an_accented_name_gets_a_suggestion_without_accents(bank, dog_photos, no_model_load):
    line = one_line_error(cns("--bank", bank, "learn", "été", dog_photos, "--class", "summer"))
    assert "use something like 'ete'" in line


def test_a_strength_in_the_negative_prompt_is_refused_not_read_as_words(bank, tmp_path, no_model_load):
    line = one_line_error(cns("--bank", bank, "generate", "<hat> on a beach", "--negative", "<dog:0.5>", *STEP,
                              "--out", tmp_path))
    assert "--negative cannot give <dog> a strength (0.5)" in line
    line = one_line_error(cns("--bank", bank, "generate", "<hat> on a beach", "--negative", "<lora:dog:0.5>", *STEP,
                              "--out", tmp_path))
    assert "cns writes <dog:0.5>" in line
