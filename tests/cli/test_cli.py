"""The CLI contract: commands listed, results on stdout, one JSON document with --json, one-line errors on
stderr with the documented exit codes, and no traceback unless CNS_DEBUG=1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cns_cli.bank.models import FORMAT_VERSION
from cns_cli.cli import app

from tests.bank import bankfactory as bf

runner = CliRunner()
COMMANDS = ["init", "learn", "generate", "forget", "inspect", "log", "verify", "undo", "export", "demo", "bench"]


def cns(*args: str, env: dict | None = None):
    return runner.invoke(app, list(args), env=env)


@pytest.fixture(scope="module")
def bank(tiny_base, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("banks") / "b.cnsbank"
    r = cns("--bank", str(path), "init", "--base", tiny_base)
    assert r.exit_code == 0, r.stderr
    return path


def test_help_lists_every_command():
    r = cns("--help")
    assert r.exit_code == 0
    for name in COMMANDS:
        assert f" {name} " in r.stdout


def test_help_does_not_import_torch():
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom cns_cli.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\nassert r.exit_code == 0\n"
        "bad = [m for m in ('torch', 'diffusers', 'transformers', 'pydantic') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"cns --help imported {out.stdout.strip()}"


def test_init_records_base_pointer_and_fingerprint(bank, tiny_base):
    r = cns("--bank", str(bank), "inspect", "--json")
    assert r.exit_code == 0
    doc = json.loads(r.stdout)  # exactly one JSON document, nothing else on stdout
    assert doc["revision"] == 0 and doc["concepts"] == []
    assert doc["base"]["kind"] == "local-dir" and doc["base"]["location"] == str(Path(tiny_base).resolve())
    assert doc["base"]["kv_layers"] == 14 and doc["base"]["text_dim"] == 32
    assert len(doc["base"]["fingerprint"]) == 64


def test_fingerprint_changes_with_kv_weights_only(tiny_base):
    from cns_cli.model.loading import fingerprint, load_pipeline, resolve_base

    pipe = load_pipeline(resolve_base(tiny_base))
    before = fingerprint(pipe.unet)
    pipe.unet.conv_in.weight.data += 1  # not a K/V weight: the bank does not depend on it
    assert fingerprint(pipe.unet) == before
    layer = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k
    layer.weight.data[3, 5] += 1e-3
    assert fingerprint(pipe.unet) != before


def test_bank_from_environment_variable(bank):
    r = cns("log", "--json", env={"CNS_BANK": str(bank)})
    assert r.exit_code == 0
    entries = json.loads(r.stdout)["revisions"]
    assert [e["revision"] for e in entries] == [0] and entries[0]["operation"]["kind"] == "init"


def test_verify_ok_and_json(bank):
    r = cns("--bank", str(bank), "verify", "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["ok"] is True


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bank", "{missing}", "inspect"], "no bank at"),
        (["--bank", "{tmp}", "log"], "is not a cns bank"),
        (["--bank", "{bank}", "undo"], "nothing to undo"),
        (["--bank", "{bank}", "forget", "cat"], "no concept 'cat'"),
        (["--bank", "{bank}", "forget", "../etc"], "contains '/'"),
        (["--bank", "{bank}", "forget", "My Dog"], "whitespace"),
        (["--bank", "{bank}", "init", "--base", "{tiny}"], "already holds a bank"),
        (["--bank", "{new}", "init", "--base", "no-such-org/no-such-model"], "download it first"),
        (["--bank", "{new}", "init", "--base", "{ckpt}"], "pickle"),
        (["--bank", "{new}", "init", "--base", "{tmp}"], "not a diffusers pipeline"),
        (["--bank", "{new}", "init", "--base", "not a model"], "neither an existing path nor a hub id"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_bank_intact(args, message, bank, tiny_base, tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04not really a pickle")
    subs = {"{missing}": str(tmp_path / "missing"), "{tmp}": str(tmp_path), "{bank}": str(bank),
            "{tiny}": tiny_base, "{new}": str(tmp_path / "new.cnsbank"), "{ckpt}": str(ckpt)}
    head_before = (bank / "HEAD").read_bytes()
    r = cns(*[subs.get(a, a) for a in args])
    assert r.exit_code == 2, r.stderr
    assert message in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stdout == ""
    assert (bank / "HEAD").read_bytes() == head_before
    assert not (tmp_path / "new.cnsbank").exists()


def test_verify_names_the_corrupt_object_and_exits_1(tiny_base, tmp_path):
    path = bf.bank_with(tmp_path / "b.cnsbank", ["dog", "hat"])
    victim = sorted((path / "objects").iterdir())[1]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    r = cns("--bank", str(path), "verify", "--json")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["ok"] is False
    assert [p["where"] for p in doc["problems"]] == [f"objects/{victim.name}"]
    assert "sha256 mismatch" in doc["problems"][0]["problem"]


def test_unknown_major_version_is_refused(tmp_path):
    path = bf.bank_with(tmp_path / "b.cnsbank", [])
    rev = path / "revisions" / "000000.json"
    rev.write_text(rev.read_text().replace(f'"format_version": "{FORMAT_VERSION}"', '"format_version": "2.0"'))
    r = cns("--bank", str(path), "inspect")
    assert r.exit_code == 2 and "format 2.0" in r.stderr and "upgrade cns" in r.stderr


def test_forget_and_undo_through_the_cli(tmp_path):
    path = bf.bank_with(tmp_path / "b.cnsbank", ["dog", "hat"])
    before = json.loads(cns("--bank", str(path), "inspect", "--json").stdout)
    r = cns("--bank", str(path), "forget", "hat", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["concepts"] == ["dog"]
    r = cns("--bank", str(path), "undo", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["concepts"] == ["dog", "hat"]
    after = json.loads(cns("--bank", str(path), "inspect", "--json").stdout)
    assert after["concepts"] == before["concepts"]  # same objects, same sizes, same slices
    ops = [e["operation"]["kind"] for e in json.loads(cns("--bank", str(path), "log", "--json").stdout)["revisions"]]
    assert ops[:2] == ["undo", "forget"]


def test_inspect_neurons_reports_overlaps(tmp_path):
    path = bf.bank_with(tmp_path / "b.cnsbank", ["dog", "hat"])
    doc = json.loads(cns("--bank", str(path), "inspect", "--neurons", "--json").stdout)
    from cns_cli.bank import Bank

    bank = Bank.open(path)
    rev = bank.head()
    rows = {n: {k[:-5]: set(v.tolist()) for k, v in bank.read_object(rev.concepts[n].delta).items() if k.endswith(".rows")}
            for n in ("dog", "hat")}
    expected = sum(len(rows["dog"][layer] & rows["hat"].get(layer, set())) for layer in rows["dog"])
    dog = next(c for c in doc["concepts"] if c["name"] == "dog")
    assert dog["overlap"] == {"hat": expected}
    assert sum(e["neurons"] for e in dog["per_layer"]) == dog["neurons"]


def test_inspect_shows_the_vectors_of_each_concept(vectors_bank_readonly, tmp_path):
    """<dog> learned with --vectors 3, <hat> with 1: k per concept in --json and in the table, its token parameters
    k x width; a damaged embedding object shows "?" (and its parameters count what the learn recorded)."""
    import shutil

    from cns_cli.bank import Bank

    doc = json.loads(cns("--bank", str(vectors_bank_readonly), "inspect", "--json").stdout)
    by = {c["name"]: c for c in doc["concepts"]}
    assert (by["dog"]["vectors"], by["hat"]["vectors"]) == (3, 1)
    assert (by["dog"]["parameters"]["token"], by["hat"]["parameters"]["token"]) == (3 * 32, 32)
    lines = cns("--bank", str(vectors_bank_readonly), "inspect").stdout.splitlines()
    header = next(line for line in lines if line.startswith("concept"))
    assert header.split()[:4] == ["concept", "token", "vectors", "class"]
    rows = {line.split()[0]: line.split()[1:4] for line in lines if line.startswith(("dog ", "hat "))}
    assert rows == {"dog": ["<dog>", "3", "dog"], "hat": ["<hat>", "1", "hat"]}
    assert cns("--bank", str(vectors_bank_readonly), "verify").exit_code == 0  # a [3, e] embedding is valid
    path = tmp_path / "damaged.cnsbank"
    shutil.copytree(vectors_bank_readonly, path)
    bank = Bank.open(path)
    bank.object_path(bank.head().concepts["dog"].embedding).unlink()
    r = cns("--bank", str(path), "inspect", "--json")
    assert r.exit_code == 0, r.stderr
    dog = next(c for c in json.loads(r.stdout)["concepts"] if c["name"] == "dog")
    assert dog["vectors"] is None and dog["parameters"]["token"] == 3 * 32
    assert any(line.split()[1:3] == ["<dog>", "?"] for line in cns("--bank", str(path), "inspect").stdout.splitlines())


def test_internal_error_exit_101_and_debug_traceback(bank, monkeypatch):
    import cns_cli.inspect as inspect_mod

    def boom(*a, **k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(inspect_mod, "inspect_bank", boom)
    r = cns("--bank", str(bank), "inspect")
    assert r.exit_code == 101 and "internal error: RuntimeError: kaboom" in r.stderr
    assert "Traceback" not in r.stderr
    r = cns("--bank", str(bank), "inspect", env={"CNS_DEBUG": "1"})
    assert isinstance(r.exception, RuntimeError)


def test_export_of_an_empty_bank_fails_cleanly(bank, tmp_path):
    r = cns("--bank", str(bank), "export", str(tmp_path / "out"))
    assert r.exit_code == 2 and "no concepts to export" in r.stderr


def test_builtin_demo_base_not_bundled_says_how_to_get_one(tmp_path, monkeypatch):
    import cns_cli.model.loading as loading

    monkeypatch.setattr(loading, "builtin_path", lambda name: tmp_path / "absent")
    r = cns("--bank", str(tmp_path / "b.cnsbank"), "init", "--base", "demo")
    assert r.exit_code == 2 and "not bundled" in r.stderr and "tools/train_demo_model.py" in r.stderr


def test_builtin_demo_base_loads_from_package_data(tiny_base, tmp_path, monkeypatch):
    import cns_cli.model.loading as loading

    monkeypatch.setattr(loading, "builtin_path", lambda name: Path(tiny_base))
    r = cns("--bank", str(tmp_path / "b.cnsbank"), "init", "--base", "demo", "--json")
    assert r.exit_code == 0, r.stderr
    base = json.loads(r.stdout)["base"]
    assert base["kind"] == "builtin" and base["location"] == "demo"  # the bank names the model, not a path


def test_ablation_flags_reach_the_revision(tiny_base, tmp_path, dog_photos):
    path = tmp_path / "a.cnsbank"
    r = cns("--bank", str(path), "learn", "dog", str(dog_photos), "--base", tiny_base, "--steps", "1",
            "--selection", "random", "--keep-general-neurons", "--json")
    assert r.exit_code == 0, r.output
    from cns_cli.bank import Bank

    training = Bank.open(path).head().concepts["dog"].training
    assert training["selection"] == "random" and training["remove_general"] is False
    r = cns("--bank", str(path), "learn", "hat", str(dog_photos), "--selection", "best")
    assert r.exit_code == 2 and "best" in r.output


def test_learn_flags_default_to_the_method_defaults_of_learnconfig():
    # The CLI spells its defaults out for --help; they must be LearnConfig's, or `cns learn` and the Python API
    # (cns demo, cns bench) would train different methods under one name.
    import inspect
    from dataclasses import fields

    from cns_cli.cli import learn
    from cns_cli.learn import LearnConfig

    params = inspect.signature(learn).parameters
    shared = [f for f in fields(LearnConfig) if f.name in params and f.name not in ("device", "precision", "selection")]
    assert len(shared) >= 10
    from cns_cli.cli import _max_drift

    for f in shared:
        default = params[f.name].default
        assert (_max_drift(default) if f.name == "max_drift" else default) == f.default, f.name
    assert params["slice_"].default.value == LearnConfig.slice  # `slice` shadows a builtin: the CLI says slice_
    assert LearnConfig.lr_token == 1e-3
