"""Labelled contact sheets: `cns demo`, `cns bench` and `cns generate --grid` lay their images out with this one
function, a white sheet with one labelled row of tiles per (label, images) and optional captions under tiles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

CAPTION_H = 14  # px of the line under each tile when tiles have captions
TITLE_H = 20
LINE_H = 12  # px per line of a wrapped row label (PIL's default bitmap font is about 11 px high)


def contact_sheet(rows: Sequence[tuple[str, Sequence]], tile: int | tuple[int, int], label_w: int,
                  title: str | None = None, captions: Sequence[Sequence[str]] | None = None):
    """A PIL image: per row its label (wrapped to `label_w`) then its images, each resized to `tile` px (or
    (width, height)): nearest-neighbour when enlarging, so small images stay crisp, Lanczos when shrinking.
    Images are PIL images or uint8 arrays [H, W, 3]. `captions[r][i]` is written under tile i of row r."""
    from PIL import Image, ImageDraw

    tw, th = (tile, tile) if isinstance(tile, int) else tile
    row_h = th + (CAPTION_H if captions else 0)
    top = TITLE_H if title else 0
    width = label_w + tw * max(1, max(len(images) for _, images in rows))
    sheet = Image.new("RGB", (width, top + row_h * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((6, 4), title, fill=(0, 0, 0))
    for y, (label, images) in enumerate(rows):
        y0 = top + y * row_h
        lines = _wrap(draw, label, label_w - 12)[: max(1, th // LINE_H)]
        for i, line in enumerate(lines):
            draw.text((6, y0 + th // 2 - LINE_H * len(lines) // 2 + i * LINE_H), line, fill=(0, 0, 0))
        for x, img in enumerate(images):
            im = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img, np.uint8))
            im = im.convert("RGB")
            enlarging = im.width <= tw and im.height <= th
            sheet.paste(im.resize((tw, th), Image.Resampling.NEAREST if enlarging else Image.Resampling.LANCZOS),
                        (label_w + x * tw, y0))
            if captions:
                draw.text((label_w + x * tw + 4, y0 + th + 1), captions[y][x], fill=(60, 60, 60))
    return sheet


def labelled_sheet(path: Path, rows: list[tuple[str, list]], tile: int, label_w: int, title: str | None = None) -> Path:
    """`contact_sheet` saved as a PNG at `path` (the demo's and the benchmark's own output folders)."""
    contact_sheet(rows, tile, label_w, title).save(path)
    return path


def _wrap(draw, text: str, width: int) -> list[str]:
    """`text` broken at spaces into lines no wider than `width` px (a longer word gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines or [""]
