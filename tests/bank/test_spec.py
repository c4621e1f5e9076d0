"""format/SPEC.md against the code: its JSON examples, the committed JSON Schema and the documented fields.

As in OCI's schema/spec_test.go, every ```json block of the spec is a test case, so the examples cannot
drift from the schema or the parser.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel

from cns_cli.bank import models
from cns_cli.bank.revision_io import parse_revision
from cns_cli.bank.schema import revision_schema

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "format" / "SPEC.md"
SCHEMA = ROOT / "format" / "schema" / "revision.schema.json"
EXAMPLES = ROOT / "format" / "examples"

# An optional marker line right before a block ties it to a golden revision file:
#   <!-- example: two-concepts.cnsbank/revisions/000001.json -->            same revision once parsed
#   <!-- example: two-concepts.cnsbank/revisions/000000.json (canonical) -->  and the same bytes
BLOCK = re.compile(
    r"(?:<!-- example: (?P<path>\S+)(?P<canonical> \(canonical\))? -->\n)?```json\n(?P<body>.*?)```", re.S
)


def spec_blocks() -> list[re.Match]:
    return list(BLOCK.finditer(SPEC.read_text(encoding="utf-8")))


def block_id(m: re.Match) -> str:
    return m.group("path") or f"block@{m.start()}"


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_spec_has_init_learn_and_undo_examples():
    kinds = {json.loads(m.group("body"))["operation"]["kind"] for m in spec_blocks()}
    assert {"init", "learn", "undo"} <= kinds


@pytest.mark.parametrize("block", spec_blocks(), ids=block_id)
def test_example_is_valid(block: re.Match, validator: Draft202012Validator):
    doc = json.loads(block.group("body"))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, errors
    parse_revision(block.group("body").encode("utf-8"), f"SPEC.md {block_id(block)}")


@pytest.mark.parametrize("block", [m for m in spec_blocks() if m.group("path")], ids=block_id)
def test_example_matches_golden_revision(block: re.Match):
    golden = (EXAMPLES / block.group("path")).read_bytes()
    body = block.group("body").encode("utf-8")
    assert parse_revision(body, "SPEC.md") == parse_revision(golden, block.group("path"))
    if block.group("canonical"):
        assert body == golden


def test_committed_schema_is_generated_from_the_models():
    expected = json.dumps(revision_schema(), indent=2, sort_keys=True) + "\n"
    assert SCHEMA.read_text(encoding="utf-8") == expected, (
        "format/schema/revision.schema.json is stale; run "
        "`python -m cns_cli.bank.schema > format/schema/revision.schema.json`"
    )


def _models() -> list[type[BaseModel]]:
    return [v for v in vars(models).values() if isinstance(v, type) and issubclass(v, BaseModel)
            and v.__module__ == models.__name__ and not v.__name__.startswith("_")]


@pytest.mark.parametrize("model", _models(), ids=lambda m: m.__name__)
def test_every_model_field_is_documented(model: type[BaseModel]):
    text = SPEC.read_text(encoding="utf-8")
    missing = [name for name in model.model_fields if f"`{name}`" not in text and f'"{name}"' not in text]
    assert not missing, f"{model.__name__} fields not described in SPEC.md: {missing}"


def test_spec_states_the_format_version():
    assert f"version {models.FORMAT_VERSION}" in SPEC.read_text(encoding="utf-8").splitlines()[0]
