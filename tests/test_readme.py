"""README's two newcomer commands are exactly what CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_opens_with_two_commands_and_ci_runs_exactly_them():
    commands = _readme_commands()
    assert len(commands) == 2
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == commands


def test_readme_pins_torch_before_anything_pulls_it():
    install = _readme_commands()[0]
    assert "torch==" in install



def test_the_first_command_ends_with_the_offline_demo():
    assert _readme_commands()[0].endswith("&& cns demo")


def _command_rows() -> dict[str, str]:
    """README's command reference: the table under "## Commands", one row per command."""
    section = (ROOT / "README.md").read_text().split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `cns "):
            rows[line.split("`cns ", 1)[1].split()[0].rstrip("`")] = line
    return rows, section


def test_the_command_reference_lists_every_command_and_flag():
    """Every option of every command, as the CLI declares it, appears in that command's README row (flags that
    every command shares are listed once, under the table)."""
    import typer.main

    from cns_cli.cli import app

    rows, section = _command_rows()
    group = typer.main.get_command(app)
    shared = {"--help", "-h", "--json", "--bank"}
    for name, command in group.commands.items():
        assert name in rows, f"README's command table has no row for `cns {name}`"
        for param in command.params:
            for opt in [o for o in (*param.opts, *param.secondary_opts) if o.startswith("-")]:
                where = section if opt in shared else rows[name]
                assert opt in where, f"README does not mention {opt} of `cns {name}`"


def test_the_command_reference_names_no_option_that_does_not_exist():
    """Every `--flag` a command's README row names is an option of that command (or a shared one)."""
    import re

    import typer.main

    from cns_cli.cli import app

    rows, _ = _command_rows()
    group = typer.main.get_command(app)
    shared = {"--help", "--bank", "--version"}
    for name, row in rows.items():
        declared = {o for p in group.commands[name].params for o in (*p.opts, *p.secondary_opts)}
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", row))
        assert named - declared - shared == set(), f"README's `cns {name}` row names {sorted(named - declared - shared)}"
