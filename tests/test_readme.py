"""README: its two newcomer commands are exactly what CI runs, its command reference matches the CLI both ways,
its links and docs/' resolve, and the benchmark numbers it and docs/benchmark.md quote are those of
benchmarks/results/."""

import json
import re
import sys
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
    import typer.main

    from cns_cli.cli import app

    rows, _ = _command_rows()
    group = typer.main.get_command(app)
    shared = {"--help", "--bank", "--version"}
    for name, row in rows.items():
        declared = {o for p in group.commands[name].params for o in (*p.opts, *p.secondary_opts)}
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", row))
        assert named - declared - shared == set(), f"README's `cns {name}` row names {sorted(named - declared - shared)}"


# README is short; the long material lives in docs/. Links between them must keep working, and the numbers
# README and docs/benchmark.md quote must be the ones the committed benchmark results hold.

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", ROOT / "tools" / "README.md", *sorted(DOCS.glob("*.md"))]


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_every_link_in_readme_and_docs_resolves():
    """Relative links (images too) point at files that exist, and `#anchors` at headings that exist."""
    assert {"benchmark.md", "demo-world.md", "measured.md", "development.md"} <= {p.name for p in PAGES}
    for page in PAGES:
        for link in _links(page):
            if link.startswith(("http://", "https://", "mailto:")):
                continue
            target, _, anchor = link.partition("#")
            path = (page.parent / target).resolve() if target else page
            assert path.exists(), f"{page.relative_to(ROOT)} links to {link}, which does not exist"
            if anchor and path.suffix == ".md":
                assert anchor in _anchors(path), f"{page.relative_to(ROOT)} links to {link}: no such heading"


def test_readme_links_every_docs_page():
    linked = {link.split("#")[0] for link in _links(ROOT / "README.md")}
    for page in DOCS.glob("*.md"):
        assert f"docs/{page.name}" in linked, f"README does not link docs/{page.name}"


def test_every_results_file_the_docs_name_exists():
    for page in PAGES:
        for name in re.findall(r"benchmarks/results/([\w.*-]+\.(?:json|png))", page.read_text()):
            assert list((ROOT / "benchmarks" / "results").glob(name)), f"{page.name} names benchmarks/results/{name}"


def _summaries(name: str) -> dict:
    return {k: m["summary"] for k, m in json.loads((ROOT / "benchmarks" / "results" / name).read_text())["methods"].items()}


def _table_rows(section: str, page: str = "benchmark.md", first: str = "final identity") -> tuple[list[str], list[list[str]]]:
    """The header cells and the rows' cells of the first method table (first column after "method": `first`)
    under the heading `section` of docs/`page`, up to the next heading of any level."""
    text = (DOCS / page).read_text().split(f" {section}\n", 1)[1].split("\n#", 1)[0]
    table = f"| method | {first} |" + text.split(f"\n| method | {first} |", 1)[1]
    lines = table.split("\n\n", 1)[0].splitlines()
    header = [c.strip() for c in lines[0].split("|")[1:-1]]
    return header, [[c.strip() for c in row.split("|")[1:-1]] for row in lines[2:]]


def _assert_table_is(section: str, runs: dict, n_rows: int) -> None:
    from cns_cli.bench.report import COLUMNS

    formats = {header: (key, fmt) for header, key, fmt in COLUMNS}
    header, rows = _table_rows(section)
    assert len(rows) == n_rows
    for cells in rows:
        method = cells[0].split("`")[1]
        summary = runs["seeded rerun" in cells[0]][method]
        for head, cell in zip(header[1:], cells[1:], strict=True):
            key, fmt = formats[head]
            assert cell == fmt.format(summary[key]), f"docs/benchmark.md ({section}): `{method}` {head} is {cell}"


def test_the_benchmark_tables_hold_the_numbers_of_the_results_files():
    """docs/benchmark.md's tables, cell by cell, are what `cns bench`'s report makes of the results files: the
    world-2 runs (bench-k10-world2.json, all ten methods with the drift budget; bench-k10-world2-lambda1.json,
    0.x's nine with λ = 1) and the world-1 run (bench-k8.json; the seeded LoRA
    reruns: bench-k8-lora-seeded.json). A rerun that changes a number fails here until it is copied."""
    _assert_table_is("The 10-concept run (world-2 model)", {False: _summaries("bench-k10-world2.json")}, 10)
    _assert_table_is("The 10-concept run with 0.x's λ = 1 (world-2 model)",
                     {False: _summaries("bench-k10-world2-lambda1.json")}, 9)
    _assert_table_is("The 8-concept run (world-1 model)",
                     {False: _summaries("bench-k8.json"), True: _summaries("bench-k8-lora-seeded.json")}, 11)


REGION_COLUMNS = {  # docs/regions.md header -> (bench.json group, key)
    "plain: both": ("pairs", "shown"), "plain: 2 classes": ("pairs", "classes"),
    "regions: both": ("regional_pairs", "shown"), "in their boxes": ("regional_pairs", "in_order"),
    "regions: 2 classes": ("regional_pairs", "classes"),
    "box identity ÷ alone": ("regional_pairs", "box_identity_ratio"),
    "triples: all 3": ("regional_triples", "shown"), "triples: 3 classes": ("regional_triples", "classes"),
}


def test_the_world_2_regions_table_holds_the_numbers_of_the_results_file():
    """docs/regions.md's world-2 table, cell by cell, is bench-k10-world2.json's pair and triple scores."""
    methods = json.loads((ROOT / "benchmarks" / "results" / "bench-k10-world2.json").read_text())["methods"]
    header, rows = _table_rows("World-2 model (bundled)", page="regions.md", first="plain: both")
    assert len(rows) == 6
    for cells in rows:
        method = cells[0].split("`")[1]
        for head, cell in zip(header[1:], cells[1:], strict=True):
            group, key = REGION_COLUMNS[head]
            assert cell == f"{methods[method][group][key]:.0%}", f"docs/regions.md: `{method}` {head} is {cell}"


def test_status_and_limits_quotes_the_benchmark_plainly():
    """README's "Status and limits" quotes the world-2 bench and says plainly where cns is below textual
    inversion: on the method study's held-out individuals, with that split's numbers."""
    status = (ROOT / "README.md").read_text().split("\n## Status and limits\n", 1)[1].split("\n## ", 1)[0]
    w2 = _summaries("bench-k10-world2.json")
    assert "below textual inversion" in " ".join(status.split())
    for number in (f"{w2['cns']['final_identity']:.3f}", f"{w2['ti']['final_identity']:.3f}",
                   f"{w2['kv-finetune']['mean_forgetting']:.3f}", f"{w2['cns-no-reg']['final_identity']:.3f}",
                   f"{w2['cns']['pairs_both_recognised']:.0%}".replace("%", " %"),
                   f"{w2['cns']['regional_pairs_shown']:.0%}".replace("%", " %")):
        assert number in status, f"README's Status and limits does not quote {number}"
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from method_study import load, means  # what `method_study.py --report` prints

    held_out = means(load(ROOT / "benchmarks" / "results" / "method-study.json"), "held-out")
    for key in ("drift1e-1", "ti"):
        identity = held_out[key]["mean"]["final_identity"]
        assert f"{identity:.3f}" in status, f"README's Status and limits does not quote held-out {key}'s {identity:.3f}"
    assert "SD 2.x" in status and "SDXL" in status
