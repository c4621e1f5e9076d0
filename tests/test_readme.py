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
