"""The JSON Schema of revision files, generated from the pydantic models.

`python -m cns_cli.bank.schema > format/schema/revision.schema.json` regenerates the committed file;
tests/bank/test_spec.py fails if the two differ, so the schema cannot drift from the code.
"""

from __future__ import annotations

import json
import sys

from .models import FORMAT_VERSION, Revision

SCHEMA_ID = "https://cns.invalid/format/schema/revision.schema.json"


def _close_maps(node) -> None:
    """pydantic emits patternProperties for dicts with constrained keys but leaves other keys allowed; a
    key that fails the pattern must fail the schema too."""
    if isinstance(node, dict):
        if "patternProperties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _close_maps(value)
    elif isinstance(node, list):
        for value in node:
            _close_maps(value)


def revision_schema() -> dict:
    schema = Revision.model_json_schema(mode="validation")
    _close_maps(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": f"cns bank revision (format {FORMAT_VERSION})",
        **schema,
    }


def main() -> None:
    sys.stdout.write(json.dumps(revision_schema(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
