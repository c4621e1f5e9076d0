"""Output folders shared by `cns demo` (`run`) and `cns bench` (`cns_cli.bench`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError


def claim_folder(out: Path, marker: str, what: str) -> None:
    """Make `out` an empty output folder of `what`. An earlier run there (it has `marker`) is replaced, so a
    command can be run again; any other non-empty folder is refused untouched."""
    import json
    import shutil

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / marker).is_file():
            raise UsageError(f"{out} is not empty and holds no earlier {what} run; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / marker).write_text(json.dumps({"what": f"{what} output; replaced by the next `{what} --out` here"}) + "\n")
