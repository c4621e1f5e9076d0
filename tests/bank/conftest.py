"""Fixtures for the bank-library tests: small valid banks built with bankfactory (numpy only)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import bankfactory` under any import mode

import bankfactory as bf  # noqa: E402

from cns_cli.bank import Bank  # noqa: E402
from cns_cli.bank.verify import verify  # noqa: E402


@pytest.fixture(scope="session")
def _templates(tmp_path_factory) -> dict[str, Path]:
    # Built once through the real API (every write fsynced), then copied per test: copying is much faster.
    root = tmp_path_factory.mktemp("templates")
    bf.build_bank(root / "bank", 2)
    Bank.create(root / "empty", bf.make_base(), argv=["cns", "init"])
    return {"bank": root / "bank", "empty": root / "empty"}


@pytest.fixture
def bank(tmp_path: Path, _templates) -> Bank:
    """A bank with two concepts (concept-0 learned in revision 1, concept-1 in revision 2); HEAD is 2."""
    shutil.copytree(_templates["bank"], tmp_path / "bank")
    return Bank.open(tmp_path / "bank")


@pytest.fixture
def empty_bank(tmp_path: Path, _templates) -> Bank:
    """A freshly initialised bank: revision 0 only, no concepts, no objects."""
    shutil.copytree(_templates["empty"], tmp_path / "empty")
    return Bank.open(tmp_path / "empty")


@pytest.fixture
def unchanged():
    """`check = unchanged(root)` snapshots a bank; `check()` later asserts every file is byte-identical and,
    with healthy=True (the default), that the bank still opens and verifies."""

    def take(root: Path, healthy: bool = True):
        root = Path(root)
        before = bf.snapshot(root)

        def check() -> None:
            after = bf.snapshot(root)
            assert after.keys() == before.keys(), f"files added/removed: {sorted(after.keys() ^ before.keys())}"
            changed = sorted(k for k in before if before[k] != after[k])
            assert not changed, f"files changed: {changed}"
            if healthy:
                opened = Bank.open(root)
                report = verify(opened)
                assert report.ok, report.problems

        return check

    return take
