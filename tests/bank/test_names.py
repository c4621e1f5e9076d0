"""Concept names and class words: each rejection says why; the CLI check and the revision schema agree."""

from __future__ import annotations

import json
from typing import Annotated

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import Field, TypeAdapter, ValidationError

from cns_cli.bank import Revision
from cns_cli.bank.history import forget
from cns_cli.bank.names import CLASS_WORD_PATTERN, NAME_MAX, NAME_PATTERN, check_class_word, check_concept_name, token_for
from cns_cli.bank.revision_io import parse_revision, revision_name
from cns_cli.errors import BankFormatError, ConceptError


@pytest.mark.parametrize(
    "name, why",
    [
        ("", "is empty"),
        ("a/b", "contains '/'"),
        ("/", "contains '/'"),
        ("a\\b", "contains '\\'"),
        ("..", "contains '..'"),
        ("a..b", "contains '..'"),
        ("my dog", "contains whitespace"),
        ("dog\n", "contains whitespace"),
        ("\tdog", "contains whitespace"),
        ("dog\u00a0", "contains whitespace"),
        ("dog\u3000x", "contains whitespace"),
        ("dog\x00", "contains control characters"),
        ("d\x07og", "contains control characters"),
        ("dog\x7f", "contains control characters"),
        ("<dog>", "contains '<' or '>'"),
        ("dog>", "contains '<' or '>'"),
        ("Dog", "has upper-case letters"),
        ("DOG", "has upper-case letters"),
        ("Émile", "has upper-case letters"),
        ("a" * (NAME_MAX + 1), f"is longer than {NAME_MAX} characters"),
        ("-dog", "must start with a letter or digit"),
        ("_dog", "must start with a letter or digit"),
        ("dog.v2", "may only use a-z, 0-9, '-' and '_'"),
        ("dög", "may only use a-z, 0-9, '-' and '_'"),
        ("dog:1", "may only use a-z, 0-9, '-' and '_'"),
        ("ｄog", "may only use a-z"),  # full-width letter
    ],
)
def test_bad_concept_names(name, why):
    with pytest.raises(ConceptError, match=r"^concept name .*" if name else "^concept name is empty") as info:
        check_concept_name(name)
    assert why in str(info.value)
    assert "use something like" in str(info.value) or not name


def test_rejection_suggests_a_valid_name():
    with pytest.raises(ConceptError) as info:
        check_concept_name("My Dog")
    suggestion = str(info.value).rsplit("use something like ", 1)[1].strip("'")
    assert suggestion == "my-dog" and check_concept_name(suggestion) == suggestion
    with pytest.raises(ConceptError, match="use something like 'my-concept'"):
        check_concept_name("///")


@pytest.mark.parametrize("name", ["dog", "a", "0", "my-dog", "my_dog_2", "x" * NAME_MAX, "2024-cat", "a-_-b"])
def test_good_concept_names(name):
    assert check_concept_name(name) == name
    assert token_for(name) == f"<{name}>"


_schema_name = TypeAdapter(Annotated[str, Field(pattern=NAME_PATTERN)])


def _schema_accepts(name: str) -> bool:
    try:
        _schema_name.validate_python(name)
        return True
    except ValidationError:
        return False


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=70), st.text(alphabet="abcxyz019-_./\\ \n<>AZ\x00é", max_size=70)))
def test_cli_check_agrees_with_schema(name):
    # A name the CLI accepts must be storable as a concept key and vice versa.
    try:
        check_concept_name(name)
        accepted = True
    except ConceptError:
        accepted = False
    assert accepted == _schema_accepts(name), name


@pytest.mark.parametrize("key", ["Dog", "my dog", "../x", "a/b", "", "<dog>", "x" * 65, "dog\n"])
def test_revision_rejects_bad_concept_keys(bank, key):
    doc = json.loads((bank.root / revision_name(2)).read_text())
    doc["concepts"][key] = doc["concepts"].pop("concept-0")
    with pytest.raises(BankFormatError, match=r"(?s)concepts\..*\[key\]: String should match pattern"):
        parse_revision(json.dumps(doc).encode(), "r")
    doc["concepts"][key].pop("token")  # also through the model directly
    with pytest.raises(ValidationError):
        Revision.model_validate(doc)


def test_forget_checks_the_name_first(bank):
    with pytest.raises(ConceptError, match="has upper-case letters"):
        forget(bank, "Concept-0")
    assert not (bank.root / "lock").exists() or (bank.root / "lock").read_bytes() == b""
    assert bank.head_number() == 2


@pytest.mark.parametrize("word", ["dog", "teddy bear", "x" * 64, "chien d'été", "3d-model"])
def test_good_class_words(word):
    assert check_class_word(word) == word


@pytest.mark.parametrize("word", ["", "   ", "x" * 65, "<dog>", "a>b", "dog\n", "do\tg", "dog\x00", "dog\x7f"])
def test_bad_class_words(word):
    with pytest.raises(ConceptError, match=r"^class word .* must be 1-64 characters of plain text"):
        check_class_word(word)


_schema_class_word = TypeAdapter(Annotated[str, Field(pattern=CLASS_WORD_PATTERN)])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=70), st.text(alphabet="ab \n\t\x00\x1f\x7f<>é", max_size=70)))
@example("dog\n")  # Python's re "$" matches before a final newline; the schema's does not
def test_accepted_class_words_are_storable(word):
    # Whatever --class accepts must pass the revision schema, or the commit would fail after training.
    try:
        check_class_word(word)
    except ConceptError:
        return
    _schema_class_word.validate_python(word)
