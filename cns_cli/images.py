"""Loading the photos of one concept from a folder into a training array (numpy + PIL only, no torch).

An image is any file whose extension Pillow registers a reader for (JPEG, PNG, WebP, BMP, GIF, TIFF, ...; an
animated GIF or WebP, or a multi-page TIFF, gives its first frame). Every image is EXIF-rotated, turned into plain
RGB (transparency composited on white), fully decoded, resized so its shorter side equals the training resolution
and centre-cropped to a square. One over Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS, 89 Mpx) is read
with one `warning:` line; one over twice that is skipped, as Pillow refuses to decode it. A stray broken
file among good ones is skipped with a warning rather than failing the run; the skipped files are also
returned so `--dry-run` / `--json` can report them. Captions follow the kohya convention: `001.txt` next to
`001.png`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import output
from .errors import UsageError

CAPTION_EXTENSION = ".txt"
_MAX_LISTED = 8  # skipped files named in the "no usable image" error before "and N more"
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# Pillow keeps 16/32-bit greyscale as integer modes; converting them to "L" clips instead of scaling.
_WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


@dataclass
class ImageSet:
    """The usable images of a folder, in file-name order, and what was left out and why."""

    pixels: np.ndarray  # float32 [N, 3, R, R] in [-1, 1]
    files: list[Path] = field(default_factory=list)
    captions: list[str | None] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)


class _Skip(Exception):
    """One file cannot be used; `str(e)` is the reason shown to the user."""


def load_images(folder: Path, resolution: int, min_side: int = 64, warn: bool = True) -> ImageSet:
    """Read every image directly inside `folder` (sorted by name, hidden files and subfolders ignored).
    `warn=False` for a pre-check whose skipped files will be reported by the real load."""
    folder = Path(folder)
    entries = _list_folder(folder)
    images, captions, skipped = _classify(entries)
    arrays, files, texts = [], [], []
    for path in images:
        try:
            array, note = _read_image(path, resolution, min_side)
        except _Skip as e:
            skipped.append((path, str(e)))
            continue
        if note and warn:
            output.warn(_escape(f"{path.name}: {note}"))
        arrays.append(array)
        files.append(path)
        texts.append(_read_caption(captions.get(path.stem)))
    skipped.sort(key=lambda item: item[0].name)
    if not files:
        raise UsageError(_no_usable_message(folder, skipped, min_side))
    for path, reason in skipped if warn else []:  # only warn when the run goes on; else the error lists them
        output.warn(_escape(f"skipping {path.name}: {reason}"))
    return ImageSet(np.stack(arrays), files, texts, skipped)


def _list_folder(folder: Path) -> list[Path]:
    """The visible regular files of `folder`, sorted by name so runs are reproducible."""
    if not folder.exists():
        raise UsageError(f"image folder {folder} does not exist; pass the folder that holds the photos")
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder; pass the folder that holds the photos, not one file")
    try:
        children = [p for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError as e:  # permission denied and the like
        why = e.strerror or e
        raise UsageError(f"cannot read image folder {folder}: {why}; check its permissions") from e
    files = sorted((p for p in children if p.is_file()), key=lambda p: p.name)
    if not files:
        hint = " (subfolders are not read)" if children else ""
        raise UsageError(f"{folder} is empty{hint}; put 3-20 photos of the concept in it")
    return files


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """The extensions (".gif") of every format this Pillow can open: its own registry, so a plugin (pillow-heif, say)
    adds its formats. Image.init() loads all of Pillow's format plugins first (open() alone loads only a few)."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def _classify(files: list[Path]) -> tuple[list[Path], dict[str, Path], list[tuple[Path, str]]]:
    """Split into images, captions by stem, and files that are neither (with the reason)."""
    image_exts = image_extensions()
    images = [p for p in files if p.suffix.lower() in image_exts and p.suffix.lower() != CAPTION_EXTENSION]
    stems = {p.stem for p in images}
    captions: dict[str, Path] = {}
    skipped: list[tuple[Path, str]] = []
    for p in files:
        ext = p.suffix.lower()
        if ext == CAPTION_EXTENSION:
            if p.stem in stems:
                captions[p.stem] = p
            else:
                skipped.append((p, "caption without image"))
        elif ext not in image_exts:
            skipped.append((p, f"not an image ({ext or 'no extension'})"))
    return images, captions, skipped


