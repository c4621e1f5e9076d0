"""Marks: world 2's attribute words that the captions use and the renderer draws — patterns over an object's
body (spots, stripes, checks, a star) and parts in their own colour (a collar, an ear, a tail tip, a band, a door,
a roof, a centre, a cabin, a roundel).

A mark is a (kind, colour) pair; a `Spec` holds its marks as a tuple in `MARK_KINDS` order, one of each kind at
most, at most one pattern, and never in the object's own colour. Each class allows the kinds it has a place for
(`CLASS_MARKS`: a dog has no tail tip worth drawing at 64 px, a ball no parts). `phrase` gives a mark's words
("white spots", "a red collar"), `marked_drawer` draws a class member with its marks: the class's own drawing
(`painter.CLASS_DRAWERS`) with the parts' colours passed in, then the patterns over its body, then the parts that
sit on top (collar, roundel). With no marks it draws exactly what world 1 draws.
"""

from __future__ import annotations

import math

import numpy as np

from .painter import CLASS_DRAWERS, DrawFn, Painter, _j
from .palette import COLOUR_RGB

PATTERNS = ("spots", "stripes", "checks", "star")
PARTS = ("collar", "ear", "tail tip", "band", "door", "roof", "centre", "cabin", "roundel")
MARK_KINDS = PATTERNS + PARTS  # the order of a Spec's marks and of a caption's canonical form
CLASS_MARKS: dict[str, tuple[str, ...]] = {
    "dog": ("spots", "stripes", "collar", "ear"),
    "cat": ("spots", "stripes", "collar", "ear", "tail tip"),
    "hat": ("spots", "stripes", "checks", "star", "band"),
    "house": ("door", "roof"),
    "flower": ("spots", "stripes", "centre"),
    "car": ("stripes", "checks", "cabin", "roundel"),
    "ball": ("spots", "stripes", "checks", "star"),
}
MAX_MARKS = 2

Mark = tuple[str, str]  # (kind, colour)


def article(word: str) -> str:
    """ "an" before a vowel ("an orange cat"), else "a"."""
    return "an" if word[0] in "aeiou" else "a"


def phrase(mark: Mark) -> str:
    """A mark's words: "white spots", "a white star", "an orange collar", "a black tail tip"."""
    kind, colour = mark
    if kind in PATTERNS and kind != "star":
        return f"{colour} {kind}"
    return f"{article(colour)} {colour} {kind}"


def problem(cls: str, colour: str, marks: tuple[Mark, ...], mark_colours: tuple[str, ...]) -> str | None:
    """Why `marks` cannot go on a `colour` `cls`, or None when they can."""
    allowed = CLASS_MARKS.get(cls, ())
    kinds = [k for k, _ in marks]
    for kind, c in marks:
        if kind not in allowed:
            return f"a {cls} has no mark {kind!r}; it can have {', '.join(allowed)}"
        if c not in mark_colours:
            return f"unknown mark colour {c!r}; expected one of {', '.join(mark_colours)}"
        if c == colour:
            return f"a {colour} {cls} cannot have {phrase((kind, c))} (a mark's colour differs from the object's)"
    if kinds != sorted(set(kinds), key=MARK_KINDS.index):
        return f"marks must be distinct kinds in the order {', '.join(MARK_KINDS)}; got {', '.join(kinds)}"
    if len(marks) > MAX_MARKS:
        return f"at most {MAX_MARKS} marks; got {len(marks)}"
    if sum(k in PATTERNS for k in kinds) > 1:
        return f"at most one pattern ({', '.join(PATTERNS)}); got {', '.join(kinds)}"
    return None


def sample_marks(cls: str, colour: str, rng: np.random.Generator, mark_colours: tuple[str, ...],
                 max_marks: int = MAX_MARKS) -> tuple[Mark, ...]:
    """Random marks for a `colour` `cls`: none (1 in 4), one (2 in 5) or two (the rest), capped at `max_marks`;
    kinds uniform among those the class allows (one pattern at most), colours uniform among the others."""
    u = float(rng.random())
    k = min(0 if u < 0.25 else 1 if u < 0.65 else 2, max_marks)
    kinds: list[str] = []
    for i in rng.permutation(len(CLASS_MARKS[cls])):
        kind = CLASS_MARKS[cls][int(i)]
        if len(kinds) < k and not (kind in PATTERNS and any(x in PATTERNS for x in kinds)):
            kinds.append(kind)
    others = [c for c in mark_colours if c != colour]
    picks = [others[int(j)] for j in rng.integers(len(others), size=len(kinds))]
    return tuple(sorted(zip(kinds, picks), key=lambda m: MARK_KINDS.index(m[0])))


