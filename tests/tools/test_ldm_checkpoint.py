"""tools/ldm_checkpoint.py (issue 35): README's SDXL single-file session starts from a checkpoint and a config folder
that its intro says how to make. Those two commands, exactly as README writes them, run here as a newcomer runs
them, and `cns init` takes what they wrote; bad arguments are one line, before anything loads or is written."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clitools import cns
from tools import ldm_checkpoint as L

ROOT = Path(__file__).resolve().parents[2]


def _readme_setup() -> list[list[str]]:
    """The commands in README's SDXL intro that make ./tiny-xl.safetensors and ./xl-configs, one argv each."""
    section = (ROOT / "README.md").read_text().split("### The same on SDXL (or SD 2.x)", 1)[1].split("```", 1)[0]
    spans = [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", section) if "tools.ldm_checkpoint" in s]
    assert len(spans) == 1, spans
    return [shlex.split(c) for c in spans[0].split(" && ")]


def _readme_init() -> list[str]:
    section = (ROOT / "README.md").read_text().split("### The same on SDXL (or SD 2.x)", 1)[1]
    line = next(x for x in section.splitlines() if x.startswith("$ cns init "))
    return shlex.split(line.removeprefix("$ cns "))


def test_readme_setup_commands_make_what_its_sdxl_session_inits_on(tmp_path, monkeypatch):
    commands = _readme_setup()
    assert [c[:3] for c in commands] == [["python", "-m", "cns_cli.model.tiny"],
                                         ["python", "-m", "tools.ldm_checkpoint"]]
    # From the root of a clone: the repository on the path, the outputs where the commands say (here tmp_path).
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                        "HF_HUB_OFFLINE": "1"}
    for argv in commands:
        r = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, (argv, r.stderr)
    assert (tmp_path / "tiny-xl.safetensors").is_file()
    configs = tmp_path / "xl-configs"
    assert (configs / "model_index.json").is_file() and (configs / "tokenizer_2").is_dir()
    assert not [p for p in configs.rglob("*") if p.suffix in (".safetensors", ".bin")]  # weightless

    monkeypatch.chdir(tmp_path)
    init = _readme_init()
    assert init == ["init", "--base", "./tiny-xl.safetensors", "--config", "./xl-configs"]
    r = cns(*init)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == ".cnsbank"
    ckpt = tmp_path.resolve() / "tiny-xl.safetensors"
    assert r.stderr.strip() == f"created bank .cnsbank on {ckpt} (SDXL, 24 K/V layers)"  # README's line, this path
    base = json.loads(cns("inspect", "--json").stdout)["base"]
    assert (base["kind"], base["family"], base["config"]) == ("single-file", "sdxl", str(configs.resolve()))


def _refusal(*argv) -> str:
    with pytest.raises(SystemExit) as e:
        L.main([str(a) for a in argv])
    assert isinstance(e.value.code, str) and "\n" not in e.value.code, e.value.code
    return e.value.code


def test_bad_arguments_are_one_line_and_write_nothing(tiny_base, tmp_path):
    out = tmp_path / "m.safetensors"
    assert "is not a folder" in _refusal(tmp_path / "missing", out)
    assert "not a diffusers pipeline folder" in _refusal(tmp_path, out)
    assert "must end in .safetensors" in _refusal(tiny_base, tmp_path / "m.ckpt")
    out.write_bytes(b"")
    assert f"{out} already exists" in _refusal(tiny_base, out)
    (tmp_path / "cfg").mkdir()
    assert "cfg already exists" in _refusal(tiny_base, tmp_path / "new.safetensors", "--configs", tmp_path / "cfg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg", "m.safetensors"]
    assert out.read_bytes() == b""
