"""Scene backgrounds for the demo world (`world`): one numpy drawer per scene (gradients, noise, stars,
shells, snowflakes), float32 [64, 64, 3] in 0..255, and `render_scene`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .palette import IMAGE_SIZE, PLAIN_BACKGROUNDS

# --------------------------------------------------------------------------------------------- scenes

_Y = np.arange(IMAGE_SIZE, dtype=np.float32)[:, None]
_X = np.arange(IMAGE_SIZE, dtype=np.float32)[None, :]


def _vgrad(top, bottom, y0: float, y1: float) -> np.ndarray:
    """[64, 1, 3] colour gradient from `top` at row y0 to `bottom` at row y1 (clamped)."""
    t = np.clip((_Y - y0) / max(y1 - y0, 1.0), 0, 1)[..., None]
    return np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t


def _blob(cx, cy, rx, ry) -> np.ndarray:
    return ((_X - cx) / rx) ** 2 + ((_Y - cy) / ry) ** 2 <= 1.0


def _dots(img, rng, k, y0, y1, colours, big_p=0.25) -> None:
    ys = rng.integers(int(y0), max(int(y1), int(y0) + 1), size=k)
    xs = rng.integers(0, IMAGE_SIZE, size=k)
    cs = np.asarray(colours, np.float32)[rng.integers(len(colours), size=k)]
    big = rng.random(k) < big_p
    img[ys, xs] = cs
    bx, by = np.minimum(xs[big] + 1, IMAGE_SIZE - 1), ys[big]
    img[by, bx] = cs[big]


def _beach(rng) -> np.ndarray:
    h = 18 + int(rng.integers(-3, 4))
    shore = h + 8 + int(rng.integers(0, 4)) + 1.3 * np.sin(_X * rng.uniform(0.12, 0.25) + rng.uniform(0, 6.3))
    img = np.broadcast_to(_vgrad((110, 172, 232), (190, 224, 246), 0, h), (64, 64, 3)).copy()
    sea = (_Y >= h) & (_Y < shore)
    sea_c = np.broadcast_to(_vgrad((28, 92, 158), (52, 140, 188), h, shore.mean()), (64, 64, 3))
    img = np.where(sea[..., None], sea_c, img)
    waves = sea & (np.sin(_X * 0.45 + _Y * 2.1 + rng.uniform(0, 6.3)) > 0.85)
    img[waves] += 40
    foam = (_Y >= shore - 1) & (_Y < shore + 0.6)
    img[foam] = (236, 242, 240)
    sand_c = _vgrad((232, 210, 158), (214, 186, 132), shore.mean(), 63)
    dunes = 9 * np.sin(_X * rng.uniform(0.06, 0.14) + _Y * rng.uniform(0.1, 0.25) + rng.uniform(0, 6.3))
    sand = np.broadcast_to(sand_c, (64, 64, 3)) + dunes[..., None]
    grain = rng.normal(0, 5, (64, 64, 1)).astype(np.float32)
    img = np.where((_Y >= shore + 0.6)[..., None], sand + grain, img)
    _dots(img, rng, int(rng.integers(2, 7)), shore.max() + 3, 62, [(250, 236, 226), (240, 196, 196), (255, 250, 242)])
    return img


def _grass(rng) -> np.ndarray:
    h = 24 + int(rng.integers(-4, 5))
    img = np.broadcast_to(_vgrad((98, 162, 228), (178, 214, 242), 0, h), (64, 64, 3)).copy()
    for _ in range(int(rng.integers(0, 3))):  # clouds
        cx, cy = rng.uniform(0, 64), rng.uniform(3, max(h - 10, 4))
        cloud = _blob(cx, cy, rng.uniform(5, 9), rng.uniform(2, 3.5)) | _blob(cx + 4, cy - 1.5, 4, 2.5)
        img[cloud] = img[cloud] * 0.2 + np.float32(240) * 0.8
    trees = h - 2 - 2.5 * np.abs(np.sin(_X * rng.uniform(0.2, 0.4) + rng.uniform(0, 6.3)))
    img = np.where(((_Y >= trees) & (_Y < h))[..., None], np.float32([48, 98, 44]), img)
    base = np.broadcast_to(_vgrad((128, 180, 62), (70, 132, 38), h, 63), (64, 64, 3))
    n = rng.normal(0, 1, (64 + 3, 64)).astype(np.float32)
    blades = (n[:-3] + n[1:-2] + n[2:-1] + n[3:]) * 0.5  # vertical streaks
    ground = base + blades[..., None] * np.float32([6, 13, 4])
    img = np.where((_Y >= h)[..., None], ground, img)
    return img


def _snow(rng) -> np.ndarray:
    h = 26 + int(rng.integers(-4, 5))
    img = np.broadcast_to(_vgrad((168, 180, 200), (206, 213, 226), 0, h), (64, 64, 3)).copy()
    hills = h - 3 - 4 * np.abs(np.sin(_X * rng.uniform(0.05, 0.12) + rng.uniform(0, 6.3)))
    img = np.where(((_Y >= hills) & (_Y < h))[..., None], np.float32([150, 164, 190]), img)
    ground = np.broadcast_to(_vgrad((240, 244, 250), (214, 224, 240), h, 63), (64, 64, 3))
    drift = 7 * np.sin(_X * rng.uniform(0.08, 0.16) + _Y * rng.uniform(0.15, 0.3) + rng.uniform(0, 6.3))
    ground = ground - np.maximum(drift, 0)[..., None] * np.float32([1.6, 1.1, 0.3])
    img = np.where((_Y >= h)[..., None], ground + rng.normal(0, 2, (64, 64, 1)).astype(np.float32), img)
    _dots(img, rng, int(rng.integers(25, 50)), 0, 64, [(252, 252, 255), (238, 242, 250)], big_p=0.3)
    return img


def _night(rng) -> np.ndarray:
    h = 40 + int(rng.integers(-4, 4))
    sky = _vgrad((6, 9, 34), (30, 40, 88), 0, h)
    img = np.broadcast_to(sky, (64, 64, 3)).copy()
    k = int(rng.integers(15, 35))
    ys, xs = rng.integers(0, h - 3, size=k), rng.integers(0, 64, size=k)
    b = rng.uniform(140, 255, size=k).astype(np.float32)
    img[ys, xs] = np.stack([b, b, b * 0.92 + 15], axis=1)
    mx, my, mr = rng.uniform(6, 58), rng.uniform(5, max(h - 16, 6)), rng.uniform(3.0, 5.0)
    img[_blob(mx, my, mr, mr)] = (240, 234, 196)
    if rng.random() < 0.5:  # crescent
        d = mr * 0.7 * (1 if rng.random() < 0.5 else -1)
        bite = _blob(mx + d, my - mr * 0.2, mr, mr)
        img = np.where(bite[..., None], np.broadcast_to(sky, (64, 64, 3)), img)
    hills = h - 2 * np.abs(np.sin(_X * rng.uniform(0.06, 0.12) + rng.uniform(0, 6.3)))
    ground = np.broadcast_to(_vgrad((30, 40, 46), (12, 16, 22), h, 63), (64, 64, 3))
    img = np.where((_Y >= hills)[..., None], ground + rng.normal(0, 2, (64, 64, 1)).astype(np.float32), img)
    return img


def _plain(rng) -> np.ndarray:
    c = np.asarray(PLAIN_BACKGROUNDS[int(rng.integers(len(PLAIN_BACKGROUNDS)))], np.float32)
    c = c + rng.uniform(-6, 6, size=3).astype(np.float32)
    tilt = rng.uniform(-5, 5)
    img = c + (_Y / 63 - 0.5)[..., None] * tilt + rng.normal(0, 2.5, (64, 64, 1)).astype(np.float32)
    return np.broadcast_to(img, (64, 64, 3)).copy()


SCENE_DRAWERS: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "beach": _beach,
    "grass": _grass,
    "snow": _snow,
    "night": _night,
    "plain": _plain,
}


def render_scene(scene: str, rng: np.random.Generator) -> np.ndarray:
    """An empty scene: float32 [64, 64, 3] in 0..255 (not yet clipped)."""
    return SCENE_DRAWERS[scene](rng)