# --------------------------------------------------------------------------------------------- drawing


def _body_spots(p: Painter, rng, box, rgb) -> None:
    """Three or four round spots over the upper body (dogs and cats)."""
    bx0, by0, bx1, by1 = box
    h = by1 - by0
    for sx, sy in [(0.2, 0.3), (0.45, 0.45), (0.68, 0.28), (0.33, 0.62)][: int(rng.integers(3, 5))]:
        r = 0.055 + _j(rng, 0.01)
        x, y = bx0 + (bx1 - bx0) * (sx + _j(rng, 0.04)), by0 + h * sy
        p.ellipse(x - r * 1.2, y - r, x + r * 1.2, y + r, rgb, part=False)


def _body_stripes(p: Painter, box, rgb, n: int = 4) -> None:
    """`n` slanted stripes down the back (dogs and cats), wide enough to show on a small object (≈ 1 px)."""
    bx0, by0, bx1, by1 = box
    for i in range(n):
        x = bx0 + 0.08 + i * (bx1 - bx0 - 0.14) / (n - 1)
        p.line([(x - 0.02, by0 - 0.01), (x + 0.025, by0 + 0.65 * (by1 - by0))], 0.075, rgb, part=False)


def _checks(p: Painter, x0, y0, x1, y1, cell, rgb, rows: int | None = None) -> None:
    """Every other square of a `cell`-sized grid over the box in `rgb` (the others keep the object's colour)."""
    nr = rows or max(1, round((y1 - y0) / cell))
    nc = max(1, math.ceil((x1 - x0) / cell))
    ch = (y1 - y0) / nr
    for r in range(nr):
        for c in range(nc):
            if (r + c) % 2 == 0:
                p.rect(x0 + c * cell, y0 + r * ch, min(x0 + (c + 1) * cell, x1), y0 + (r + 1) * ch, rgb, part=False)


def _dog(p, rng, rgb, m) -> None:
    g = CLASS_DRAWERS["dog"](p, rng, rgb, ear=m.get("ear"))
    if "spots" in m:
        _body_spots(p, rng, g["body"], m["spots"])
    if "stripes" in m:
        _body_stripes(p, g["body"], m["stripes"])
    if "collar" in m:
        hx, hy, _ = g["head"]
        p.line([(hx - 0.15, hy + 0.05), (hx - 0.03, hy + 0.17)], 0.1, m["collar"], part=False)


def _cat(p, rng, rgb, m) -> None:
    ears = (rgb, m["ear"]) if "ear" in m else None
    g = CLASS_DRAWERS["cat"](p, rng, rgb, ears=ears, tail_tip=m.get("tail tip"))
    if "spots" in m:
        _body_spots(p, rng, g["body"], m["spots"])
    if "stripes" in m:
        _body_stripes(p, g["body"], m["stripes"])
        (x0, y0), (x1, y1) = g["tail"][1], g["tail"][2]
        for t in (0.3, 0.7):  # tail rings
            x, y = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
            p.line([(x - 0.05, y), (x + 0.05, y - 0.01)], 0.05, m["stripes"], part=False)
    if "collar" in m:
        hx, hy, _ = g["head"]
        p.line([(hx - 0.16, hy + 0.03), (hx - 0.06, hy + 0.15)], 0.095, m["collar"], part=False)


def _hat(p, rng, rgb, m) -> None:
    g = CLASS_DRAWERS["hat"](p, rng, rgb, band=m.get("band"))
    cx0, top, cx1, _ = g["crown"]
    _, band_y, _, _ = g["band"]
    y0 = top + 0.03
    if "star" in m:
        r = min(0.16, 0.5 * (band_y - y0))
        p.star((cx0 + cx1) / 2, (y0 + band_y) / 2, r, m["star"])
    if "stripes" in m:
        for i in range(4):
            x = cx0 + (cx1 - cx0) * (i + 0.5) / 4
            p.rect(x - 0.022, top - 0.05, x + 0.022, band_y, m["stripes"], part=False)
    if "checks" in m:  # two rows above the band, so the crown stays mostly in the hat's colour
        _checks(p, cx0, band_y - 0.18, cx1, band_y, 0.09, m["checks"], rows=2)
    if "spots" in m:
        for i, (sx, sy) in enumerate([(0.2, 0.3), (0.5, 0.6), (0.8, 0.3), (0.35, 0.85), (0.65, 0.85)]):
            x, y = cx0 + (cx1 - cx0) * sx + _j(rng, 0.02), y0 + (band_y - y0) * sy
            p.circle(x, y, 0.045, m["spots"], part=False)


