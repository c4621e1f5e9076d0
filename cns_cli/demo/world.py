"""A procedural image world: one coloured object (dog, cat, hat, ...) of some size, at some position, in one of
five scenes, drawn at 64x64 with numpy + PIL, and captioned by a small grammar.

Everything is deterministic given a `numpy.random.Generator` (or a seed): the scene background is numpy
(gradients, noise, stars, shells, snowflakes), the object is drawn with `PIL.ImageDraw` at 2x in its own
frame (`Painter`), outlined 1 px in a darker shade of its colour so that it stays visible on every scene
(white on snow, green on grass), box-downsampled and alpha-blended onto the scene with a soft shadow.

    >>> rng = np.random.default_rng(0)
    >>> spec = sample_specs(1, rng)[0]
    >>> image = render(spec, rng)                 # PIL 64x64 RGB
    >>> caption(spec, rng)                         # e.g. "a small red dog at the left on the beach"
    >>> pixels, specs, captions = render_dataset(1000, seed=0)   # uint8 [1000, 64, 64, 3]

Held-out (scene, class, colour) triples (`HELD_OUT`, about 10 %) never appear in training data
(`sample_specs(..., held_out=False)`), so a model can be tested zero-shot on combinations it never saw.
Personal concepts ("rex", "luna", ...) live in `individuals`; `render` draws one when `Spec.individual` is set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64

SCENES = ("beach", "grass", "snow", "night", "plain")
CLASSES = ("dog", "cat", "hat", "house", "flower", "car", "ball")
COLOURS = ("red", "blue", "green", "yellow", "white", "purple")
SIZES = ("small", "big")
POSITIONS = ("left", "center", "right")

# Object colours: saturated and far apart; every object also gets a dark outline (see `outline_of`).
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "blue": (35, 85, 225),
    "green": (40, 185, 70),
    "yellow": (245, 215, 30),
    "white": (246, 246, 246),
    "purple": (145, 55, 195),
}
# Pastel/grey backgrounds for the "plain" scene: none is close to an object colour.
PLAIN_BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (200, 200, 200),
    (150, 150, 155),
    (230, 218, 195),
    (232, 196, 205),
    (200, 192, 228),
    (192, 226, 208),
    (242, 208, 172),
)

SCENE_PHRASES = {
    "beach": "on the beach",
    "grass": "on grass",
    "snow": "in the snow",
    "night": "at night",
    "plain": "on a plain background",
}
POSITION_PHRASES = {"left": "at the left", "center": "in the middle", "right": "at the right"}
CAPTION_PREFIXES = ("a", "a photo of a")

# Every word any caption can contain (sorted): a tokenizer with this vocabulary covers all captions.
VOCABULARY_WORDS: tuple[str, ...] = tuple(
    sorted(
        {
            w
            for text in (
                *CAPTION_PREFIXES,
                *SIZES,
                *COLOURS,
                *CLASSES,
                *SCENE_PHRASES.values(),
                *POSITION_PHRASES.values(),
            )
            for w in text.split()
        }
    )
)

# Object height / width, in the object's own frame (see Painter).
CLASS_ASPECT = {"dog": 0.8, "cat": 0.86, "hat": 0.62, "house": 1.0, "flower": 1.35, "car": 0.56, "ball": 1.0}
SIZE_RANGE = {"big": (0.40, 0.55), "small": (0.22, 0.30)}  # object width as a fraction of the image width
POSITION_X = {"left": 0.25, "center": 0.5, "right": 0.75}  # horizontal centre as a fraction of the width
GROUND_Y = 0.89  # where objects rest (their base), as a fraction of the height; below every scene's horizon


@dataclass(frozen=True)
class Spec:
    """What one image shows. `individual` names a personal concept from `individuals.INDIVIDUALS`; its
    `cls` and `colour` must then be that individual's."""

    scene: str
    cls: str
    colour: str
    size: str = "big"
    position: str = "center"
    individual: str | None = None


# --------------------------------------------------------------------------------------------- held out


