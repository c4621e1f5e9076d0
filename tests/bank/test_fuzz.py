"""Fuzzing parse_revision: whatever the bytes, it returns a Revision or raises BankFormatError (which the CLI
reports as a clear message, exit 2) -- never another exception (an internal error, exit 101)."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import bankfactory as bf
from cns_cli.bank import Revision
from cns_cli.bank.revision_io import dump_revision, parse_revision, revision_name
from cns_cli.errors import BankFormatError

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def valid_docs(tmp_path_factory) -> list[bytes]:
    """Revision files of a real bank: the init revision and one with two concepts, a basis and a cache."""
    bank = bf.build_bank(tmp_path_factory.mktemp("fuzz") / "bank", 2)
    return [(bank.root / revision_name(n)).read_bytes() for n in (0, 2)]


def check(raw: bytes) -> Revision | None:
    """The property, plus: whatever parses must be safe to use and round-trip through the writer."""
    try:
        rev = parse_revision(raw, "revisions/000002.json")
    except BankFormatError as e:
        assert str(e), "an error must carry a message"
        return None
    assert isinstance(rev, Revision)
    for ref in rev.objects():
        assert ref.path == f"objects/{ref.sha256}.safetensors"  # never outside objects/
    again = parse_revision(dump_revision(rev), "again")
    assert again == rev
    return rev


def test_valid_documents_parse(valid_docs):
    assert [check(raw).number for raw in valid_docs] == [0, 2]


# -- (a) arbitrary bytes ------------------------------------------------------------------------------------

SPECIAL_STRINGS = ["1.0", "1.9", "2.0", "0.1", "1.", ".1", "1.\u00b2", "\u0661.0", "01.0", "1.0.0", "objects/../x",
                   "/etc/passwd", "\\x", "C:/x", "objects\\x.safetensors", "a" * 64, "0" * 64, "learn", "undo", "init",
                   "forget", "dog", "<dog>", "", "kv-sha256-v1", "builtin", "2024-01-01T00:00:00Z"]
# Number tokens Python's json.dumps cannot produce; they are spliced into the text after dumping.
RAW_TOKENS = ["1e400", "-1e400", "NaN", "Infinity", "-Infinity", "-0", "1E+2", "9" * 400, "0.0000001", "1.0"]
RAW_MARK = "\x00raw:"
json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12) | st.sampled_from(SPECIAL_STRINGS) | st.sampled_from([RAW_MARK + t for t in RAW_TOKENS])
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(st.binary(max_size=512))
@example(b"")
@example(b"\x00")
@example(b"\xef\xbb\xbf{}")  # UTF-8 BOM
@example(b'{"format_version": "1."}')
@example(b'{"format_version": ".1"}')
@example('{"format_version": "1.\u00b2"}'.encode())
@example(('{"format_version": "1.' + "1" * 5000 + '"}').encode())
@example(b'{"format_version": "1.0", "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
@example(b'{"format_version": "1.0", "a": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}")
@example(b'{"format_version": "1.0", "x": 1e400}')
@example(b'{"format_version": "1.0", "x": -1e400}')
@example(b'{"format_version": "1.0", "x": ' + b"9" * 5000 + b"}")
@example(b'{"format_version": "1.0", "x": NaN}')
@example(b'{"format_version": "1.0", "format_version": "1.0"}')
@example(b'"1.0"')
@example(b"null")
def test_arbitrary_bytes(raw):
    check(raw)


@FUZZ
@given(st.dictionaries(st.sampled_from(["format_version", "number", "parent", "concepts", "base", "path", "x"]) | st.text(max_size=6),
                       json_values, max_size=6))
def test_arbitrary_json_objects(doc):
    check(dumps(doc))


@FUZZ
@given(json_values)
def test_arbitrary_json_values(value):
    check(dumps(value))


# -- (b) mutations of a valid revision ----------------------------------------------------------------------

KNOWN_KEYS = ["format_version", "writer", "number", "parent", "created", "operation", "base", "basis", "caches",
              "concepts", "annotations", "path", "sha256", "size", "kind", "concept", "undone", "restores", "start",
              "rank", "total", "per_layer", "delta", "embedding", "token", "general_neurons", "object", "dim"]


def _locations(node, out: list) -> list:
    """Every (container, key) pair inside a decoded JSON document, depth first; key None stands for the
    container itself (so that empty dicts and lists can be added to)."""
    if isinstance(node, (dict, list)):
        out.append((node, None))
    if isinstance(node, dict):
        for k in list(node):
            out.append((node, k))
            _locations(node[k], out)
    elif isinstance(node, list):
        for i in range(len(node)):
            out.append((node, i))
            _locations(node[i], out)
    return out


def _retype(value):
    return [value, str(value), [value], {"v": value}, None, 0, -1, 1.5, True, 2**70, ""]


@st.composite
def mutated(draw, valid_docs):
    raw = draw(st.sampled_from(valid_docs))
    doc = json.loads(raw)
    if draw(st.booleans()):  # half the time, pretend to be a newer minor version: exercises the pruning path
        doc["format_version"] = draw(st.sampled_from(["1.0", "1.1", "1.99"]))
    for _ in range(draw(st.integers(1, 4))):
        locs = _locations(doc, [])
        if not locs:
            break
        container, key = draw(st.sampled_from(locs))
        op = draw(st.sampled_from(["delete", "replace", "retype", "add", "add", "rename", "nest", "version"]))
        if op == "version":
            doc["format_version"] = draw(st.sampled_from(SPECIAL_STRINGS) | st.from_regex(r"\A[0-9]{1,3}\.[0-9]{0,3}\Z") | json_scalars)
        elif op == "add" or key is None:
            new_key = draw(st.sampled_from(KNOWN_KEYS) | st.text(max_size=6))
            value = draw(st.sampled_from(SPECIAL_STRINGS) | json_values)
            if isinstance(container, dict):
                container[new_key] = value
            else:
                container.append(value)
        elif op == "delete":
            del container[key]
        elif op == "replace":
            container[key] = draw(json_values)
        elif op == "retype":
            container[key] = draw(st.sampled_from(_retype(container[key])))
        elif op == "rename" and isinstance(container, dict):
            container[draw(st.sampled_from(KNOWN_KEYS) | st.text(max_size=6))] = container.pop(key)
        elif op == "nest":
            container[key] = copy.deepcopy(doc) if draw(st.booleans()) else [container[key]]
    return dumps(doc, ensure_ascii=draw(st.booleans()))


def dumps(value, ensure_ascii: bool = True) -> bytes:
    text = json.dumps(value, ensure_ascii=ensure_ascii)
    for token in RAW_TOKENS:
        text = text.replace(json.dumps(RAW_MARK + token), token)
    return text.encode()


@FUZZ
@given(data=st.data())
def test_mutated_valid_revisions(valid_docs, data):
    check(data.draw(mutated(valid_docs)))


@FUZZ
@given(data=st.data())
def test_byte_mutations_of_valid_revisions(valid_docs, data):
    raw = bytearray(data.draw(st.sampled_from(valid_docs)))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if op == "flip":
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "delete":
            del raw[i : i + data.draw(st.integers(1, 8))]
        else:
            raw[i:i] = data.draw(st.sampled_from([b"{", b"}", b"[", b"]", b",", b'"', b"\\", b"NaN", b"1e999", b"-", b".", b"\xff", b"\x00"]))
        if not raw:
            break
    check(bytes(raw))


def test_deep_nesting_in_every_position(valid_docs):
    # Nesting close to the recursion limit, wherever it sits in the document.
    doc = json.loads(valid_docs[1])
    for depth in (500, 900, 990, 1000, 2000, 50_000):
        for parent_key in ("annotations", "concepts", "base", "future"):
            d = copy.deepcopy(doc)
            d[parent_key] = "@@"
            raw = json.dumps(d).encode().replace(b'"@@"', b"[" * depth + b"]" * depth)
            check(raw)
        d = copy.deepcopy(doc)
        d["concepts"]["concept-0"]["training"] = "@@"
        check(json.dumps(d).encode().replace(b'"@@"', b'{"a": ' * depth + b"1" + b"}" * depth))
