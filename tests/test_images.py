"""Loading a concept's photos: orientation, colour modes, resize + centre crop, captions, and how broken or
unsupported files are skipped (with a warning) or reported (when nothing is usable)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cns_cli import output
from cns_cli.errors import UsageError
from cns_cli.images import ImageSet, load_images

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


@pytest.fixture
def warnings(monkeypatch) -> list[str]:
    """Every output.warn message, captured instead of printed."""
    seen: list[str] = []
    monkeypatch.setattr(output, "warn", seen.append)
    return seen


def solid(path: Path, color=RED, size=(96, 96), mode="RGB", **save) -> Path:
    Image.new(mode, size, color).save(path, **save)
    return path


def halves(size, first, second, vertical_split=True) -> Image.Image:
    """Left/right halves (or top/bottom) in two colours."""
    w, h = size
    img = Image.new("RGB", size, first)
    box = (w // 2, 0, w, h) if vertical_split else (0, h // 2, w, h)
    img.paste(second, box)
    return img


def rgb_at(s: ImageSet, i: int, y: int, x: int) -> np.ndarray:
    """The 0-255 colour of one output pixel."""
    return (s.pixels[i, :, y, x] + 1.0) * 127.5


def close(actual, expected, tol=12) -> bool:
    diff = np.abs(np.asarray(actual, dtype=float) - np.asarray(expected, dtype=float))
    return bool(np.all(diff <= tol + 1e-3))  # 1e-3: float32 round-off of the [-1, 1] scaling


# --- shape, range, order -----------------------------------------------------------------------------


def test_shape_dtype_and_range(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    solid(tmp_path / "b.jpg", BLACK, (200, 300))
    solid(tmp_path / "c.png", WHITE, (64, 64))
    s = load_images(tmp_path, 64)
    assert s.pixels.shape == (3, 3, 64, 64) and s.pixels.dtype == np.float32
    assert s.pixels.min() >= -1.0 and s.pixels.max() <= 1.0
    assert s.pixels[2].min() == 1.0  # white is exactly +1
    assert np.all(s.pixels[1] <= -0.95)  # black (JPEG) is about -1
    assert len(s) == 3 and s.captions == [None, None, None] and s.skipped == []


def test_sorted_by_name_hidden_and_subfolders_ignored(tmp_path, warnings):
    solid(tmp_path / "b.PNG", GREEN)
    solid(tmp_path / "a.JPEG", RED)
    solid(tmp_path / "c.webp", BLUE)
    solid(tmp_path / "d.bmp", WHITE)
    solid(tmp_path / ".hidden.png", BLACK)
    (tmp_path / "sub").mkdir()
    solid(tmp_path / "sub" / "0.png", BLACK)
    s = load_images(tmp_path, 64)
    assert [p.name for p in s.files] == ["a.JPEG", "b.PNG", "c.webp", "d.bmp"]
    assert s.skipped == [] and warnings == []
    assert close(rgb_at(s, 0, 5, 5), RED) and close(rgb_at(s, 1, 5, 5), GREEN)


# --- orientation and colour modes --------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path):
    # Stored 160x80, red left / blue right, with Orientation 6 ("rotate 90 degrees clockwise to view").
    img = halves((160, 80), RED, BLUE)
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    img.save(tmp_path / "upright.jpg", quality=95)
    s = load_images(tmp_path, 64)
    rot, up = s.files.index(tmp_path / "rotated.jpg"), s.files.index(tmp_path / "upright.jpg")
    # Displayed upright the photo is 80x160 with red on top: the crop is red above, blue below.
    assert close(rgb_at(s, rot, 5, 32), RED) and close(rgb_at(s, rot, 58, 32), BLUE)
    # Without the tag the crop is red on the left, blue on the right.
    assert close(rgb_at(s, up, 32, 5), RED) and close(rgb_at(s, up, 32, 58), BLUE)


def test_rgba_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (80, 80), (0, 0, 0, 0))  # fully transparent black
    img.paste((255, 0, 0, 255), (0, 0, 40, 80))  # opaque red left half
    img.paste((0, 0, 255, 128), (40, 0, 80, 80))  # half-transparent blue right half
    img.save(tmp_path / "cutout.png")
    s = load_images(tmp_path, 80)
    assert close(rgb_at(s, 0, 40, 10), RED, tol=1)
    assert close(rgb_at(s, 0, 40, 70), (127, 127, 255), tol=2)


def test_transparent_corner_becomes_white(tmp_path):
    img = Image.new("RGBA", (64, 64), (0, 255, 0, 255))
    img.paste((0, 0, 0, 0), (0, 0, 8, 8))
    img.save(tmp_path / "a.png")
    s = load_images(tmp_path, 64)
    assert close(rgb_at(s, 0, 2, 2), WHITE, tol=0) and close(rgb_at(s, 0, 40, 40), GREEN, tol=0)


def test_palette_with_and_without_transparency(tmp_path):
    pal = Image.new("P", (64, 64), 1)
    pal.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    pal.paste(0, (0, 0, 32, 64))
    pal.save(tmp_path / "a.png")  # left half palette index 0 (black), right half index 1
    pal.save(tmp_path / "b.png", transparency=0)  # index 0 is transparent -> white
    s = load_images(tmp_path, 64)
    assert close(rgb_at(s, 0, 10, 10), BLACK, tol=0) and close(rgb_at(s, 0, 10, 50), (200, 30, 40), tol=0)
    assert close(rgb_at(s, 1, 10, 10), WHITE, tol=0) and close(rgb_at(s, 1, 10, 50), (200, 30, 40), tol=0)


@pytest.mark.parametrize(
    "mode,color,expected",
    [("L", 100, (100, 100, 100)), ("LA", (100, 0), WHITE), ("1", 1, WHITE), ("CMYK", (0, 255, 255, 0), RED)],
)
def test_other_modes_become_rgb(tmp_path, mode, color, expected):
    ext = "jpg" if mode == "CMYK" else "png"
    solid(tmp_path / f"a.{ext}", color, mode=mode)
    s = load_images(tmp_path, 64)
    assert s.pixels.shape == (1, 3, 64, 64)
    assert close(rgb_at(s, 0, 30, 30), expected, tol=3)


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    arr = np.full((64, 64), 65535, dtype=np.uint16)
    arr[:, 32:] = 32896  # 128 * 257
    Image.fromarray(arr).save(tmp_path / "deep.png")
    s = load_images(tmp_path, 64)
    assert close(rgb_at(s, 0, 10, 10), WHITE, tol=0) and close(rgb_at(s, 0, 10, 50), (128, 128, 128), tol=0)


# --- resize and centre crop --------------------------------------------------------------------------


def test_center_crop_exact_when_no_resize_needed(tmp_path):
    # 128 wide x 64 high, red channel = x: the crop must start at x = 32.
    arr = np.zeros((64, 128, 3), dtype=np.uint8)
    arr[:, :, 0] = np.arange(128, dtype=np.uint8)[None, :]
    Image.fromarray(arr).save(tmp_path / "ramp.png")
    s = load_images(tmp_path, 64)
    expected = np.arange(32, 96, dtype=np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(s.pixels[0, 0, 0, :], expected, atol=1e-6)
    np.testing.assert_allclose(s.pixels[0, 0, :, 0], np.full(64, expected[0]), atol=1e-6)


def test_center_crop_of_tall_image(tmp_path):
    # 64 wide x 128 high, green channel = y: the crop must start at y = 32.
    arr = np.zeros((128, 64, 3), dtype=np.uint8)
    arr[:, :, 1] = np.arange(128, dtype=np.uint8)[:, None]
    Image.fromarray(arr).save(tmp_path / "ramp.png")
    s = load_images(tmp_path, 64)
    np.testing.assert_allclose(s.pixels[0, 1, :, 0], np.arange(32, 96) / 127.5 - 1.0, atol=1e-6)


@pytest.mark.parametrize("size", [(256, 128), (100, 50)])  # downscale and upscale
def test_resize_short_side_then_crop_stripes(tmp_path, size):
    # Three vertical stripes red | green | blue, the middle one half the width: after scaling the short
    # side to 64 the central 64x64 crop is all green.
    w, h = size
    img = Image.new("RGB", size, RED)
    img.paste(GREEN, (w // 4, 0, 3 * w // 4, h))
    img.paste(BLUE, (3 * w // 4, 0, w, h))
    img.save(tmp_path / "stripes.png")
    s = load_images(tmp_path, 64, min_side=32)
    assert s.pixels.shape == (1, 3, 64, 64)
    crop = (s.pixels[0, :, :, 4:-4] + 1) * 127.5  # a few columns from the edges (resampling blur)
    assert close(crop.reshape(3, -1).T, GREEN, tol=8)


# --- skipping and errors -----------------------------------------------------------------------------


def test_truncated_jpeg_among_good_ones_is_skipped_with_warning(tmp_path, warnings):
    solid(tmp_path / "a.jpg", RED)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(tmp_path / "b.jpg")
    data = (tmp_path / "b.jpg").read_bytes()
    (tmp_path / "b.jpg").write_bytes(data[: len(data) // 2])
    solid(tmp_path / "c.png", BLUE)
    s = load_images(tmp_path, 64)
    assert [p.name for p in s.files] == ["a.jpg", "c.png"] and s.pixels.shape[0] == 2
    assert [(p.name, r.split(":")[0]) for p, r in s.skipped] == [("b.jpg", "corrupt")]
    assert len(warnings) == 1 and "b.jpg" in warnings[0] and "corrupt" in warnings[0]


def test_garbage_png_is_skipped(tmp_path, warnings):
    solid(tmp_path / "a.png", RED)
    (tmp_path / "b.png").write_bytes(b"not a png at all")
    s = load_images(tmp_path, 64)
    assert s.skipped == [(tmp_path / "b.png", "corrupt: not a readable image")]
    assert warnings and "b.png" in warnings[0]


def test_small_image_is_skipped(tmp_path, warnings):
    solid(tmp_path / "big.png", RED, (100, 64))
    solid(tmp_path / "small.png", RED, (40, 40))
    s = load_images(tmp_path, 64)
    assert [p.name for p in s.files] == ["big.png"]
    assert s.skipped == [(tmp_path / "small.png", "only 40x40 px; needs at least 64 px on the shorter side")]
    assert len(warnings) == 1 and "small.png" in warnings[0]


def test_only_broken_or_unsupported_files_is_one_error_listing_them(tmp_path, warnings):
    (tmp_path / "a.txt").write_text("a caption")
    (tmp_path / "b.svg").write_text("<svg/>")
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    solid(tmp_path / "d.jpg", RED, (40, 30))
    (tmp_path / "README").write_text("x")
    with pytest.raises(UsageError) as e:
        load_images(tmp_path, 64)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"no usable image in {tmp_path}: ")
    assert "a.txt (caption without image)" in msg
    assert "b.svg (not an image (.svg))" in msg
    assert "c.png (corrupt: " in msg
    assert "d.jpg (only 40x30 px; needs at least 64 px on the shorter side)" in msg
    assert "README (not an image (no extension))" in msg
    assert warnings == []  # the error already lists them


def test_error_listing_is_truncated(tmp_path):
    for i in range(12):
        (tmp_path / f"f{i:02d}.gif").write_bytes(b"GIF89a")
    with pytest.raises(UsageError) as e:
        load_images(tmp_path, 64)
    msg = str(e.value)
    assert "f07.gif" in msg and "f08.gif" not in msg and ", and 4 more;" in msg


def test_missing_folder(tmp_path):
    with pytest.raises(UsageError, match="image folder .*nope does not exist"):
        load_images(tmp_path / "nope", 64)


def test_not_a_folder(tmp_path):
    f = solid(tmp_path / "a.png", RED)
    with pytest.raises(UsageError, match="is not a folder"):
        load_images(f, 64)


def test_empty_folder(tmp_path):
    with pytest.raises(UsageError, match=r"is empty; put 3-20 photos of the concept in it"):
        load_images(tmp_path, 64)


def test_folder_with_only_subfolders_and_hidden_files(tmp_path):
    (tmp_path / "photos").mkdir()
    solid(tmp_path / ".DS_Store.png", RED)
    with pytest.raises(UsageError, match=r"is empty \(subfolders are not read\)"):
        load_images(tmp_path, 64)


# --- captions ----------------------------------------------------------------------------------------


def test_caption_pairing(tmp_path, warnings):
    solid(tmp_path / "001.png", RED)
    (tmp_path / "001.txt").write_text("  a dog on grass,\n  sunny day \n")
    solid(tmp_path / "002.jpg", GREEN)
    solid(tmp_path / "003.png", BLUE)
    (tmp_path / "003.txt").write_text("   \n")
    (tmp_path / "004.txt").write_text("orphan")
    (tmp_path / "005.TXT").write_bytes("\ufeffwith bom".encode("utf-8"))
    solid(tmp_path / "005.webp", WHITE)
    s = load_images(tmp_path, 64)
    assert [p.name for p in s.files] == ["001.png", "002.jpg", "003.png", "005.webp"]
    assert s.captions == ["a dog on grass, sunny day", None, None, "with bom"]
    assert s.skipped == [(tmp_path / "004.txt", "caption without image")]
    assert len(warnings) == 1 and "004.txt" in warnings[0]


def test_caption_of_skipped_image_is_not_an_orphan(tmp_path, warnings):
    solid(tmp_path / "a.png", RED)
    solid(tmp_path / "b.png", RED, (20, 20))
    (tmp_path / "b.txt").write_text("tiny")
    s = load_images(tmp_path, 64)
    assert [(p.name, r.startswith("only")) for p, r in s.skipped] == [("b.png", True)]


def test_warning_with_brackets_in_file_name_is_escaped(tmp_path, warnings):
    solid(tmp_path / "a.png", RED)
    (tmp_path / "dog [red].gif").write_bytes(b"GIF89a")
    load_images(tmp_path, 64)
    assert warnings == ["skipping dog \\[red].gif: corrupt: not a readable image"]  # a GIF header, nothing more
