"""`cns generate --grid`: a labelled contact sheet of one run, written next to its images.

One row per prompt (labelled with the prompt as typed), one column per seed (captioned "seed S"), tiles scaled so
their longer side is GRID_TILE px. The sheet is built from the PNGs as written, so it shows exactly the files on
disk, and it is written like them: under a name of its own, never replacing a file.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

GRID_TILE = 256  # px of a tile's longer side
LABEL_W = 200  # px of the prompt column


def write_grid(records: list[dict], per_prompt: int, out_dir: Path) -> Path:
    """The contact sheet of `records` (prompt-major, `per_prompt` images per prompt, as `generate` returns them),
    saved as `r{rev}-grid-{slug}-s{first seed}-{hash8}.png` in `out_dir`; returns its path."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from .generate import slug, write_new_file
    from .prompts import split_strengths
    from .sheet import contact_sheet

    rows = [records[i : i + per_prompt] for i in range(0, len(records), per_prompt)]
    first = records[0]
    scale = GRID_TILE / max(first["width"], first["height"])
    tile = (max(1, round(first["width"] * scale)), max(1, round(first["height"] * scale)))
    sheet = contact_sheet([(row[0]["prompt"], [Image.open(r["path"]) for r in row]) for row in rows], tile, LABEL_W,
                          title=_title(first), captions=[[f"seed {r['seed']}" for r in row] for row in rows])
    names = [[Path(r["path"]).name for r in row] for row in rows]
    info = PngInfo()
    info.add_text("cns:grid", json.dumps(names, ensure_ascii=False))
    buf = io.BytesIO()
    sheet.save(buf, format="png", pnginfo=info)
    digest = hashlib.sha256(json.dumps(names).encode("utf-8")).hexdigest()[:8]
    plain = split_strengths(first["prompt"])[0]  # "<dog:0.7> ..." -> "<dog> ...": the slug of the images' names
    stem = f"r{first['revision']}-grid-{slug(plain)}-s{first['seed']}-{digest}"
    return write_new_file(Path(out_dir), stem, ".png", buf.getvalue())


def _title(record: dict) -> str:
    parts = [f"cns r{record['revision']}", f"{record['steps']} steps", f"CFG {record['guidance']}", record["sampler"],
             f"{record['width']}x{record['height']}", record["model"]]
    if record.get("negative"):
        parts.append(f"negative: {record['negative']}")
    return " · ".join(str(p) for p in parts)