def _held_out_rule(scene: str, cls: str, colour: str) -> bool:
    """Fixed rule: 21 of the 210 triples (10 %). Every (scene, class), (class, colour) and (scene, colour)
    pair has at most one held-out triple, so every pair (and every single factor) is still seen in
    training with other values of the third factor."""
    return (2 * SCENES.index(scene) + CLASSES.index(cls) + 3 * COLOURS.index(colour)) % 10 == 0


HELD_OUT: frozenset[tuple[str, str, str]] = frozenset(
    (s, c, k) for s in SCENES for c in CLASSES for k in COLOURS if _held_out_rule(s, c, k)
)
_HELD_OUT_SORTED = sorted(HELD_OUT)


def is_held_out(spec: Spec) -> bool:
    """Whether the spec's (scene, class, colour) is one of the held-out (zero-shot) combinations."""
    return (spec.scene, spec.cls, spec.colour) in HELD_OUT


def sample_specs(n: int, rng: np.random.Generator, held_out: bool | None = False) -> list[Spec]:
    """`n` specs, uniform over the factors. held_out=False: only training combinations; True: only
    held-out ones; None: any combination."""
    specs: list[Spec] = []
    while len(specs) < n:
        if held_out is True:
            scene, cls, colour = _HELD_OUT_SORTED[int(rng.integers(len(_HELD_OUT_SORTED)))]
        else:
            scene = SCENES[int(rng.integers(len(SCENES)))]
            cls = CLASSES[int(rng.integers(len(CLASSES)))]
            colour = COLOURS[int(rng.integers(len(COLOURS)))]
        size = SIZES[int(rng.integers(len(SIZES)))]
        position = POSITIONS[int(rng.integers(len(POSITIONS)))]
        spec = Spec(scene, cls, colour, size, position)
        if held_out is False and is_held_out(spec):
            continue
        specs.append(spec)
    return specs


# --------------------------------------------------------------------------------------------- captions


def caption(spec: Spec, rng: np.random.Generator | None = None) -> str:
    """A caption from a small grammar. With `rng` None the full form
    "a {size} {colour} {cls} {position phrase} {scene phrase}", e.g. "a big red dog in the middle on the
    beach"; with an rng the size and position words are optional (each kept with p=0.5), the position may
    come after the scene, and one in five starts "a photo of a". Lower-case ASCII words from
    VOCABULARY_WORDS only, no punctuation. An individual is captioned as its class and colour word."""
    if rng is None:
        with_size, with_pos, pos_last, prefix = True, True, False, CAPTION_PREFIXES[0]
    else:
        u = rng.random(4)  # always four draws, so the rng advances the same way for every spec
        with_size, with_pos, pos_last = bool(u[0] < 0.5), bool(u[1] < 0.5), bool(u[2] < 0.5)
        prefix = CAPTION_PREFIXES[1] if u[3] < 0.2 else CAPTION_PREFIXES[0]
    words = [prefix] + ([spec.size] if with_size else []) + [spec.colour, spec.cls]
    scene, pos = SCENE_PHRASES[spec.scene], POSITION_PHRASES[spec.position]
    if not with_pos:
        words.append(scene)
    elif pos_last:
        words += [scene, pos]
    else:
        words += [pos, scene]
    return " ".join(words)


# --------------------------------------------------------------------------------------------- colours


def nearest_colour(rgb: tuple[int, int, int]) -> str:
    """The COLOURS word whose RGB is nearest (Euclidean) to `rgb`."""
    v = np.asarray(rgb, dtype=np.float64)
    return min(COLOURS, key=lambda k: float(np.sum((np.asarray(COLOUR_RGB[k], dtype=np.float64) - v) ** 2)))


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
    for i, colour in enumerate(petals):
        ang = turn + 2 * math.pi * i / n
        ca, sa = math.cos(ang), math.sin(ang)
        px, py = cx + d * ca, cy + d * sa
        pts = [
            (px + ra * math.cos(t) * ca - rb * math.sin(t) * sa, py + ra * math.cos(t) * sa + rb * math.sin(t) * ca)
            for t in np.linspace(0, 2 * math.pi, 14, endpoint=False)
        ]
        p.polygon(pts, colour)
    p.circle(cx, cy, 0.15, centre)
    return {"centre": (cx, cy)}


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


