"""click's usage errors (an unknown option or command, a value of the wrong type, a missing argument) are one line
`error: ...` naming what to fix and `cns CMD --help`, exit 2, like every other bad input (issue 35); help names
arguments as click does (REV, PROMPTS...), not typer's `{REV}` / `REV <str>` / `<list[str]>`."""

from __future__ import annotations

import re

import pytest

from cns_cli.cli import app
from tests.clitools import cns, one_line_error

COMMANDS = [c.name or c.callback.__name__ for c in app.registered_commands]


def _only_line(r) -> str:
    line = one_line_error(r)
    assert r.stderr.strip() == line, r.stderr  # nothing else: no "Usage:", no "Try ...", no blank line
    return line


@pytest.mark.parametrize("args, want", [
    (["generate", "<dog>", "--steps", "nan"], "error: --steps expects a whole number, got 'nan'; see `cns generate --help`"),
    (["generate", "<dog>", "--guidance", "lots"], "error: --guidance expects a number, got 'lots'; see `cns generate --help`"),
    (["generate", "<dog>", "--device", "gpu"], "error: --device: 'gpu' is not one of 'auto', 'cpu', 'cuda', 'mps'; "
                                               "see `cns generate --help`"),
    (["generate"], "error: missing PROMPTS; see `cns generate --help`"),
    (["learn", "dog"], "error: missing IMAGES; see `cns learn --help`"),
    (["restore"], "error: missing REV; see `cns restore --help`"),
    (["frob"], "error: no such command 'frob'; see `cns --help`"),
    (["restore", "-1"], "error: -1 is not an option, and no argument of cns is a negative number (revisions count "
                        "from 0: see `cns log`); see `cns restore --help`"),
])
def test_usage_errors_are_one_line(tmp_path, args, want):
    r = cns("--bank", tmp_path / "none.cnsbank", *args)
    assert _only_line(r) == want


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_option_is_one_line_for_every_command(tmp_path, command):
    line = _only_line(cns("--bank", tmp_path / "none.cnsbank", command, "--no-such-flag"))
    assert line == f"error: no such option: --no-such-flag; see `cns {command} --help`"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_arguments_as_click_does(command):
    r = cns(command, "--help")
    assert r.exit_code == 0
    usage = r.stdout.split("\n\n")[0]
    arguments = r.stdout.partition("Arguments:")[2].partition("Options:")[0]
    assert "{" not in usage and not re.search(r"^  \S+ <", arguments, re.M) and "<list[" not in r.stdout, r.stdout


def test_argument_names_in_usage_and_help():
    restore, generate = cns("restore", "--help").stdout, cns("generate", "--help").stdout
    assert restore.startswith("Usage: cns restore [OPTIONS] REV\n") and "\n  REV  The revision" in restore
    assert generate.startswith("Usage: cns generate [OPTIONS] PROMPTS...\n") and "\n  PROMPTS...  Prompts;" in generate
    assert "--region BOX" in generate and "--region-prompt TEXT" in generate
    assert "--concept NAME" in cns("export", "--help").stdout


def test_cns_alone_still_shows_the_help():
    r = cns()
    assert "Usage: cns [OPTIONS] COMMAND [ARGS]..." in r.stdout + r.stderr and "error:" not in r.stderr
