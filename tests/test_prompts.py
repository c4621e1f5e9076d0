"""Prompt handling: concept references and their expansion, prompts from argv/stdin, training prompts and the
bundled calibration set."""

from __future__ import annotations

import io
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cns_cli.errors import ConceptError, UsageError
from cns_cli.prompts import (
    CONCEPT_REF,
    calibration_prompts,
    concepts_in,
    expand_prompt,
    read_prompts,
    training_prompt,
)

BANK = {"dog": "dog", "hat": "hat", "teddy": "teddy bear"}


# --- expand_prompt -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt,expected",
    [
        ("<dog> on a beach", "<dog> dog on a beach"),
        ("a photo of <dog>", "a photo of <dog> dog"),
        ("<dog> dog on a beach", "<dog> dog on a beach"),  # already says the class word
        ("<dog> Dog on a beach", "<dog> Dog on a beach"),  # case-insensitive
        ("<dog> doghouse", "<dog> dog doghouse"),  # a longer word is not the class word
        ("<dog>, running", "<dog> dog, running"),
        ("<dog>'s ball", "<dog> dog's ball"),
        ("<dog> wearing <hat>", "<dog> dog wearing <hat> hat"),
        ("<dog> and <dog> again", "<dog> dog and <dog> dog again"),
        ("<teddy> on a shelf", "<teddy> teddy bear on a shelf"),
        ("<teddy> teddy bear on a shelf", "<teddy> teddy bear on a shelf"),
        ("<teddy> teddy on a shelf", "<teddy> teddy bear teddy on a shelf"),  # only the whole class word
        ("  a   <dog>\n on\tsand  ", "a <dog> dog on sand"),
        ("a plain prompt", "a plain prompt"),
    ],
)
def test_expansion(prompt, expected):
    assert expand_prompt(prompt, BANK) == expected


def test_no_expand_only_normalises_and_checks():
    assert expand_prompt("  <dog>   on a beach ", BANK, expand=False) == "<dog> on a beach"
    with pytest.raises(ConceptError):
        expand_prompt("<cat>", BANK, expand=False)


@pytest.mark.parametrize("prompt", ["a << b", "a < dog> b", "<>", "a <-dog> b", "x > y < z", "<dog"])
def test_non_references_are_left_alone(prompt):
    assert expand_prompt(prompt, BANK) == " ".join(prompt.split())


def test_reference_inside_double_brackets_still_counts():
    assert expand_prompt("<<dog>>", BANK) == "<<dog> dog>"


def test_unknown_concept_lists_known_ones():
    with pytest.raises(ConceptError) as e:
        expand_prompt("<dog> chasing <cat>", BANK)
    assert str(e.value) == "unknown concept <cat> in prompt; known: <dog>, <hat>, <teddy> (see `cns inspect`)"


def test_unknown_concept_with_empty_bank():
    hint = r"no concepts learned yet; teach one with `cns learn NAME \./photos`"
    with pytest.raises(ConceptError, match=hint):
        expand_prompt("<dog> on a beach", {})
    assert expand_prompt("a dog on a beach", {}) == "a dog on a beach"


def test_wrong_case_suggests_lower_case():
    with pytest.raises(ConceptError, match=r"write <dog> instead of <Dog>"):
        expand_prompt("<Dog> on a beach", BANK)


def test_wrong_case_of_unknown_name_is_unknown():
    with pytest.raises(ConceptError, match=r"unknown concept <Cat> in prompt; known: <dog>"):
        expand_prompt("<Cat>", BANK)


def test_messages_are_one_line():
    for prompt, bank in [("<cat>", BANK), ("<cat>", {}), ("<Dog>", BANK)]:
        with pytest.raises(ConceptError) as e:
            expand_prompt(prompt, bank)
        assert "\n" not in str(e.value)


_words = st.sampled_from(
    ["a", "dog", "Dog", "teddy", "bear", "on", "<dog>", "<hat>", "<teddy>", "<", ">", ","]
)


@given(st.lists(_words, max_size=12).map(" ".join))
def test_expansion_is_idempotent(prompt):
    once = expand_prompt(prompt, BANK)
    assert expand_prompt(once, BANK) == once
    assert concepts_in(once) == concepts_in(prompt)


# --- concepts_in -------------------------------------------------------------------------------------


def test_concepts_in_order_unique():
    assert concepts_in("<hat> on <dog> next to <hat> and <Dog> < cat> <x_1-b>") == ["hat", "dog", "x_1-b"]
    assert concepts_in("no refs") == []


def test_concept_ref_matches_name_rules():
    assert CONCEPT_REF.fullmatch("<" + "a" * 64 + ">")
    assert not CONCEPT_REF.fullmatch("<" + "a" * 65 + ">")
    assert not CONCEPT_REF.fullmatch("<_dog>")


# --- read_prompts ------------------------------------------------------------------------------------


def test_args_are_prompts():
    assert read_prompts(["<dog> on a beach", "a cat"], None) == ["<dog> on a beach", "a cat"]


def test_dash_reads_stdin_lines():
    stdin = io.StringIO("first prompt\n\n  # a comment\n   second prompt  \n#another\nthird")
    assert read_prompts(["before", "-", "after"], stdin) == [
        "before",
        "first prompt",
        "second prompt",
        "third",
        "after",
    ]


def test_empty_result_is_usage_error():
    msg = "no prompt given; pass a prompt or '-' to read them from stdin"
    with pytest.raises(UsageError, match=re.escape(msg)):
        read_prompts([], None)
    with pytest.raises(UsageError, match=re.escape(msg)):
        read_prompts(["-"], io.StringIO("\n# only comments\n"))
    with pytest.raises(UsageError):
        read_prompts(["  "], None)


# --- training_prompt ---------------------------------------------------------------------------------


def test_training_prompt():
    assert training_prompt("dog", "dog", None) == "a photo of <dog> dog"
    assert training_prompt("dog", "dog", "  ") == "a photo of <dog> dog"
    assert training_prompt("dog", "dog", "on grass, sunny") == "a photo of <dog> dog, on grass, sunny"
    assert training_prompt("dog", "dog", "<dog> sleeping on a sofa") == "<dog> sleeping on a sofa"
    assert training_prompt("teddy", "teddy bear", None) == "a photo of <teddy> teddy bear"


# --- calibration set ---------------------------------------------------------------------------------


def test_calibration_prompts():
    prompts = calibration_prompts()
    assert len(prompts) >= 240
    assert len({p.lower() for p in prompts}) == len(prompts)
    for p in prompts:
        assert "<" not in p and ">" not in p, p
        assert p.isascii() and p == p.strip() and "  " not in p, p
        assert 4 <= len(p.split()) <= 20, p
        assert expand_prompt(p, {}) == p  # usable as is, with no concepts


def test_calibration_prompts_returns_a_copy():
    first = calibration_prompts()
    first.clear()
    assert len(calibration_prompts()) >= 240
