"""Object drawing for the demo world (`world`): the `Painter` that draws one object in its own frame, colour
helpers, and one draw function per class (`CLASS_DRAWERS`); individuals build on these."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from .palette import COLOUR_RGB

# --------------------------------------------------------------------------------------------- colours


def shade(rgb, f: float) -> tuple[int, int, int]:
    """`rgb` scaled by f (f < 1 darker; f > 1 lighter, towards white)."""
    if f <= 1:
        return tuple(round(c * f) for c in rgb)  # type: ignore[return-value]
    t = min(f - 1, 1.0)
    return tuple(round(c + (255 - c) * t) for c in rgb)  # type: ignore[return-value]


def outline_of(rgb) -> tuple[int, int, int]:
    """The 1-px outline colour of an object of colour `rgb`: a much darker shade of it."""
    return shade(rgb, 0.38)


# --------------------------------------------------------------------------------------------- painter


class Painter:
    """Draws one object in its own frame: x runs 0..1 across the object's width (facing right; mirrored
    when `mirror`), y runs 0 (top) .. aspect (base, where it rests on the ground), both in units of the
    object's width, so circles stay round. Shapes with part=True join the silhouette (which gets the
    outline); part=False paints detail that is clipped to the final silhouette (spots, stripes, windows).
    Drawn at `ss`x and box-downsampled, so edges are anti-aliased."""

    def __init__(self, width_px: float, aspect: float, mirror: bool = False, ss: int = 2, pad: int = 3):
        self.aspect, self.mirror, self.ss, self.pad = aspect, mirror, ss, pad
        self.s = width_px * ss  # supersampled pixels per unit
        w = math.ceil(width_px) + 2 * pad
        h = math.ceil(width_px * aspect) + 2 * pad
        self.size = (w, h)  # at 1x
        self.mask = Image.new("L", (w * ss, h * ss), 0)
        self.layer = Image.new("RGB", (w * ss, h * ss), (0, 0, 0))
        self._dm = ImageDraw.Draw(self.mask)
        self._dl = ImageDraw.Draw(self.layer)

    # coordinates
    def pt(self, x: float, y: float) -> tuple[float, float]:
        if self.mirror:
            x = 1.0 - x
        o = self.pad * self.ss
        return (o + x * self.s, o + y * self.s)

    def _box(self, x0, y0, x1, y1):
        (a, b), (c, d) = self.pt(x0, y0), self.pt(x1, y1)
        return [min(a, c), min(b, d), max(a, c), max(b, d)]

    def _w(self, width: float) -> int:
        return max(1, round(width * self.s))

    def _targets(self, fill, part: bool):
        yield self._dl, tuple(int(c) for c in fill)
        if part:
            yield self._dm, 255

    # shapes
    def ellipse(self, x0, y0, x1, y1, fill, part: bool = True) -> None:
        box = self._box(x0, y0, x1, y1)
        for d, f in self._targets(fill, part):
            d.ellipse(box, fill=f)

    def circle(self, cx, cy, r, fill, part: bool = True) -> None:
        self.ellipse(cx - r, cy - r, cx + r, cy + r, fill, part)

    def rect(self, x0, y0, x1, y1, fill, part: bool = True, radius: float = 0.0) -> None:
        box = self._box(x0, y0, x1, y1)
        for d, f in self._targets(fill, part):
            if radius > 0:
                d.rounded_rectangle(box, radius=radius * self.s, fill=f)
            else:
                d.rectangle(box, fill=f)

    def polygon(self, pts, fill, part: bool = True) -> None:
        xy = [self.pt(x, y) for x, y in pts]
        for d, f in self._targets(fill, part):
            d.polygon(xy, fill=f)

    def line(self, pts, width: float, fill, part: bool = True) -> None:
        xy = [self.pt(x, y) for x, y in pts]
        w = self._w(width)
        for d, f in self._targets(fill, part):
            d.line(xy, fill=f, width=w, joint="curve")
            for p in (xy[0], xy[-1]):  # round caps
                r = w / 2
                d.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=f)

    def top_half_ellipse(self, x0, y0, x1, y1, fill, part: bool = True) -> None:
        """The upper half of the ellipse in the box (a dome)."""
        box = self._box(x0, y0, x1, y1)
        for d, f in self._targets(fill, part):
            d.chord(box, 180, 360, fill=f)

    def star(self, cx, cy, r, fill, part: bool = False, points: int = 5) -> None:
        pts = []
        for i in range(2 * points):
            a = -math.pi / 2 + i * math.pi / points
            rr = r if i % 2 == 0 else r * 0.42
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        self.polygon(pts, fill, part)

    def finish(self, outline) -> tuple[np.ndarray, np.ndarray]:
        """(rgb float32 [h, w, 3], alpha float32 [h, w] in 0..1) at 1x, outline included."""
        out = Image.new("RGB", self.mask.size, tuple(int(c) for c in outline))
        out.paste(self.layer, mask=self.mask)
        rgb = np.asarray(out.reduce(self.ss), dtype=np.float32)
        # dilate the silhouette by ss supersampled px (1 px at 1x): separable max over a (2 ss + 1) square
        m, k = np.asarray(self.mask), self.ss
        h, w = m.shape
        p = np.pad(m, k)
        rows = p[:, :w]
        for i in range(1, 2 * k + 1):
            rows = np.maximum(rows, p[:, i : i + w])
        ring = rows[:h]
        for i in range(1, 2 * k + 1):
            ring = np.maximum(ring, rows[i : i + h])
        alpha = ring.reshape(h // k, k, w // k, k).mean(axis=(1, 3), dtype=np.float32) / 255.0
        return rgb, alpha


DrawFn = Callable[[Painter, np.random.Generator], object]


def _j(rng: np.random.Generator, s: float) -> float:
    return float(rng.uniform(-s, s))


# --------------------------------------------------------------------------------------------- classes
# Each draws a generic member of the class in the painter's frame and returns its geometry (for individuals
# that add marks on top). `rgb` is the object colour; the rest of the palette is fixed.

DARK = (25, 22, 20)
GLASS = (178, 214, 240)


def draw_dog(p: Painter, rng, rgb, ear=None, eye=DARK, nose=DARK) -> dict:
    ear = ear if ear is not None else shade(rgb, 0.72)
    by0, by1 = 0.30 + _j(rng, 0.03), 0.60 + _j(rng, 0.02)
    bx0, bx1 = 0.13 + _j(rng, 0.02), 0.78 + _j(rng, 0.02)
    tail_tip = (0.015 + _j(rng, 0.01), by0 - 0.05 + _j(rng, 0.05))  # short, pointing back and up
    p.line([(bx0 + 0.06, by0 + 0.07), (bx0 - 0.04, by0 + 0.0), tail_tip], 0.06, rgb)
    leg_w, leg_top, foot = 0.085, by1 - 0.12, p.aspect
    legs = [bx0 + 0.05, bx0 + 0.17, bx1 - 0.22, bx1 - 0.11]
    for i, lx in enumerate(legs):
        lx += _j(rng, 0.015)
        shift = _j(rng, 0.03)
        tone = rgb if i in (0, 2) else shade(rgb, 0.85)  # far legs a bit darker
        p.polygon([(lx, leg_top), (lx + leg_w, leg_top), (lx + leg_w + shift, foot), (lx + shift, foot)], tone)
    p.ellipse(bx0, by0, bx1, by1, rgb)
    hx, hy, hr = 0.80 + _j(rng, 0.02), 0.20 + _j(rng, 0.03), 0.135
    p.polygon([(bx1 - 0.20, by0 + 0.04), (hx - 0.10, hy), (hx + 0.06, hy + 0.05), (bx1 - 0.02, by0 + 0.18)], rgb)
    p.circle(hx, hy, hr, rgb)
    p.ellipse(hx + 0.02, hy + 0.00, min(hx + 0.23, 1.0), hy + 0.12, rgb)  # snout
    p.ellipse(hx - 0.13, hy - 0.10, hx - 0.02, hy + 0.16, ear)  # floppy ear
    p.circle(hx + 0.045, hy - 0.035, 0.028, eye, part=False)
    p.circle(min(hx + 0.21, 0.985), hy + 0.035, 0.032, nose, part=False)
    return {"body": (bx0, by0, bx1, by1), "head": (hx, hy, hr), "neck": (bx1 - 0.10, by0 + 0.05)}


def draw_cat(p: Painter, rng, rgb, ears=None, eye=(60, 150, 60), tail_tip=None) -> dict:
    ears = ears if ears is not None else (rgb, rgb)
    by0, by1 = 0.42 + _j(rng, 0.02), 0.66 + _j(rng, 0.02)
    bx0, bx1 = 0.14 + _j(rng, 0.02), 0.74 + _j(rng, 0.02)
    sway = _j(rng, 0.04)
    tail = [(bx0 + 0.05, by0 + 0.06), (0.05, by0 - 0.06), (0.04 + sway, 0.14), (0.11 + sway, 0.03)]
    p.line(tail, 0.06, rgb)
    if tail_tip is not None:
        p.line(tail[2:], 0.062, tail_tip, part=False)
    leg_w, leg_top, foot = 0.07, by1 - 0.10, p.aspect
    for i, lx in enumerate([bx0 + 0.05, bx0 + 0.15, bx1 - 0.20, bx1 - 0.10]):
        tone = rgb if i in (0, 2) else shade(rgb, 0.85)
        p.rect(lx + _j(rng, 0.01), leg_top, lx + leg_w, foot, tone)
    p.ellipse(bx0, by0, bx1, by1, rgb)
    hx, hy, hr = 0.78 + _j(rng, 0.02), 0.36 + _j(rng, 0.02), 0.15
    ear_h = 0.17 + _j(rng, 0.02)
    p.polygon([(hx - 0.15, hy - 0.03), (hx - 0.11, hy - hr - ear_h + 0.06), (hx - 0.02, hy - hr + 0.02)], ears[0])
    p.polygon([(hx + 0.02, hy - hr + 0.02), (hx + 0.11, hy - hr - ear_h + 0.06), (hx + 0.15, hy - 0.03)], ears[1])
    p.circle(hx, hy, hr, rgb)
    p.circle(hx - 0.055, hy - 0.01, 0.032, eye, part=False)
    p.circle(hx + 0.055, hy - 0.01, 0.032, eye, part=False)
    p.polygon([(hx - 0.025, hy + 0.05), (hx + 0.025, hy + 0.05), (hx, hy + 0.08)], (230, 120, 140), part=False)
    return {"body": (bx0, by0, bx1, by1), "head": (hx, hy, hr), "tail": tail}


def draw_hat(p: Painter, rng, rgb, band=None) -> dict:
    band = band if band is not None else shade(rgb, 0.55)
    a = p.aspect
    brim_h = 0.16 + _j(rng, 0.02)
    p.ellipse(0.0, a - brim_h, 1.0, a, shade(rgb, 0.88))
    cx0, cx1 = 0.22 + _j(rng, 0.03), 0.78 + _j(rng, 0.03)
    top = 0.04 + _j(rng, 0.03)
    style = int(rng.integers(3))
    if style == 0:  # top hat
        p.rect(cx0, top, cx1, a - brim_h * 0.5, rgb)
        p.ellipse(cx0, top - 0.04, cx1, top + 0.06, shade(rgb, 1.12))
    elif style == 1:  # bowler
        p.rect(cx0, top + 0.12, cx1, a - brim_h * 0.5, rgb)
        p.ellipse(cx0, top, cx1, top + 0.34, rgb)
    else:  # soft crown
        p.rect(cx0, top, cx1, a - brim_h * 0.5, rgb, radius=0.12)
    band_y = a - brim_h * 0.5 - 0.13
    p.rect(cx0, band_y, cx1, band_y + 0.09, band, part=False)
    return {"crown": (cx0, top, cx1, a - brim_h * 0.5), "band": (cx0, band_y, cx1, band_y + 0.09)}


def draw_house(p: Painter, rng, rgb, roof=None, door=(95, 58, 32), chimney=False) -> dict:
    roof = roof if roof is not None else shade(rgb, 0.7)
    eave = 0.44 + _j(rng, 0.03)
    peak = 0.02 + _j(rng, 0.02)
    wx0, wx1 = 0.10 + _j(rng, 0.02), 0.90 + _j(rng, 0.02)
    if chimney:
        p.rect(0.66, peak + 0.06, 0.78, eave - 0.1, (125, 55, 45))
    p.rect(wx0, eave - 0.02, wx1, 1.0, rgb)
    p.polygon([(0.0, eave + 0.01), (0.5, peak), (1.0, eave + 0.01)], roof)
    dx = 0.44 + _j(rng, 0.08)
    dw = 0.15
    if door is not None:
        p.rect(dx, 0.68, dx + dw, 1.0, door, part=False)
    frame = shade(rgb, 0.45)
    windows = []
    if dx > 0.34:
        windows.append(wx0 + 0.07)
    if dx + dw < 0.66:
        windows.append(wx1 - 0.22)
    for wx in windows:
        p.rect(wx - 0.01, 0.55, wx + 0.16, 0.72, frame, part=False)
        p.rect(wx + 0.01, 0.57, wx + 0.14, 0.70, GLASS, part=False)
    return {"walls": (wx0, eave, wx1, 1.0), "door": (dx, 0.68, dx + dw, 1.0), "eave": eave, "peak": peak}


def draw_flower(p: Painter, rng, rgb, petals=None, centre=None, stem=(45, 140, 50)) -> dict:
    a = p.aspect
    if centre is None:
        centre = (235, 205, 40) if rgb != COLOUR_RGB["yellow"] else (200, 110, 30)
    if rgb == COLOUR_RGB["green"]:
        stem = (25, 100, 35)
    cx, cy = 0.5 + _j(rng, 0.02), 0.47
    sway = _j(rng, 0.06)
    p.line([(cx, cy), (cx + sway, (cy + a) / 2), (0.5, a - 0.02)], 0.07, stem)
    ly = 0.88 + _j(rng, 0.08)
    side = 1 if rng.random() < 0.5 else -1
    p.polygon(
        [
            (0.5, ly + 0.1),
            (0.5 + side * 0.14, ly - 0.02),
            (0.5 + side * 0.3, ly - 0.06),
            (0.5 + side * 0.18, ly + 0.07),
        ],
        stem,
    )
    n = int(rng.integers(5, 8)) if petals is None else len(petals)
    petals = petals if petals is not None else [rgb] * n
    turn = float(rng.uniform(0, 2 * math.pi))
    d, ra, rb = 0.3, 0.2, 0.12 if n <= 7 else 0.105  # petals: ellipses pointing outwards, gaps between
    angles = [turn + 2 * math.pi * i / n for i in range(n)]
    for ang, colour in zip(angles, petals):
        ca, sa = math.cos(ang), math.sin(ang)
        px, py = cx + d * ca, cy + d * sa
        pts = [
            (px + ra * math.cos(t) * ca - rb * math.sin(t) * sa, py + ra * math.cos(t) * sa + rb * math.sin(t) * ca)
            for t in np.linspace(0, 2 * math.pi, 14, endpoint=False)
        ]
        p.polygon(pts, colour)
    p.circle(cx, cy, 0.15, centre)
    return {"centre": (cx, cy), "petal_angles": angles, "petal_reach": (d, ra, rb)}


def draw_car(p: Painter, rng, rgb, window=GLASS) -> dict:
    a = p.aspect
    wr = 0.12
    wheel_y = a - wr
    body_top = 0.22 + _j(rng, 0.02)
    c0, c1 = 0.20 + _j(rng, 0.03), 0.80 + _j(rng, 0.03)
    roof = 0.02 + _j(rng, 0.02)
    p.polygon([(c0, body_top + 0.01), (c0 + 0.11, roof), (c1 - 0.13, roof), (c1, body_top + 0.01)], rgb)
    p.rect(0.0, body_top, 1.0, wheel_y + 0.02, rgb, radius=0.06)
    mid = (c0 + c1) / 2 + 0.02
    p.polygon(
        [(c0 + 0.06, body_top), (c0 + 0.14, roof + 0.04), (mid - 0.02, roof + 0.04), (mid - 0.02, body_top)],
        window,
        part=False,
    )
    p.polygon(
        [(mid + 0.02, body_top), (mid + 0.02, roof + 0.04), (c1 - 0.15, roof + 0.04), (c1 - 0.06, body_top)],
        window,
        part=False,
    )
    p.rect(0.94, body_top + 0.04, 1.0, body_top + 0.09, (250, 240, 170), part=False)
    p.rect(0.0, body_top + 0.04, 0.04, body_top + 0.09, (170, 20, 20), part=False)
    for wx in (0.22, 0.78):
        p.circle(wx, wheel_y, wr, (30, 30, 32))
        p.circle(wx, wheel_y, 0.05, (165, 165, 170), part=False)
    return {"cabin": (c0, roof, c1, body_top), "body": (0.0, body_top, 1.0, wheel_y + 0.02)}


def draw_ball(p: Painter, rng, rgb, pattern: Callable[[Painter, np.random.Generator], object] | None = None) -> dict:
    """`pattern` paints over the ball's face before the highlight (world 2's marks)."""
    p.circle(0.5, 0.5, 0.5, shade(rgb, 0.72))
    p.circle(0.47, 0.47, 0.45, rgb, part=False)
    if pattern is not None:
        pattern(p, rng)
    hx, hy = 0.32 + _j(rng, 0.04), 0.3 + _j(rng, 0.04)
    p.ellipse(hx - 0.08, hy - 0.06, hx + 0.1, hy + 0.08, shade(rgb, 1.7), part=False)
    return {"centre": (0.5, 0.5), "r": 0.5}


CLASS_DRAWERS: dict[str, Callable[..., dict]] = {
    "dog": draw_dog,
    "cat": draw_cat,
    "hat": draw_hat,
    "house": draw_house,
    "flower": draw_flower,
    "car": draw_car,
    "ball": draw_ball,
}
