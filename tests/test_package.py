"""`cns_cli/` is the installed product and nothing else: no import cycles inside it (between modules, or between
its subpackages), nothing imported from the repository's developer folders (tools/, benchmarks/, tests/), and the
typing marker shipped as package data."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cns_cli"


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package is its __init__.py)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:`: never executed, so never part of a cycle."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _imported(name: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(modules of the package that `name` imports anywhere in its file, functions included; top-level names of
    everything else it imports). Relative imports are resolved; `from pkg import mod` counts as importing
    pkg.mod when that is a module, else pkg."""

    def known(dotted: str) -> str | None:  # the longest prefix that is a module of the package
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    inside, outside = set(), set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == "cns_cli":
                inside.add(known(target))
            else:
                outside.add(target.split(".")[0])
    inside.discard(name)
    return inside, outside


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = _modules()
    edges, external = {}, {}
    for name, path in modules.items():
        edges[name], external[name] = _imported(name, path, modules)
    return edges, external


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_find_cycle_finds_one_and_only_one_that_exists():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]


def test_the_import_graph_is_built_from_every_module_and_every_import():
    edges, _ = _graph()
    assert "cns_cli.demo.world" in edges["cns_cli.demo.run"]  # an import inside a function
    assert "cns_cli.demo.outputs" in edges["cns_cli.bench.protocol"]  # a relative import two levels up
    assert "cns_cli.bank" in edges["cns_cli.demo.run"]  # `from ..bank import Bank`: the package itself


def test_no_module_of_the_package_imports_itself_back():
    edges, _ = _graph()
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_subpackage_imports_itself_back():
    """cns_cli.demo may not import cns_cli.bench while bench imports demo, and so on (top-level modules such as
    cns_cli.learn count as their own unit)."""
    edges, _ = _graph()

    def unit(name: str) -> str:
        return ".".join(name.split(".")[:2])

    units: dict[str, set[str]] = {}
    for name, targets in edges.items():
        units.setdefault(unit(name), set()).update(unit(t) for t in targets if unit(t) != unit(name))
    cycle = find_cycle(units)
    if cycle:
        witnesses = [f"{a} -> {b}: " + ", ".join(f"{m} imports {t}" for m, ts in sorted(edges.items()) for t in sorted(ts)
                                                 if unit(m) == a and unit(t) == b)
                     for a, b in zip(cycle, cycle[1:])]
        raise AssertionError("import cycle between subpackages: " + " -> ".join(cycle) + "\n" + "\n".join(witnesses))


def test_the_package_imports_nothing_from_the_repositorys_developer_folders():
    _, external = _graph()
    for name, tops in external.items():
        assert not tops & {"tools", "benchmarks", "tests"}, f"{name} imports {sorted(tops & {'tools', 'benchmarks', 'tests'})}"


def test_the_typing_marker_is_shipped():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["cns_cli"]
    assert (PACKAGE / "py.typed").is_file()
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["cns_cli*"]  # tools/ is not installed
