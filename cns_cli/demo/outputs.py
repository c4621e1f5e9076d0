"""Output folders and contact sheets, shared by `cns demo` (`run`) and `cns bench` (`cns_cli.bench`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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


def labelled_sheet(path: Path, rows: list[tuple[str, list]], tile: int, label_w: int, title: str | None = None) -> Path:
    """A PNG with one labelled row of uint8 tiles per (label, images), each tile upscaled (nearest) to
    `tile` px; a `title` adds a 20 px line on top. Used by `cns demo` and `cns bench`."""
    from PIL import Image, ImageDraw

    top = 20 if title else 0
    width = label_w + tile * max(len(r[1]) for r in rows)
    sheet = Image.new("RGB", (width, top + tile * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((6, 4), title, fill=(0, 0, 0))
    for y, (label, images) in enumerate(rows):
        draw.text((6, top + y * tile + tile // 2 - 6), label, fill=(0, 0, 0))
        for x, img in enumerate(images):
            im = Image.fromarray(np.asarray(img, np.uint8)).resize((tile, tile), Image.Resampling.NEAREST)
            sheet.paste(im, (label_w + x * tile, top + y * tile))
    sheet.save(path)
    return path
