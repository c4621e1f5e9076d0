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


# Lines for fresh_python's code: whether this process started a process group or accelerate's PartialState
# (diffusers itself may import accelerate, so importing it proves nothing; starting it does).
GROUP_STARTED = ("import torch.distributed as td\n"
                 "from accelerate.state import PartialState\n"
                 "started = [td.is_initialized(), PartialState._shared_state != {}]\n")


def fresh_python(code: str, env: dict | None = None, timeout: int = 300):
    """Run `code` in a new interpreter with a bare environment (no launcher variables, this checkout first, the
    hub offline, one thread) and return its last stdout line, read as JSON: what a plain one-process run does."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=timeout,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1",
                            "OMP_NUM_THREADS": "1", **(env or {})})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])
