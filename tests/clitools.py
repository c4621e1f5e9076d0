"""Running the CLI in-process and reading its one-line errors: shared by the CLI-level test files."""

from __future__ import annotations

from typer.testing import CliRunner

from cns_cli.cli import app

runner = CliRunner()


def cns(*args, input: str | None = None, env: dict | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input, env=env)


def one_line_error(r, code: int = 2) -> str:
    """The single `error:` line of a failed command, after checking its exit code and that no traceback leaked."""
    assert r.exit_code == code, (r.exit_code, r.stderr, r.exception)
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]
