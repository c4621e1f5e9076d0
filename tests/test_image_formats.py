"""`cns learn`'s photo folder takes what Pillow reads (GIF, TIFF, ... besides JPEG/PNG/WebP/BMP; an animation gives
its first frame), and Pillow's decompression-bomb guard is one `warning:` line (over its limit) or one skipped file
and, when nothing else is usable, one `error:` line with exit 2 (over twice the limit), never a raw Python warning."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cns_cli.images import load_images
from tests.clitools import cns, one_line_error

RED, BLUE = (220, 20, 20), (20, 20, 220)


def _animated_gif(path, frames=(RED, BLUE)):
    first, *rest = [Image.new("RGB", (96, 96), c) for c in frames]
    first.save(path, save_all=True, append_images=rest, duration=100, loop=0)
    return path


def test_gif_and_tiff_photos_are_learned_from(tmp_path, tiny_base):
    photos = tmp_path / "photos"
    photos.mkdir()
    _animated_gif(photos / "a.gif")
    Image.new("RGB", (96, 96), BLUE).save(photos / "b.tiff")
    Image.new("RGB", (96, 96), RED).save(photos / "c.tif")
    r = cns("--bank", tmp_path / "b.cnsbank", "learn", "dog", photos, "--class", "dog", "--base", tiny_base,
            "--dry-run", "--json", "--score-steps", "1")
    assert r.exit_code == 0, r.stderr
    assert [p.rsplit("/", 1)[1] for p in json.loads(r.stdout)["plan"]["images"]] == ["a.gif", "b.tiff", "c.tif"]
    assert "warning" not in r.stderr.replace("no --class", "")


def test_an_animation_gives_its_first_frame(tmp_path):
    _animated_gif(tmp_path / "a.gif", (RED, BLUE, BLUE))
    pixels = (load_images(tmp_path, 64, warn=False).pixels[0] + 1) * 127.5  # [3, 64, 64] in 0..255
    assert np.allclose(pixels.mean(axis=(1, 2)), RED, atol=3)


@pytest.fixture
def big_photos(tmp_path):
    """Two 96x96 photos: over a decompression-bomb limit of 5000 px, not over twice it; 4000 px: over twice."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (96, 96), RED).save(photos / name)
    return photos


def test_over_pillows_limit_is_one_warning_line_per_photo(big_photos, tmp_path, tiny_base, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    r = cns("--bank", tmp_path / "b.cnsbank", "learn", "dog", big_photos, "--class", "dog", "--base", tiny_base,
            "--dry-run", "--score-steps", "1")
    assert r.exit_code == 0, r.stderr
    assert "DecompressionBombWarning" not in r.stderr and "Image size" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if "decompression-bomb" in line]
    assert lines == [f"warning: {n}: 96x96 px is over Pillow's 0.005 Mpx decompression-bomb limit; read anyway, but a few "
                     "megapixels are plenty: downscale it to save time and memory" for n in ("a.png", "b.png")]


def test_over_twice_pillows_limit_is_skipped_and_with_nothing_else_one_error(big_photos, tmp_path, monkeypatch,
                                                                              no_model_load):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)
    r = cns("--bank", tmp_path / "b.cnsbank", "learn", "dog", big_photos, "--class", "dog", "--dry-run")
    line = one_line_error(r)
    assert "no usable image" in line and "a.png (too large (Image size (9216 pixels) exceeds limit" in line, line
    assert "DecompressionBomb" not in r.stderr.replace(line, "")