def draw_ball(p: Painter, rng, rgb) -> dict:
    p.circle(0.5, 0.5, 0.5, shade(rgb, 0.72))
    p.circle(0.47, 0.47, 0.45, rgb, part=False)
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


# --------------------------------------------------------------------------------------------- render


def _check(spec: Spec) -> None:
    for value, allowed, what in (
        (spec.scene, SCENES, "scene"),
        (spec.cls, CLASSES, "class"),
        (spec.colour, COLOURS, "colour"),
        (spec.size, SIZES, "size"),
        (spec.position, POSITIONS, "position"),
    ):
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")


def _object(spec: Spec) -> tuple[DrawFn, float]:
    """The draw function and aspect for the spec's object (generic or individual)."""
    if spec.individual is None:
        drawer, rgb = CLASS_DRAWERS[spec.cls], COLOUR_RGB[spec.colour]
        return (lambda p, rng: drawer(p, rng, rgb)), CLASS_ASPECT[spec.cls]
    from .individuals import INDIVIDUALS  # individuals import this module

    ind = INDIVIDUALS.get(spec.individual)
    if ind is None:
        raise ValueError(f"unknown individual {spec.individual!r}; expected one of {', '.join(INDIVIDUALS)}")
    if (spec.cls, spec.colour) != (ind.cls, ind.colour):
        raise ValueError(
            f"individual {ind.name!r} is a {ind.colour} {ind.cls}, but the spec says {spec.colour} {spec.cls}"
        )
    return ind.draw, ind.aspect


def render_array(spec: Spec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 [64, 64, 3], object coverage float32 [64, 64] in 0..1, outline included)."""
    _check(spec)
    draw, aspect = _object(spec)
    img = render_scene(spec.scene, rng)
    lo, hi = SIZE_RANGE[spec.size]
    w = float(rng.uniform(lo, hi)) * IMAGE_SIZE
    h = w * aspect
    cx = POSITION_X[spec.position] * IMAGE_SIZE + _j(rng, 3.0)
    cx = min(max(cx, w / 2 + 1), IMAGE_SIZE - 1 - w / 2)
    base = GROUND_Y * IMAGE_SIZE + _j(rng, 1.5)
    mirror = bool(rng.random() < 0.5)
    painter = Painter(w, aspect, mirror)
    draw(painter, rng)
    rgb, alpha = painter.finish(outline_of(_main_rgb(spec)))
    # soft contact shadow on the ground
    shadow = _blob(cx, base + 0.5, w * 0.46, max(1.3, w * 0.06))
    img[shadow] *= 0.72
    ox = round(cx - w / 2) - painter.pad
    oy = round(base - h) - painter.pad
    cover = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    ah, aw = alpha.shape
    x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + aw, IMAGE_SIZE), min(oy + ah, IMAGE_SIZE)
    a = alpha[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    sub = img[y0:y1, x0:x1]
    sub *= 1 - a[..., None]
    sub += rgb[y0 - oy : y1 - oy, x0 - ox : x1 - ox] * a[..., None]
    cover[y0:y1, x0:x1] = a
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), cover


def _main_rgb(spec: Spec):
    if spec.individual is None:
        return COLOUR_RGB[spec.colour]
    from .individuals import INDIVIDUALS

    return INDIVIDUALS[spec.individual].rgb


def render(spec: Spec, rng: np.random.Generator) -> Image.Image:
    """The spec as a 64x64 RGB image; pose, size and position jitter and the scene come from `rng`.
    Raises ValueError for an unknown factor or an individual whose class/colour the spec contradicts."""
    return Image.fromarray(render_array(spec, rng)[0], "RGB")


def render_dataset(n: int, seed: int, held_out: bool | None = False) -> tuple[np.ndarray, list[Spec], list[str]]:
    """`n` random generic images (uint8 [n, 64, 64, 3]), their specs and captions (see `sample_specs` for
    `held_out`). Item i depends only on (seed, i), so a longer dataset starts with the shorter one."""
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    specs: list[Spec] = []
    captions: list[str] = []
    for i in range(n):
        rng = np.random.default_rng((seed, i))
        spec = sample_specs(1, rng, held_out)[0]
        images[i] = render_array(spec, rng)[0]
        specs.append(spec)
        captions.append(caption(spec, rng))
    return images, specs, captions