def _read_caption(path: Path | None) -> str | None:
    """A caption file's text on one line; empty or unreadable counts as no caption."""
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")  # -sig: editors on Windows add a BOM
    except OSError as e:
        output.warn(_escape(f"ignoring caption {path.name}: {e.strerror or e}"))
        return None
    text = " ".join(text.split())  # captions become part of a prompt; newlines there mean nothing
    return text or None


def _read_image(path: Path, resolution: int, min_side: int) -> tuple[np.ndarray, str | None]:
    """One file as float32 [3, R, R] in [-1, 1] and a note for a warning (or None), or _Skip with the reason."""
    try:
        with warnings.catch_warnings(record=True) as caught, Image.open(path) as img:
            warnings.simplefilter("always", Image.DecompressionBombWarning)  # said once below, not raw on stderr
            img.load()  # decode everything now (the first frame of an animation) so a truncated file fails here
            img = ImageOps.exif_transpose(img)  # phones store portrait shots sideways plus a rotation tag
            rgb = _to_rgb(img)
    except _Skip:
        raise
    except Image.DecompressionBombError as e:  # Pillow's guard against images that decode to gigabytes
        raise _Skip(f"too large ({_one_line(e)}); downscale it, a few megapixels are plenty") from e
    except UnidentifiedImageError as e:
        raise _Skip("corrupt: not a readable image") from e
    except MemoryError:
        raise
    except Exception as e:  # malformed files make Pillow's plugins raise almost anything; skip, don't crash
        raise _Skip(f"corrupt: {_one_line(e)}") from e
    w, h = rgb.size
    if min(w, h) < min_side:
        raise _Skip(f"only {w}x{h} px; needs at least {min_side} px on the shorter side")
    note = None
    if any(issubclass(c.category, Image.DecompressionBombWarning) for c in caught):
        note = (f"{w}x{h} px is over Pillow's {Image.MAX_IMAGE_PIXELS / 1e6:.3g} Mpx decompression-bomb limit; read "
                "anyway, but a few megapixels are plenty: downscale it to save time and memory")
    return _to_array(_center_crop(_resize_short_side(rgb, resolution), resolution)), note


def _to_rgb(img: Image.Image) -> Image.Image:
    """Plain 8-bit RGB: transparency goes on white (the usual look of cut-outs), wide greys are scaled."""
    if img.mode in _WIDE_GREY_MODES:
        grey = np.asarray(img, dtype=np.float64) / 257.0  # 0..65535 -> 0..255
        img = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8))
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.rint(np.asarray(img)), 0, 255).astype(np.uint8))
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as e:  # e.g. LAB, which Pillow cannot convert
        raise _Skip(f"unsupported colour mode {img.mode}") from e


def _resize_short_side(img: Image.Image, resolution: int) -> Image.Image:
    """Scale so the shorter side is exactly `resolution`, keeping the aspect ratio."""
    w, h = img.size
    short = min(w, h)
    if short == resolution:
        return img
    size = (resolution, round(h * resolution / w)) if w <= h else (round(w * resolution / h), resolution)
    # LANCZOS keeps detail when shrinking; BICUBIC rings less when enlarging small photos.
    resample = Image.Resampling.LANCZOS if short > resolution else Image.Resampling.BICUBIC
    return img.resize(size, resample)


def _center_crop(img: Image.Image, resolution: int) -> Image.Image:
    """The central `resolution` square (the subject is usually in the middle of a photo)."""
    w, h = img.size
    left, top = (w - resolution) // 2, (h - resolution) // 2
    return img.crop((left, top, left + resolution, top + resolution))


def _to_array(img: Image.Image) -> np.ndarray:
    """HWC uint8 -> CHW float32 in [-1, 1], the range the VAE encoder expects."""
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _no_usable_message(folder: Path, skipped: list[tuple[Path, str]], min_side: int) -> str:
    """One line listing why each file was left out (the first few, then a count)."""
    listed = ", ".join(f"{p.name} ({reason})" for p, reason in skipped[:_MAX_LISTED])
    more = len(skipped) - _MAX_LISTED
    if more > 0:
        listed += f", and {more} more"
    return (
        f"no usable image in {folder}: {listed}; add photos Pillow reads (JPEG, PNG, WebP, BMP, GIF, TIFF, ...) "
        f"of at least {min_side} px"
    )


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _escape(msg: str) -> str:
    """output.warn prints rich markup; a file called 'dog [1].jpg' must print as is."""
    from rich.markup import escape

    return escape(msg)