def _house(p, rng, rgb, m) -> None:
    door = m.get("door", (95, 58, 32))  # world 1's door colour when no door is named
    CLASS_DRAWERS["house"](p, rng, rgb, roof=m.get("roof"), door=door)


def _flower(p, rng, rgb, m) -> None:
    g = CLASS_DRAWERS["flower"](p, rng, rgb, centre=m.get("centre"))
    cx, cy = g["centre"]
    d, ra, _ = g["petal_reach"]
    for ang in g["petal_angles"]:
        ca, sa = math.cos(ang), math.sin(ang)
        if "stripes" in m:  # a stripe along each petal
            p.line([(cx + (d - 0.6 * ra) * ca, cy + (d - 0.6 * ra) * sa), (cx + (d + 0.75 * ra) * ca,
                                                                            cy + (d + 0.75 * ra) * sa)],
                   0.05, m["stripes"], part=False)
        if "spots" in m:  # a spot on each petal
            p.circle(cx + (d + 0.1 * ra) * ca, cy + (d + 0.1 * ra) * sa, 0.055, m["spots"], part=False)


def _car(p, rng, rgb, m) -> None:
    kw = {"window": m["cabin"]} if "cabin" in m else {}
    g = CLASS_DRAWERS["car"](p, rng, rgb, **kw)
    _, body_top, _, body_bottom = g["body"]
    mid = body_top + 0.45 * (body_bottom - body_top)
    if "stripes" in m:  # a racing stripe along the side
        p.rect(0.0, mid - 0.025, 1.0, mid + 0.025, m["stripes"], part=False)
    if "checks" in m:  # a chequered band along the side, two rows
        _checks(p, 0.0, mid - 0.045, 1.0, mid + 0.045, 0.06, m["checks"], rows=2)
    if "roundel" in m:  # a racing roundel on the door
        p.circle(0.5, mid, 0.1, m["roundel"], part=False)


def _ball_pattern(m: dict):
    def pattern(p: Painter, rng) -> None:
        if "spots" in m:
            turn = rng.uniform(0, 2 * math.pi)
            p.circle(0.48 + _j(rng, 0.05), 0.48 + _j(rng, 0.05), 0.1, m["spots"], part=False)
            for i in range(5):
                a = turn + i * 2 * math.pi / 5
                p.circle(0.48 + 0.3 * math.cos(a), 0.48 + 0.3 * math.sin(a), 0.085, m["spots"], part=False)
        if "stripes" in m:
            tilt = 0.2 + _j(rng, 0.1)
            for off in (-0.3, 0.0, 0.3):
                c = 0.5 + off
                p.polygon([(c - 0.042 - tilt, 0.0), (c + 0.042 - tilt, 0.0), (c + 0.042 + tilt, 1.0),
                           (c - 0.042 + tilt, 1.0)], m["stripes"], part=False)
        if "checks" in m:  # a chequered band round the middle, so most of the face keeps the ball's colour
            _checks(p, 0.0, 0.32, 1.0, 0.64, 0.16, m["checks"], rows=2)
        if "star" in m:
            p.star(0.48, 0.5, 0.32, m["star"])

    return pattern


def _ball(p, rng, rgb, m) -> None:
    CLASS_DRAWERS["ball"](p, rng, rgb, pattern=_ball_pattern(m) if m else None)


_MARKED = {"dog": _dog, "cat": _cat, "hat": _hat, "house": _house, "flower": _flower, "car": _car, "ball": _ball}


def marked_drawer(cls: str, rgb, marks: tuple[Mark, ...]) -> DrawFn:
    """The draw function of a `rgb` `cls` with `marks` (colour words, looked up in `COLOUR_RGB` when drawn)."""
    if not marks:
        drawer = CLASS_DRAWERS[cls]
        return lambda p, rng: drawer(p, rng, rgb)
    draw = _MARKED[cls]
    return lambda p, rng: draw(p, rng, rgb, {kind: COLOUR_RGB[c] for kind, c in marks})

